/*
 * A public WebSocket session (gateway/session.h). Owns its message source,
 * its output queue (blocks of ready frames, gateway/delivery.h) and its
 * counters. Flow control: while the queued payload bytes exceed the
 * outbound budget the source is paused, so the broker keeps the data; it
 * resumes below half the budget. The transport (http/ws.c) writes whole
 * blocks, several per write callback while the socket takes them.
 *
 * A live session of a stream whose enrich hook is shared (per_stream =
 * false) is instead a member of the stream's fan-out group
 * (gateway/fanout.h): its output is its own queue first (frames of an
 * earlier solo period), then its cursor in the group's shared log. Over
 * the budget a member leaves the group and resubscribes on its own from
 * the offset after the last frame it handed on; a solo session of such a
 * stream (a replay, or one that left) rejoins when its own subscription
 * reaches the group's position.
 */
#include "gateway/session.h"
#include "ess.h"
#include "gateway/fanout.h"
#include "gateway/gateway.h"
#include "gateway/tail.h"
#include "metrics/metrics.h"
#include "script/hooks.h"
#include "util/log.h"

#include <string.h>
#include <sys/time.h>

struct ess_session_s {
    ess_app_t *app;
    const ess_session_transport_t *transport;
    void *conn;
    int attached;
    int waiting_registry; /* reading the shared registry to its tail (unknown uuid) */

    int64_t es_id;
    char uuid[ESS_UUID_LEN + 1];
    char *routing_key;
    ess_hook_es_t hook_es;
    ess_selector_t sel;

    ess_source_t *src;
    int has_offsets; /* the source's messages carry offsets */
    int paused;
    int subscribed; /* counted in ess_metrics.subscriptions */
    char *stream;   /* a stream that may be shared (its hook is shared), or NULL */
    ess_fan_member_t fan;
    unsigned rejoin_tick;

    ess_outq_t out;
    uint64_t last_progress_ms;

    int delivered; /* at least one frame written */
    uint64_t last_offset;
    uint64_t msgs_in, msgs_out, bytes_out;
    int replay_checked; /* the first message was compared with the ordinal selector */

    int closing;
    int flush;

