/*
 * A public WebSocket session. Owns its outbound queue (frames with LWS_PRE
 * headroom), its subscription and its counters. Flow control: while the
 * queued bytes exceed the configured budget the subscription is paused, so
 * the broker keeps the data; it resumes below half the budget. Frames are
 * written one per WRITEABLE callback, as lws requires.
 */
#include "gateway/session.h"
#include "ess.h"
#include "gateway/gateway.h"
#include "gateway/selector.h"
#include "http/http.h"
#include "metrics/metrics.h"
#include "mq/classic.h"
#include "mq/stream_client.h"
#include "proto/protobuf.h"
#include "script/hooks.h"
#include "util/log.h"
#include "util/utf8.h"

#include <libwebsockets.h>
#include <string.h>
#include <sys/time.h>

typedef struct frame_s {
    struct frame_s *next;
    size_t len;
    uint64_t offset;
    int binary;
    int cls; /* size class of the pool it returns to, or -1 (malloc'd) */
    uint8_t data[]; /* LWS_PRE bytes of headroom, then the payload */
} frame_t;

/* Frames are allocated per message and freed in batches after a send:
 * glibc's malloc spent 9% of a replay's CPU on them. Freed frames of up
 * to 4 KiB go to a per-size-class free list (LIFO, so cache-warm), at most
 * POOL_MAX_BYTES in all; larger ones use malloc. */
#define POOL_CLASSES 4 /* payload room 512, 1024, 2048, 4096 */
#define POOL_MAX_BYTES (4u << 20)
static frame_t *pool[POOL_CLASSES];
static size_t pool_bytes;

static size_t class_room(int cls)
{
    return (size_t)512 << cls;
}

static frame_t *frame_alloc(size_t len)
{
    int cls = 0;
    while (cls < POOL_CLASSES && len > class_room(cls))
        cls++;
    frame_t *f;
    if (cls == POOL_CLASSES) {
        f = ess_xmalloc(sizeof *f + LWS_PRE + len);
        f->cls = -1;
    } else if (pool[cls] != NULL) {
        f = pool[cls];
        pool[cls] = f->next;
        pool_bytes -= class_room(cls);
    } else {
        f = ess_xmalloc(sizeof *f + LWS_PRE + class_room(cls));
        f->cls = cls;
    }
    return f;
}

static void frame_free(frame_t *f)
{
    if (f->cls < 0 || pool_bytes + class_room(f->cls) > POOL_MAX_BYTES) {
        free(f);
        return;
    }
    f->next = pool[f->cls];
    pool[f->cls] = f;
    pool_bytes += class_room(f->cls);
}

struct ess_session_s {
    ess_app_t *app;
    struct lws *wsi;
    int attached;

    int64_t es_id;
    char uuid[ESS_UUID_LEN + 1];
    char *routing_key;
    ess_hook_es_t hook_es;
    ess_selector_t sel;

    ess_stream_sub_t *sub;
    ess_classic_sub_t *csub; /* Version 1 (classic) mode instead of sub */
    int classic;
    int paused;

    frame_t *head, *tail;
    size_t queued_bytes;
    uint64_t last_progress_ms;

    int delivered; /* at least one frame written */
    uint64_t last_offset;
    uint64_t msgs_in, msgs_out, bytes_out;

    int closing;
    int close_sent; /* the close frame is handed to lws */
    int flush;
    int close_code;
    char close_reason[124];
};

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int64_t ess_session_es_id(const ess_session_t *s)
{
    return s->es_id;
}

static void drop_queue(ess_session_t *s)
{
    frame_t *f = s->head;
    while (f) {
        frame_t *next = f->next;
        frame_free(f);
        f = next;
    }
    s->head = s->tail = NULL;
    s->queued_bytes = 0;
}

static void unsubscribe(ess_session_t *s)
{
    if (s->sub) {
        ess_stream_unsubscribe(s->sub);
        s->sub = NULL;
        ess_metrics.subscriptions--;
    }
    if (s->csub) {
        ess_classic_unsubscribe(s->csub);
        s->csub = NULL;
        ess_metrics.subscriptions--;
    }
}

static void log_stats(ess_session_t *s, const char *when)
{
    ess_log_info("session %s (es %lld): %s: received %llu, sent %llu, bytes %llu%s", s->uuid,
                 (long long)s->es_id, when, (unsigned long long)s->msgs_in,
                 (unsigned long long)s->msgs_out, (unsigned long long)s->bytes_out,
                 s->delivered ? "" : ", nothing delivered");
}

