/*
 * Subscriptions of the stream client: the public subscribe, unsubscribe,
 * pause and resume calls, the slot a subscription holds on a connection,
 * credit (a fixed number of chunks or a byte window), delivering the
 * records of each chunk to the user, and resubscribing after a reset at
 * the offset after the last one delivered.
 *
 * A subscription is owned by the client (its list) and freed by
 * ess__stream_sub_put once it is released, unreferenced, slot-less and not
 * in one of its own callbacks. Not here: where a stream lives (Metadata,
 * stream_locator.c) and the connection itself (stream_conn.c).
 */
#include <inttypes.h>
#include <string.h>

#include "ess.h"
#include "mq/amqp10.h"
#include "mq/chunk.h"
#include "mq/stream_internal.h"
#include "util/log.h"

#define WINDOW_MAX_CREDIT 64 /* with a byte window: bounds bytes when chunks grow */

void ess__stream_sub_slot_release(ess_stream_sub_t *s)
{
    ess__stream_conn_t *k = s->conn;
    if (k == NULL)
        return;
    k->subs[s->id] = NULL;
    k->nsubs--;
    s->conn = NULL;
    s->on_wire = s->live = 0;
}

static void sub_free(ess_stream_sub_t *s)
{
    ESS__LIST_REMOVE(s->c->subs, s);
    free(s->stream);
    free(s->avoid_host);
    free(s);
}

void ess__stream_sub_put(ess_stream_sub_t *s)
{
    if (s->dead && s->refs == 0 && s->depth == 0 && s->conn == NULL && !s->c->closing)
        sub_free(s);
}

/* The subscription never became live: report status and release it. */
void ess__stream_sub_fail(ess_stream_sub_t *s, int status)
{
    if (s->dead)
        return;
    s->dead = 1;
    ess__stream_sub_slot_release(s);
    if (!s->user_gone && !s->c->closing && s->cbs.on_subscribed) {
        s->depth++;
        s->cbs.on_subscribed(s, status, s->ud);
        s->depth--;
    }
    s->user_gone = 1;
    ess__stream_sub_put(s);
}

/* A live subscription ends for good (stream deleted, bad data). */
void ess__stream_sub_end(ess_stream_sub_t *s, int reason)
{
    if (s->dead)
        return;
    s->dead = 1;
    ess__stream_conn_t *k = s->conn;
    if (k && k->state == C_READY && s->on_wire) {
        /* Tell the broker too; the slot is freed by the response (or, when
         * the Subscribe is still pending, by its response). */
        if (s->live) {
            ess__stream_req_t *r = ess__stream_req_new(R_UNSUBSCRIBE, NULL);
            r->sub = s;
            s->refs++;
            ess__stream_conn_send_req(k, r);
            s->live = 0;
        }
    } else {
        ess__stream_sub_slot_release(s);
    }
    if (!s->user_gone && !s->c->closing && s->cbs.on_ended) {
        s->depth++;
        s->cbs.on_ended(s, reason, s->ud);
        s->depth--;
    }
    s->user_gone = 1;
    ess__stream_sub_put(s);
}

/* Chunks to keep outstanding: a fixed number, or with a byte window as
 * many as keep about that many bytes in flight: many small live chunks
 * (latency) or a few large replay chunks (memory). */
static int credit_target(const ess_stream_sub_t *s)
{
    const ess_stream_client_t *c = s->c;
    if (c->credit_window == 0 || s->avg_chunk == 0)
        return c->credit;
    size_t n = c->credit_window / s->avg_chunk;
    return n < 1 ? 1 : n > WINDOW_MAX_CREDIT ? WINDOW_MAX_CREDIT : (int)n;
}