    /* The operator console (gateway/console.c): who, since when, rates, the
     * stream's tail offset; tail is NULL unless someone watches. */
    char peer[64];
    char user_agent[128];
    char selector[96];
    char *broker_stream; /* the route's broker stream (NULL: classic), for display */
    int64_t connected_ms;
    uint64_t stalls;
    uint64_t prev_in, prev_out, prev_bytes, rate_in, rate_out, rate_bytes;
    int64_t stream_tail;
    uint64_t stream_tail_ms;
    struct ess_tail_s *tail;
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

static void want_write(ess_session_t *s)
{
    s->transport->want_write(s->conn);
}

static void drop_source(ess_session_t *s)
{
    if (s->src) {
        ess_source_unsubscribe(s->src);
        s->src = NULL;
        ess_metrics.broker_subscriptions--;
    }
}

static void unsubscribe(ess_session_t *s)
{
    s->msgs_in += s->fan.msgs;
    s->fan.msgs = 0;
    ess_fanout_leave(s);
    drop_source(s);
    if (s->subscribed) {
        s->subscribed = 0;
        ess_metrics.subscriptions--;
    }
}

/* The session has output to hand on: its queue, or its cursor in a group's log. */
static int pending(const ess_session_t *s)
{
    return s->out.head != NULL || (s->fan.group != NULL && ess_outcur_pending(&s->fan.cur));
}

static void log_stats(ess_session_t *s, const char *when)
{
    ess_log_info("session %s (es %lld): %s: received %llu, sent %llu, bytes %llu%s", s->uuid,
                 (long long)s->es_id, when, (unsigned long long)(s->msgs_in + s->fan.msgs),
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
    if (flush && s->fan.group)
        ess_outcur_copy_rest(&s->fan.cur, &s->out); /* what the member still had to send */
    unsubscribe(s);
    if (s->waiting_registry) {
        ess_registry_forget(s->app->registry, s);
        s->waiting_registry = 0;
    }
    if (!flush)
        ess_outq_clear(&s->out);
    if (s->attached) {
        ess_gateway_detach(s->app, s);
        s->attached = 0;
    }
    char label[32];
    snprintf(label, sizeof label, "code=\"%d\"", code);
    ess_metrics_add("ess_websocket_closes_total", label, 1);
    want_write(s);
}

static int enrich(void *ctx, const ess_hook_msg_t *m, ess_hook_emit_fn emit, void *emit_ud)
{
    ess_session_t *s = ctx;
    if (s->tail != NULL) /* an operator watches: record the frame and the raw body */
        return ess_tail_enrich(s->tail, s->app->vm, &s->hook_es, m, emit, emit_ud);
    return ess_hooks_enrich(s->app->vm, &s->hook_es, m, emit, emit_ud);
}

/* Replay truncated by retention: an ordinal selector that points before
 * the stream's first retained message starts at that message. Offsets
 * skip one value where a segment begins with a tracking chunk (AMQP 0-9-1
 * writers), so a first offset of ordinal + 1 is such a boundary (or one
 * removed message: the two cannot be told apart without StreamStats);
 * ordinal + 2 or more can only be retention. Once per connection. */
static void check_replay_start(ess_session_t *s, const ess_source_msg_t *msg)
{
    s->replay_checked = 1;
    if (s->sel.kind != ESS_SEL_ORDINAL || !msg->has_offset || msg->offset < s->sel.ordinal + 2 ||
        s->sel.ordinal + 2 < s->sel.ordinal)
        return;
    ess_metrics.replay_truncated++;
    ess_log_warn("session %s: replay truncated by retention: asked for offset %llu, the first "
                 "message still in the stream is at offset %llu",
                 s->uuid, (unsigned long long)s->sel.ordinal, (unsigned long long)msg->offset);
}

static void on_message(void *ud, const ess_source_msg_t *msg)
{
    ess_session_t *s = ud;
    if (!s->replay_checked)
        check_replay_start(s, msg);
    s->msgs_in++;
    ess_metrics.msgs_in++;
    int was_empty = s->out.head == NULL;
    if (ess_delivery_run(msg, enrich, s, &s->out) == ESS_DELIVERY_POISON) {
        ess_session_close(s, 1000, "The stream has been deleted", 1);
        return;
    }
    /* A non-empty queue always has a write callback pending (requested
     * here, or by the transport when it leaves blocks), so ask only when
     * this message made the queue non-empty: one poll change per batch. */
    if (was_empty && s->out.head != NULL)
        want_write(s);
    if (s->app->cfg->message_stats_interval > 0 &&
        s->msgs_in % (uint64_t)s->app->cfg->message_stats_interval == 0)
        log_stats(s, "progress");
    if (!s->paused && s->src && s->out.payload >= (size_t)s->app->cfg->outbound_budget_bytes) {
        s->paused = 1;
        s->stalls++;
        ess_metrics.credit_stalls++;
        ess_source_pause(s->src);
    }
    /* Caught up with a shared subscription of the stream: rejoin it. A
     * session waiting to rejoin reports every message (the group joins it
     * at exactly its latest offset), or stops waiting when it is no longer
     * caught up; others look for a group every 64th message. */
    if (s->stream && msg->has_offset) {
        if (s->paused || s->closing || s->tail != NULL ||
            s->out.payload > (size_t)s->app->cfg->outbound_budget_bytes / 2)
            ess_fanout_leave(s); /* not a member: only stops waiting */
        else if ((s->fan.waiting || (++s->rejoin_tick & 63) == 0) &&
                 ess_fanout_try_rejoin(s->app, s->stream, s, msg->offset))
            ess__session_fan_joined(s);
    }
}

static void ended(ess_session_t *s, int status, int established)
{
    if (!established)
        ess_session_close(s, 1013,
                          status == ESS_ENOTFOUND ? "the event stream cannot be found"
                                                  : "the broker is unavailable; retry later",
                          0);
    else if (status == ESS_ENOTFOUND && s->has_offsets)
        ess_session_close(s, 1000, "The stream has been deleted", 1);
    else
        ess_session_close(s, 1011, "the broker subscription ended", 1);
}

static void on_ended(void *ud, int status, int established)
{
    ess_session_t *s = ud;
    s->src = NULL; /* freed by the source after this callback */
    ess_metrics.broker_subscriptions--;
    ended(s, status, established);
}

static const ess_source_cbs_t own_cbs = {on_message, on_ended};

/* Subscribe s on its own to its (shared-eligible) stream from `from`. */
static int subscribe_own(ess_session_t *s, ess_offset_spec_t from)
{
    ess_route_t route = {0};
    snprintf(route.stream, sizeof route.stream, "%s", s->stream);
    if (ess_gateway_subscribe(s->app, &route, from, &own_cbs, s, &s->src) != ESS_OK) {
        s->src = NULL;
        return ESS_ECONN;
    }
    s->paused = 0;
    ess_metrics.broker_subscriptions++;
    return ESS_OK;
}

int ess__session_deflate(const ess_session_t *s)
{
    return s->out.deflate;
}

ess_fan_member_t *ess__session_fan(ess_session_t *s)
{
    return &s->fan;
}

void ess__session_fan_wake(ess_session_t *s)
{
    want_write(s);
}

/* Leave the group and continue on an own subscription from the offset after
 * the last frame handed on (frames queued but not sent are read again). */
static void leave_group(ess_session_t *s, const char *why)
{
    ess_fan_member_t *f = &s->fan;
    ess_offset_spec_t from = {.kind = ESS_OFFSET_NEXT};
    if (f->next_known) {
        from.kind = ESS_OFFSET_ABS;
        from.offset = f->next_offset;
    }
    s->msgs_in += f->msgs;
    f->msgs = 0;
    ess_fanout_leave(s);
    ess_metrics_add("ess_fanout_leaves_total", "", 1);
    ess_log_info("session %s: left the shared subscription of %s (%s); continues on its own from "
                 "offset %llu",
                 s->uuid, s->stream, why, (unsigned long long)from.offset);
    if (subscribe_own(s, from) != ESS_OK)
        ess_session_close_resumable(s, 1013, "the broker is unavailable; retry later");
}

void ess__session_fan_slow(ess_session_t *s)
{
    leave_group(s, "a budget behind");
}

void ess_session_watched(ess_session_t *s)
{
    /* The Tail records the session's own enrichment, which a member of a
     * group does not run: it continues on its own while watched. */
    if (s->fan.group != NULL && !s->closing)
        leave_group(s, "an operator watches its Tail");
}

void ess__session_fan_joined(ess_session_t *s)
{
    drop_source(s);
    s->paused = 0;
    ess_metrics_add("ess_fanout_rejoins_total", "", 1);
    ess_log_info("session %s: caught up; rejoined the shared subscription of %s", s->uuid,
                 s->stream);
}

void ess__session_fan_poison(ess_session_t *s)
{
    ess_session_close(s, 1000, "The stream has been deleted", 1);
}

void ess__session_fan_ended(ess_session_t *s, int status, int established)
{
    ended(s, status, established);
}

static void open_known(ess_session_t *s, const ess_es_row_t *found);
static void on_registry_synced(void *ud, int status, const ess_es_row_t *unused);

static void open_session(ess_session_t *s, const ess_session_request_t *req)
{
    ess_app_t *app = s->app;
    static const char prefix[] = "/event-stream/";
    const char *path = req->path ? req->path : "";
    const char *uuid =
        strncmp(path, prefix, sizeof prefix - 1) == 0 ? path + sizeof prefix - 1 : "";
    /* The uuid is the whole rest of the path: "/event-stream/<uuid>/extra"
     * names no event stream. */
    size_t ulen = strlen(uuid);

    if (app->draining) {
        ess_session_close(s, 1001, "the server is shutting down", 0);
        return;
    }
    if (app->ws_open > app->cfg->max_connections) {
        ess_session_close(s, 1013, "too many connections; retry later", 0);
        return;
    }
    char reason[124];
    if (ess_selector_parse(req->selector, req->count, wall_ms(), &s->sel, reason, sizeof reason) !=
        ESS_OK) {
        ess_session_close(s, 1002, reason, 0);
        return;
    }

    ess_es_row_t row;
    if (!ess_uuid_valid(uuid, ulen)) {
        ess_session_close(s, 1000, "the event stream is unknown", 0);
        return;
    }
    memcpy(s->uuid, uuid, ulen);
    s->uuid[ulen] = '\0';
    if (ess_registry_find_uuid(app->registry, s->uuid, &row) != ESS_OK) {
        /* The shared registry: it may have been created on another replica
         * a moment ago; read the log to its tail before saying unknown. */
        if (ess_registry_sync(app->registry, on_registry_synced, s) == ESS_OK)
            s->waiting_registry = 1;
        else
            ess_session_close(s, 1000, "the event stream is unknown", 0);
        return;
    }
    open_known(s, &row);
}

static void on_registry_synced(void *ud, int status, const ess_es_row_t *unused)
{
    ess_session_t *s = ud;
    s->waiting_registry = 0;
    ess_es_row_t row;
    if (s->closing)
        return;
    if (ess_registry_find_uuid(s->app->registry, s->uuid, &row) != ESS_OK) {
        ess_session_close(s, 1000, "the event stream is unknown", 0);
        return;
    }
    open_known(s, &row);
}

/* The event stream is known: index the session, route, subscribe. */
static void open_known(ess_session_t *s, const ess_es_row_t *found)
{
    ess_app_t *app = s->app;
    ess_es_row_t row = *found;
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
    ess_offset_spec_t from = {.kind = ESS_OFFSET_NEXT};
    if (s->sel.kind == ESS_SEL_ORDINAL) {
        from.kind = ESS_OFFSET_ABS;
        from.offset = s->sel.ordinal;
    } else if (s->sel.kind == ESS_SEL_TIMESTAMP || s->sel.kind == ESS_SEL_DATETIME) {
        from.kind = ESS_OFFSET_TIMESTAMP;
        from.timestamp_ms = s->sel.timestamp_ms;
    }
    if (!route.classic && ess_fanout_eligible(app, route.stream))
        s->stream = ess_xstrndup(route.stream, strlen(route.stream));
    int rc;
    if (s->stream && from.kind == ESS_OFFSET_NEXT) {
        rc = ess_fanout_join(app, s->stream, &s->hook_es, s);
        s->has_offsets = 1;
    } else {
        rc = ess_gateway_subscribe(app, &route, from, &own_cbs, s, &s->src);
        if (rc == ESS_OK) {
            s->has_offsets = s->src->has_offsets;
            ess_metrics.broker_subscriptions++;
        } else {
            s->src = NULL;
        }
    }
    if (rc != ESS_OK) {
        ess_session_close(s, 1013, "the broker is unavailable; retry later", 0);
        return;
    }
    if (!route.classic)
        s->broker_stream = ess_xstrdup(route.stream);
    if (!s->has_offsets && s->sel.kind != ESS_SEL_NONE)
        ess_log_info("session %s: classic (version 1) mode has no history: start selector ignored",
                     s->uuid);
    s->subscribed = 1;
    ess_metrics.subscriptions++;
}

ess_session_t *ess_session_open(ess_app_t *app, const ess_session_request_t *req,
                                const ess_session_transport_t *transport, void *conn)
{
    ess_session_t *s = ess_xcalloc(1, sizeof *s);
    s->app = app;
    s->transport = transport;
    s->conn = conn;
    s->out.deflate = req->deflate;
    s->hook_es.ref = -2; /* LUA_NOREF */
    s->last_progress_ms = uv_now(app->loop);
    s->connected_ms = wall_ms();
    s->stream_tail = -2;
    snprintf(s->peer, sizeof s->peer, "%s", req->peer ? req->peer : "");
    snprintf(s->user_agent, sizeof s->user_agent, "%s", req->user_agent ? req->user_agent : "");
    for (int i = 0; i < ESS_SEL_SOURCES; i++)
        if (req->selector[i] != NULL) {
            snprintf(s->selector, sizeof s->selector, "%s=%s", ess_selector_names[i],
                     req->selector[i]);
            break;
        }
    ess_metrics.ws_open++;
    ess_metrics.ws_accepted++;
    open_session(s, req);
    return s;
}

int ess_session_next_bytes(ess_session_t *s, const uint8_t **data, size_t *len)
{
    if (s->out.head != NULL) {
        *data = ess_out_block_bytes(s->out.head);
        *len = s->out.head->used;
        return 1;
    }
    return s->fan.group != NULL && ess_outcur_peek(&s->fan.cur, data, len);
}

/* The member handed on the bytes of its last peek at the log. */
static void sent_shared(ess_session_t *s)
{
    uint32_t frames;
    size_t payload;
    int has_offset;
    uint64_t last;
    ess_outcur_advance(&s->fan.cur, &frames, &payload, &has_offset, &last);
    s->delivered = 1;
    if (has_offset) {
        s->last_offset = last;
        s->fan.next_known = 1;
        s->fan.next_offset = last + 1;
    }
    s->msgs_out += frames;
    s->bytes_out += payload;
    ess_metrics.msgs_out += frames;
    ess_metrics.bytes_out += payload;
}

void ess_session_sent(ess_session_t *s)
{
    ess_out_block_t *b = ess_outq_pop(&s->out);
    if (b == NULL) {
        if (s->fan.group != NULL)
            sent_shared(s);
        return;
    }
    s->delivered = 1;
    if (b->has_offset)
        s->last_offset = b->last_offset;
    s->msgs_out += b->frames;
    s->bytes_out += b->payload;
    ess_metrics.msgs_out += b->frames;
    ess_metrics.bytes_out += b->payload;
    ess_out_block_free(b);
}

int ess_session_after_write(ess_session_t *s, int n)
{
    if (n > 0) {
        s->last_progress_ms = uv_now(s->app->loop);
        if (s->paused && s->src &&
            s->out.payload <= (size_t)s->app->cfg->outbound_budget_bytes / 2) {
            s->paused = 0;
            ess_source_resume(s->src);
        }
        if (s->fan.group)
            ess_fanout_drained(s, s->out.payload);
    }
    return pending(s) || s->closing;
}

int ess_session_close_due(const ess_session_t *s, int *code, const char **reason)
{
    if (!s->closing || s->out.head != NULL)
        return 0;
    *code = s->close_code;
    *reason = s->close_reason;
    return 1;
}

void ess_session_close_resumable(ess_session_t *s, int code, const char *what)
{
    char reason[124];
    int n;
    if (!s->has_offsets) /* no offsets to resume from in Version 1 */
        n = snprintf(reason, sizeof reason, "%s", what);
    else if (s->delivered) {
        unsigned long long last = (unsigned long long)s->last_offset;
        n = snprintf(reason, sizeof reason,
                     "%s; last delivered offset %llu (resume with stream_from_ordinal=%llu)", what,
                     last, last + 1);
        if (n < 0 || (size_t)n >= sizeof reason) /* 19-digit offsets: keep the offset */
            n = snprintf(reason, sizeof reason, "%s; last delivered offset %llu", what, last);
    } else
        n = snprintf(reason, sizeof reason, "%s; nothing delivered", what);
    (void)n;
    if (code == 1008)
        ess_log_warn("session %s: %s", s->uuid, reason);
    ess_session_close(s, code, reason, 0);
}

void ess_session_check_stall(ess_session_t *s, uint64_t now_ms)
{
    if (s->closing || !pending(s))
        return;
    if (now_ms - s->last_progress_ms < (uint64_t)s->app->cfg->stall_timeout_s * 1000)
        return;
    ess_session_close_resumable(s, 1008, "client stalled");
}

void ess_session_closed(ess_session_t *s)
{
    if (s == NULL)
        return;
    unsubscribe(s);
    if (s->waiting_registry)
        ess_registry_forget(s->app->registry, s);
    if (s->attached)
        ess_gateway_detach(s->app, s);
    log_stats(s, s->closing ? s->close_reason : "client went away");
    ess_outq_clear(&s->out);
    ess_hooks_es_release(s->app->vm, &s->hook_es);
    ess_metrics.ws_open--;
    ess_tail_free(s->tail);
    free(s->broker_stream);
    free(s->routing_key);
    free(s->stream);
    free(s);
}

void ess_session_info(const ess_session_t *s, ess_session_info_t *info)
{
    *info = (ess_session_info_t){
        .es_id = s->es_id,
        .uuid = s->uuid,
        .routing_key = s->routing_key ? s->routing_key : "",
        .stream = s->broker_stream,
        .peer = s->peer,
        .user_agent = s->user_agent,
        .selector = s->selector,
        .connected_ms = s->connected_ms,
        .has_offsets = s->has_offsets,
        .delivered = s->delivered,
        .paused = s->paused,
        .closing = s->closing,
        .last_offset = s->last_offset,
        .msgs_in = s->msgs_in + s->fan.msgs,
        .msgs_out = s->msgs_out,
        .bytes_out = s->bytes_out,
        .stalls = s->stalls,
        .queued_bytes = s->out.payload,
        .rate_in = s->rate_in,
        .rate_out = s->rate_out,
        .rate_bytes = s->rate_bytes,
        .stream_tail = s->stream_tail,
        .stream_tail_ms = s->stream_tail_ms,
    };
}

void ess_session_sample(ess_session_t *s)
{
    uint64_t in = s->msgs_in + s->fan.msgs; /* a group member counts in fan.msgs */
    s->rate_in = in - s->prev_in;
    s->rate_out = s->msgs_out - s->prev_out;
    s->rate_bytes = s->bytes_out - s->prev_bytes;
    s->prev_in = in;
    s->prev_out = s->msgs_out;
    s->prev_bytes = s->bytes_out;
}

void ess_session_set_stream_tail(ess_session_t *s, int64_t last_offset, uint64_t at_ms)
{
    s->stream_tail = last_offset;
    s->stream_tail_ms = at_ms;
}

struct ess_tail_s **ess_session_tail_slot(ess_session_t *s)
{
    return &s->tail;
}