void ess_session_close(ess_session_t *s, int code, const char *reason, int flush)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->flush = flush;
    s->close_code = code;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason);
    unsubscribe(s);
    if (!flush)
        drop_queue(s);
    if (s->attached) {
        ess_gateway_detach(s->app, s);
        s->attached = 0;
    }
    char label[32];
    snprintf(label, sizeof label, "code=\"%d\"", code);
    ess_metrics_add("ess_websocket_closes_total", label, 1);
    lws_callback_on_writable(s->wsi);
}

static void emit_frame(void *ud, const uint8_t *data, size_t len)
{
    ess_session_t *s = ud;
    frame_t *f = frame_alloc(len);
    f->next = NULL;
    f->len = len;
    f->offset = s->last_offset; /* set by on_message just before */
    f->binary = !ess_utf8_valid(data, len);
    memcpy(f->data + LWS_PRE, data, len);
    if (s->tail)
        s->tail->next = f;
    else
        s->head = f;
    s->tail = f;
    if (s->queued_bytes == 0)
        s->last_progress_ms = uv_now(s->app->loop);
    s->queued_bytes += len;
}

/* Per-message bookkeeping for both modes: progress stats, and withholding
 * broker credit (stream) or acks (classic) once the budget is full. */
static void after_message(ess_session_t *s)
{
    if (s->app->cfg->message_stats_interval > 0 &&
        s->msgs_in % (uint64_t)s->app->cfg->message_stats_interval == 0)
        log_stats(s, "progress");
    if (s->paused || s->queued_bytes < (size_t)s->app->cfg->outbound_budget_bytes)
        return;
    if (s->sub) {
        s->paused = 1;
        ess_metrics.credit_stalls++;
        ess_stream_sub_pause(s->sub);
    } else if (s->csub) {
        s->paused = 1;
        ess_metrics.credit_stalls++;
        ess_classic_sub_pause(s->csub);
    }
}

static void on_message(ess_stream_sub_t *sub, const ess_stream_msg_t *msg, void *ud)
{
    ess_session_t *s = ud;
    (void)sub;
    s->msgs_in++;
    ess_metrics.msgs_in++;
    if (msg->len == 6 && memcmp(msg->body, "POISON", 6) == 0) {
        ess_session_close(s, 1000, "The stream has been deleted", 1);
        return;
    }
    const uint8_t *body = msg->body;
    size_t len = msg->len;
    uint8_t *joined = NULL;
    ess_buf_t pb = {0};
    const char *pt = NULL;
    size_t ptl = 0;
    if (msg->amqp && msg->amqp->n_data > 1) {
        /* Several data sections make one body: nothing is dropped. */
        joined = ess_amqp10_body_copy(msg->record, msg->record_len, msg->amqp, &len);
        if (joined)
            body = joined;
        else
            len = msg->len;
    }
    const uint8_t *raw = body;
    size_t raw_len = len;
    /* Binary protobuf of a known type becomes its one-line text form. */
    if (msg->amqp && ess_protobuf_type_of(msg->amqp, &pt, &ptl) == ESS_OK &&
        ess_protobuf_to_text(pt, ptl, body, len, &pb) == ESS_OK) {
        body = (const uint8_t *)pb.data;
        len = pb.len;
    } else {
        pt = NULL;
    }
    ess_hook_msg_t hm = {
        .body = body,
        .len = len,
        .offset = msg->offset,
        .timestamp_ms = msg->timestamp_ms,
        .is_text = ess_utf8_valid(body, len),
        .app_props = msg->amqp ? msg->amqp->app_props : NULL,
        .app_props_len = msg->amqp ? msg->amqp->app_props_len : 0,
        .raw = pt ? raw : NULL,
        .raw_len = pt ? raw_len : 0,
        .protobuf_type = pt,
        .protobuf_type_len = ptl,
    };
    uint64_t prev = s->last_offset;
    s->last_offset = msg->offset; /* read by emit_frame */
    frame_t *tail = s->tail;
    ess_hooks_enrich(s->app->vm, &s->hook_es, &hm, emit_frame, s);
    s->last_offset = prev;
    ess_buf_free(&pb);
    free(joined);
    /* A non-empty queue always has a WRITEABLE pending (requested here or
     * by ess_session_writeable when it leaves frames), so ask lws only when
     * this message made the queue non-empty: one poll change per batch,
     * not per message. */
    if (tail == NULL && s->tail != NULL)
        lws_callback_on_writable(s->wsi);
    after_message(s);
}