static void grant(ess_stream_sub_t *s)
{
    ess__stream_conn_t *k = s->conn;
    int target = credit_target(s);
    int want = target - s->credit_out;
    /* With a target of 4 chunks or more, top up only once half of it is
     * used: one Credit command per target/2 chunks instead of one per
     * chunk, which with one message per chunk (AMQP 0-9-1 writers) was a
     * write per message. The broker still holds target/2 or more. */
    if (target >= 4 && s->credit_out > target / 2)
        return;
    if (want <= 0 || s->paused || !s->live || k == NULL || k->state != C_READY)
        return;
    ess_proto_buf_t b = {0};
    ess_proto_enc_credit(&b, (uint8_t)s->id, (uint16_t)want);
    s->credit_out += want;
    ess__stream_conn_write(k, &b);
}

void ess__stream_send_subscribe(ess_stream_sub_t *s)
{
    ess__stream_conn_t *k = s->conn;
    ess_proto_offset_t off = {0, 0, 0};
    if (s->delivered_any) {
        off.type = ESS_PROTO_OFFSET_OFFSET;
        off.offset = s->last + 1;
    } else {
        static const uint16_t types[] = {ESS_PROTO_OFFSET_FIRST, ESS_PROTO_OFFSET_LAST,
                                         ESS_PROTO_OFFSET_NEXT, ESS_PROTO_OFFSET_OFFSET,
                                         ESS_PROTO_OFFSET_TIMESTAMP};
        off.type = types[s->from.kind];
        off.offset = s->from.offset;
        off.timestamp_ms = s->from.timestamp_ms;
    }
    ess__stream_req_t *r = ess__stream_req_new(R_SUBSCRIBE, NULL);
    r->sub = s;
    s->refs++;
    ess__stream_conn_send_req(k, r);
    ess_proto_buf_t b = {0};
    uint16_t credit = (uint16_t)(s->paused ? 0 : s->c->credit);
    ess_proto_enc_subscribe(&b, r->corr, (uint8_t)s->id, s->stream, &off, credit, NULL, 0);
    s->on_wire = 1;
    s->needs_resub = 0;
    s->credit_out = credit;
    ess__stream_conn_write(k, &b);
}

/* Gives s a slot on a connection to host:port; defer says whether a
 * failure must wait for the next loop turn (called from a public call). */
void ess__stream_sub_attach(ess_stream_sub_t *s, const char *host, int port, int defer_fail)
{
    ess_stream_client_t *c = s->c;
    ess__stream_conn_t *k = ess__stream_conn_for(c, host, port, 0);
    if (!ess__stream_conn_usable(k) && !s->ever_live) {
        if (defer_fail) {
            ess__stream_req_t *r = ess__stream_req_new(R_SUB_FAIL, NULL);
            r->sub = s;
            s->refs++;
            ess__stream_defer(c, r, ESS_ECONN);
        } else {
            ess__stream_sub_fail(s, ESS_ECONN);
        }
        ess__stream_conn_maybe_idle(k);
        return;
    }
    int id = 0;
    while (k->subs[id] != NULL)
        id++;
    k->subs[id] = s;
    k->nsubs++;
    s->conn = k;
    s->id = id;
    if (k->state == C_READY)
        ess__stream_send_subscribe(s);
}