static void on_subscribed(ess_stream_sub_t *sub, int status, void *ud)
{
    ess_session_t *s = ud;
    if (status == ESS_OK)
        return;
    s->sub = NULL; /* freed by the client after this callback */
    ess_metrics.subscriptions--;
    (void)sub;
    if (status == ESS_ENOTFOUND)
        ess_session_close(s, 1013, "the event stream cannot be found", 0);
    else
        ess_session_close(s, 1013, "the broker is unavailable; retry later", 0);
}

static void on_ended(ess_stream_sub_t *sub, int reason, void *ud)
{
    ess_session_t *s = ud;
    (void)sub;
    s->sub = NULL;
    ess_metrics.subscriptions--;
    if (reason == ESS_ENOTFOUND)
        ess_session_close(s, 1000, "The stream has been deleted", 1);
    else
        ess_session_close(s, 1011, "the broker subscription ended", 1);
}

/* ---- Version 1 (classic queue) mode: begin ----
 * Messages reach the client raw (SPEC.md, issue 4): a classic queue has
 * no offsets or timestamps, so the enrich hook does not run and the frame
 * is the body unchanged. POISON closes as in stream mode. */
static void classic_on_message(ess_classic_sub_t *sub, const ess_classic_msg_t *msg, void *ud)
{
    ess_session_t *s = ud;
    (void)sub;
    s->msgs_in++;
    ess_metrics.msgs_in++;
    if (msg->len == 6 && memcmp(msg->body, "POISON", 6) == 0) {
        ess_session_close(s, 1000, "The stream has been deleted", 1);
        return;
    }
    emit_frame(s, msg->body, msg->len);
    lws_callback_on_writable(s->wsi);
    after_message(s);
}

static void classic_on_subscribed(ess_classic_sub_t *sub, int status, void *ud)
{
    ess_session_t *s = ud;
    (void)sub;
    if (status == ESS_OK)
        return;
    s->csub = NULL; /* freed by the client after this callback */
    ess_metrics.subscriptions--;
    if (status == ESS_ENOTFOUND)
        ess_session_close(s, 1013, "the event stream cannot be found", 0);
    else
        ess_session_close(s, 1013, "the broker is unavailable; retry later", 0);
}

static void classic_on_ended(ess_classic_sub_t *sub, int status, void *ud)
{
    ess_session_t *s = ud;
    (void)sub;
    (void)status;
    s->csub = NULL;
    ess_metrics.subscriptions--;
    ess_session_close(s, 1011, "the broker subscription ended", 1);
}

static void open_classic(ess_session_t *s, const ess_route_t *route)
{
    static const ess_classic_sub_cbs_t cbs = {classic_on_subscribed, classic_on_message,
                                              classic_on_ended};
    s->classic = 1;
    if (s->sel.kind != ESS_SEL_NONE)
        ess_log_info("session %s: classic (version 1) mode has no history: start selector ignored",
                     s->uuid);
    ess_classic_t *client = ess_gateway_classic_client(s->app);
    if (client == NULL || ess_classic_subscribe(client, route->exchange, route->routing_key, &cbs,
                                                s, &s->csub) != ESS_OK) {
        s->csub = NULL;
        ess_session_close(s, 1013, "the broker is unavailable; retry later", 0);
        return;
    }
    ess_metrics.subscriptions++;
}
/* ---- Version 1 (classic queue) mode: end ---- */