void ess__stream_on_subscribe_resp(ess__stream_conn_t *k, ess__stream_req_t *r, int status)
{
    ess_stream_sub_t *s = r->sub;
    s->refs--;
    if (s->dead) {
        if (status == ESS_OK && k->state == C_READY && s->conn == k) {
            ess__stream_req_t *u = ess__stream_req_new(R_UNSUBSCRIBE, NULL);
            u->sub = s;
            s->refs++;
            ess__stream_conn_send_req(k, u);
        } else {
            ess__stream_sub_slot_release(s);
            ess__stream_conn_maybe_idle(k);
        }
        ess__stream_sub_put(s);
        return;
    }
    if (status == ESS_OK) {
        s->live = 1;
        grant(s); /* credit withheld while paused before the answer */
        if (!s->ever_live) {
            s->ever_live = 1;
            if (s->cbs.on_subscribed && !s->c->closing) {
                s->depth++;
                s->cbs.on_subscribed(s, ESS_OK, s->ud);
                s->depth--;
            }
            ess__stream_sub_put(s);
        } else {
            if (s->delivered_any)
                ess_log_info("stream: resumed %s at offset %" PRIu64, s->stream, s->last + 1);
            else
                ess_log_info("stream: resubscribed %s (nothing delivered yet)", s->stream);
        }
        return;
    }
    s->on_wire = 0;
    if (!s->ever_live) {
        ess__stream_sub_fail(s, status);
        ess__stream_conn_maybe_idle(k);
    } else if (status == ESS_ENOTFOUND) {
        ess__stream_sub_end(s, status);
        ess__stream_conn_maybe_idle(k);
    } else {
        /* Transient (stream not yet available after a restart): retry. */
        ess_log_warn("stream: resubscribing %s failed (%s), retrying", s->stream,
                     ess_strerror(status));
        s->needs_resub = 1;
        uv_timer_start(&s->c->retry_timer, ess__stream_on_retry_timer, RESUB_RETRY_MS, 0);
    }
}

typedef struct {
    ess_stream_sub_t *s;
    int64_t ts;
} deliver_ctx_t;

static int on_record(void *ud, uint64_t offset, const uint8_t *data, size_t len)
{
    deliver_ctx_t *d = ud;
    ess_stream_sub_t *s = d->s;
    if (s->dead || s->c->closing || !s->live)
        return 1;
    if (s->delivered_any ? offset <= s->last
                         : (s->from.kind == ESS_OFFSET_ABS && offset < s->from.offset))
        return 0;
    ess_amqp10_msg_t am;
    if (ess_amqp10_decode(data, len, &am) != ESS_OK) {
        memset(&am, 0, sizeof am);
        am.body = data;
        am.body_len = len;
    }
    ess_stream_msg_t m = {am.body, am.body_len, offset, d->ts, &am, data, len};
    s->last = offset;
    s->delivered_any = 1;
    if (s->cbs.on_message)
        s->cbs.on_message(s, &m, s->ud);
    return 0;
}

void ess__stream_on_deliver(ess__stream_conn_t *k, const ess_proto_frame_t *f)
{
    if (f->u.deliver.sub_id >= MAX_SUBS)
        return; /* never ours: ids are 0..MAX_SUBS-1 */
    ess_stream_sub_t *s = k->subs[f->u.deliver.sub_id];
    if (s == NULL)
        return;
    if (s->credit_out > 0)
        s->credit_out--;
    if (s->dead || !s->live)
        return;
    /* The average follows a larger chunk at once (the byte window must hold
     * when replay chunks follow small live ones) and a smaller one slowly. */
    size_t len = f->u.deliver.chunk_len;
    s->avg_chunk = len >= s->avg_chunk ? len : s->avg_chunk - s->avg_chunk / 4 + len / 4;
    if (s->avg_chunk == 0)
        s->avg_chunk = 1;
    grant(s);
    ess_chunk_header_t h;
    int rc = ess_chunk_parse_header(f->u.deliver.chunk, f->u.deliver.chunk_len, &h);
    if (rc == ESS_OK && h.chunk_type != ESS_CHUNK_TYPE_USER)
        return;
    if (rc == ESS_OK && !s->delivered_any && s->from.kind == ESS_OFFSET_TIMESTAMP &&
        h.timestamp_ms < s->from.timestamp_ms)
        return;
    if (rc == ESS_OK) {
        deliver_ctx_t d = {s, h.timestamp_ms};
        s->depth++;
        rc = ess_chunk_each_record(f->u.deliver.chunk, f->u.deliver.chunk_len, on_record, &d);
        s->depth--;
    }
    if (rc < 0) {
        ess_log_error("stream: bad chunk on %s after offset %" PRIu64 ": %s", s->stream, s->last,
                      ess_strerror(rc));
        ess__stream_sub_end(s, rc);
    }
    ess__stream_sub_put(s);
}

void ess__stream_on_retry_timer(uv_timer_t *t)
{
    ess_stream_client_t *c = t->data;
    for (ess_stream_sub_t *s = c->subs; s && !c->closing; s = s->next) {
        if (s->dead || !s->needs_locate || s->conn != NULL || c->locator == NULL)
            continue;
        s->needs_locate = 0;
        ess__stream_req_t *r = ess__stream_req_new(R_LOCATE_SUB, s->stream);
        r->sub = s;
        s->refs++;
        ess__stream_conn_queue_req(c->locator, r);
    }
    for (ess__stream_conn_t *k = c->conns; k; k = k->next) {
        if (k->state != C_READY)
            continue;
        unsigned gen = k->gen;
        for (int i = 0; i < MAX_SUBS && k->gen == gen && !c->closing; i++) {
            ess_stream_sub_t *s = k->subs[i];
            if (s && !s->dead && s->needs_resub && !s->on_wire)
                ess__stream_send_subscribe(s);
        }
    }
    ess__stream_pub_retry(c);
}

int ess_stream_subscribe(ess_stream_client_t *c, const char *stream, ess_offset_spec_t from,
                         const ess_stream_sub_cbs_t *cbs, void *ud, ess_stream_sub_t **out)
{
    if (c == NULL || cbs == NULL || !ess__stream_name_ok(stream) ||
        (unsigned)from.kind > ESS_OFFSET_TIMESTAMP)
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess_stream_sub_t *s = ess_xcalloc(1, sizeof *s);
    s->c = c;
    s->stream = ess_xstrdup(stream);
    s->from = from;
    s->cbs = *cbs;
    s->ud = ud;
    ESS__LIST_PUSH(c->subs, s);
    *out = s;
    if (c->lb_mode) {
        ess__stream_sub_attach(s, c->nodes[c->node].host, c->nodes[c->node].port, 1);
    } else if (c->locator == NULL || !ess__stream_conn_usable(c->locator)) {
        ess__stream_req_t *r = ess__stream_req_new(R_SUB_FAIL, NULL);
        r->sub = s;
        s->refs++;
        ess__stream_defer(c, r, ESS_ECONN);
    } else {
        ess__stream_req_t *r = ess__stream_req_new(R_LOCATE_SUB, stream);
        r->sub = s;
        s->refs++;
        ess__stream_conn_queue_req(c->locator, r);
    }
    return ESS_OK;
}

void ess_stream_unsubscribe(ess_stream_sub_t *s)
{
    if (s == NULL || s->user_gone)
        return;
    s->user_gone = 1;
    if (s->dead)
        return;
    s->dead = 1;
    ess__stream_conn_t *k = s->conn;
    if (k && s->on_wire && k->state == C_READY) {
        if (s->live) {
            ess__stream_req_t *r = ess__stream_req_new(R_UNSUBSCRIBE, NULL);
            r->sub = s;
            s->refs++;
            ess__stream_conn_send_req(k, r);
            s->live = 0;
        }
        /* else the Subscribe response sends the Unsubscribe */
    } else if (k) {
        ess__stream_sub_slot_release(s);
        ess__stream_conn_maybe_idle(k);
    }
    ess__stream_sub_put(s);
}

void ess_stream_sub_pause(ess_stream_sub_t *s)
{
    if (s != NULL)
        s->paused = 1;
}

void ess_stream_sub_resume(ess_stream_sub_t *s)
{
    if (s == NULL || !s->paused)
        return;
    s->paused = 0;
    if (!s->dead)
        grant(s);
}

int ess_stream_sub_last_offset(const ess_stream_sub_t *s, uint64_t *offset)
{
    if (!s->delivered_any)
        return ESS_ENOTFOUND;
    *offset = s->last;
    return ESS_OK;
}

const char *ess_stream_sub_stream(const ess_stream_sub_t *s)
{
    return s->stream;
}