/* The value of a query parameter, or NULL. lws gives "name=value" fragments. */
static const char *query_arg(struct lws *wsi, const char *name, char *buf, int len)
{
    size_t nl = strlen(name);
    for (int i = 0; i < 32; i++) {
        int n = lws_hdr_copy_fragment(wsi, buf, len, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            return NULL;
        if ((size_t)n >= nl + 1 && memcmp(buf, name, nl) == 0 && buf[nl] == '=')
            return buf + nl + 1;
    }
    return NULL;
}

static const char *header(struct lws *wsi, const char *name, char *buf, int len)
{
    char lname[64];
    size_t n = strlen(name);
    for (size_t i = 0; i < n; i++)
        lname[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    lname[n] = ':';
    lname[n + 1] = '\0';
    int hl = lws_hdr_custom_length(wsi, lname, (int)n + 1);
    if (hl < 0)
        return NULL;
    if (hl >= len || lws_hdr_custom_copy(wsi, buf, len, lname, (int)n + 1) < 0)
        return "";
    return buf;
}

/* Query values arrive percent-encoded only if lws left them so; lws decodes
 * URI args in place, so "2025-04-30T13%3A33" arrives as "2025-04-30T13:33". */
static void open_session(ess_session_t *s)
{
    ess_app_t *app = s->app;
    char path[512];
    if (lws_hdr_copy(s->wsi, path, sizeof path, WSI_TOKEN_GET_URI) < 0)
        path[0] = '\0';
    static const char prefix[] = "/event-stream/";
    const char *uuid = strncmp(path, prefix, sizeof prefix - 1) == 0 ? path + sizeof prefix - 1 : "";
    size_t ulen = strcspn(uuid, "/?");

    if (app->draining) {
        ess_session_close(s, 1001, "the server is shutting down", 0);
        return;
    }
    if (ess_metrics.ws_open > app->cfg->max_connections) {
        ess_session_close(s, 1013, "too many connections; retry later", 0);
        return;
    }

    char bufs[ESS_SEL_SOURCES][300];
    const char *values[ESS_SEL_SOURCES];
    for (int i = 0; i < 3; i++)
        values[i] = header(s->wsi, ess_selector_names[i], bufs[i], sizeof bufs[i]);
    for (int i = 3; i < 6; i++)
        values[i] = query_arg(s->wsi, ess_selector_names[i], bufs[i], sizeof bufs[i]);
    char reason[124];
    if (ess_selector_parse(values, wall_ms(), &s->sel, reason, sizeof reason) != ESS_OK) {
        ess_session_close(s, 1002, reason, 0);
        return;
    }

    ess_es_row_t row;
    char uuidz[ESS_UUID_LEN + 1];
    if (!ess_uuid_valid(uuid, ulen) ||
        (memcpy(uuidz, uuid, ulen), uuidz[ulen] = '\0',
         ess_registry_find_uuid(app->registry, uuidz, &row) != ESS_OK)) {
        ess_session_close(s, 1000, "the event stream is unknown", 0);
        return;
    }
    s->es_id = row.id;
    memcpy(s->uuid, row.uuid, sizeof s->uuid);
    s->routing_key = ess_xstrndup(row.routing_key, row.routing_key_len);
    s->hook_es.id = row.id;
    s->hook_es.uuid = s->uuid;
    s->hook_es.routing_key = s->routing_key;

    ess_gateway_attach(app, s);
    s->attached = 1;

    ess_route_t route;
    if (ess_hooks_route(app->vm, &s->hook_es, &route) != ESS_OK) {
        ess_session_close(s, 1011, "the routing script failed", 0);
        return;
    }
    if (route.classic) {
        open_classic(s, &route);
        return;
    }
    struct ess_stream_client_s *client = ess_gateway_stream_client(app);
    if (client == NULL || !ess_stream_client_connected(client)) {
        ess_session_close(s, 1013, "the broker is unavailable; retry later", 0);
        return;
    }
    ess_offset_spec_t from = {.kind = ESS_OFFSET_NEXT};
    if (s->sel.kind == ESS_SEL_ORDINAL) {
        from.kind = ESS_OFFSET_ABS;
        from.offset = s->sel.ordinal;
    } else if (s->sel.kind == ESS_SEL_TIMESTAMP || s->sel.kind == ESS_SEL_DATETIME) {
        from.kind = ESS_OFFSET_TIMESTAMP;
        from.timestamp_ms = s->sel.timestamp_ms;
    }
    static const ess_stream_sub_cbs_t cbs = {on_subscribed, on_message, on_ended};
    if (ess_stream_subscribe(client, route.stream, from, &cbs, s, &s->sub) != ESS_OK) {
        s->sub = NULL;
        ess_session_close(s, 1013, "the broker is unavailable; retry later", 0);
        return;
    }
    ess_metrics.subscriptions++;
}

ess_session_t *ess_session_open(ess_app_t *app, struct lws *wsi)
{
    ess_session_t *s = ess_xcalloc(1, sizeof *s);
    s->app = app;
    s->wsi = wsi;
    s->hook_es.ref = -2; /* LUA_NOREF */
    s->last_progress_ms = uv_now(app->loop);
    ess_metrics.ws_open++;
    ess_metrics.ws_accepted++;
    open_session(s);
    return s;
}

/* Bytes of WebSocket frames handed to lws in one send (one syscall); a
 * larger batch measured no gain (256 KiB: 1.75 vs 1.8 us/msg) and would let
 * lws hold more unsent bytes for a slow client outside the budget. */
#define BATCH_BYTES ESS_WS_TX_PACKET
/* Frames written per WRITEABLE at most, so one fast session cannot starve
 * the others on the loop. */
#define BATCH_FRAMES 1024

/* The header of an unmasked, final server frame (RFC 6455 5.2); h holds 10. */
static size_t ws_header(uint8_t *h, int binary, size_t len)
{
    h[0] = binary ? 0x82 : 0x81;
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* The head frame is with lws: count it and free it. */
static void frame_done(ess_session_t *s)
{
    frame_t *f = s->head;
    s->head = f->next;
    if (s->head == NULL)
        s->tail = NULL;
    s->queued_bytes -= f->len;
    s->delivered = 1;
    s->last_offset = f->offset;
    s->msgs_out++;
    s->bytes_out += f->len;
    ess_metrics.msgs_out++;
    ess_metrics.bytes_out += f->len;
    frame_free(f);
}

/* Sends queued frames while the socket takes them (lws_send_pipe_choked).
 * Many small frames are framed here and go to lws as one LWS_WRITE_RAW
 * buffer, i.e. one send() instead of one per message; lws buffers what the
 * socket does not take and reports the pipe choked until it is out. No
 * extension (permessage-deflate) is offered, so the frames need no lws
 * state. A frame larger than a batch goes through lws_write alone. */
int ess_session_writeable(ess_session_t *s)
{
    static uint8_t batch[BATCH_BYTES];
    int sent = 0;
    while (s->head != NULL && sent < BATCH_FRAMES) {
        if (sent > 0 && lws_send_pipe_choked(s->wsi))
            break;
        frame_t *f = s->head;
        if (f->len + 10 > BATCH_BYTES) {
            if (lws_write(s->wsi, f->data + LWS_PRE, f->len,
                          f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < 0)
                return -1;
            frame_done(s);
            sent++;
            continue;
        }
        size_t used = 0;
        int n = 0;
        for (frame_t *g = f; g != NULL && used + g->len + 10 <= BATCH_BYTES; g = g->next) {
            used += ws_header(batch + used, g->binary, g->len);
            memcpy(batch + used, g->data + LWS_PRE, g->len);
            used += g->len;
            n++;
        }
        if (lws_write(s->wsi, batch, used, LWS_WRITE_RAW) < 0)
            return -1;
        for (; n > 0; n--, sent++)
            frame_done(s);
    }
    if (sent > 0) {
        s->last_progress_ms = uv_now(s->app->loop);
        if (s->paused && (s->sub || s->csub) &&
            s->queued_bytes <= (size_t)s->app->cfg->outbound_budget_bytes / 2) {
            s->paused = 0;
            if (s->sub)
                ess_stream_sub_resume(s->sub);
            else
                ess_classic_sub_resume(s->csub);
        }
        if (s->head || s->closing)
            lws_callback_on_writable(s->wsi);
        return 0;
    }
    if (s->closing && !s->close_sent) {
        /* lws 4.1's libuv back end kills the socket before a close frame
         * queued by lws_close_reason() + return -1 is written, so the
         * client would see 1006. Send the close frame ourselves and give
         * the peer a few seconds to answer it. */
        uint8_t buf[LWS_PRE + 2 + sizeof s->close_reason];
        size_t n = strlen(s->close_reason);
        buf[LWS_PRE] = (uint8_t)(s->close_code >> 8);
        buf[LWS_PRE + 1] = (uint8_t)(s->close_code & 0xff);
        memcpy(buf + LWS_PRE + 2, s->close_reason, n);
        s->close_sent = 1;
        /* 4 is lws's internal LWS_WRITE_CLOSE: a close frame with this payload. */
        if (lws_write(s->wsi, buf + LWS_PRE, n + 2, (enum lws_write_protocol)4) < 0)
            return -1;
        lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    }
    return 0;
}

void ess_session_check_stall(ess_session_t *s, uint64_t now_ms)
{
    if (s->closing || s->head == NULL)
        return;
    if (now_ms - s->last_progress_ms < (uint64_t)s->app->cfg->stall_timeout_s * 1000)
        return;
    char reason[124];
    if (s->classic) /* no offsets to resume from in Version 1 */
        snprintf(reason, sizeof reason, "client stalled");
    else if (s->delivered)
        snprintf(reason, sizeof reason,
                 "client stalled; last delivered offset %llu (resume with stream_from_ordinal=%llu)",
                 (unsigned long long)s->last_offset, (unsigned long long)s->last_offset + 1);
    else
        snprintf(reason, sizeof reason, "client stalled; nothing delivered");
    ess_log_warn("session %s: %s", s->uuid, reason);
    ess_session_close(s, 1008, reason, 0);
}

void ess_session_closed(ess_session_t *s)
{
    if (s == NULL)
        return;
    unsubscribe(s);
    if (s->attached)
        ess_gateway_detach(s->app, s);
    log_stats(s, s->closing ? s->close_reason : "client went away");
    drop_queue(s);
    ess_hooks_es_release(s->app->vm, &s->hook_es);
    ess_metrics.ws_open--;
    free(s->routing_key);
    free(s);
}
