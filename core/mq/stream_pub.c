/*
 * Publishers of the stream client: the public create, publish and close
 * calls, the slot a publisher holds on a connection, declaring it to the
 * broker (after asking a named publisher's last stored publishing id),
 * reporting publish confirms and errors to the user, and surviving a lost
 * connection or a leader change.
 *
 * A publisher keeps a copy of every message not yet confirmed (mq/pubq.h).
 * Once declared, a lost connection, a MetadataUpdate for its stream or a
 * refused re-declare does not fail it: it waits (exponential backoff with
 * jitter, the client's reconnect bounds), asks Metadata for the leader
 * again (or reconnects to the URL's host in load-balancer mode),
 * re-declares with the same reference and resends every unconfirmed
 * message with its original publishing id, so the broker drops the ones it
 * already stored for that reference. Each id is reported to on_confirm
 * once. Messages published meanwhile are queued and sent after the resend.
 * Only a deleted stream or refused access ends a declared publisher.
 *
 * A publisher is owned by the client (its list) and freed by
 * ess__stream_pub_put once its user closed it, nothing refers to it, it
 * holds no slot and none of its callbacks is on the stack.
 */
#include <string.h>

#include "ess.h"
#include "mq/stream_internal.h"
#include "util/log.h"

#define RESEND_BATCH 256 /* messages gathered per resend run */

static void pub_slot_release(ess_stream_pub_t *p)
{
    ess__stream_conn_t *k = p->conn;
    if (k == NULL)
        return;
    k->pubs[p->id] = NULL;
    k->npubs--;
    p->conn = NULL;
    p->on_wire = p->ready = 0;
}

void ess__stream_pub_destroy(ess_stream_pub_t *p)
{
    ess_pubq_free(&p->q);
    free(p->ref);
    free(p->stream);
    free(p);
}

static void pub_free(ess_stream_pub_t *p)
{
    ESS__LIST_REMOVE(p->c->pubs, p);
    ess__stream_pub_destroy(p);
}

void ess__stream_pub_put(ess_stream_pub_t *p)
{
    if (p->dead && p->user_gone && p->refs == 0 && p->depth == 0 && p->conn == NULL &&
        !p->c->closing)
        pub_free(p);
}

/* Reports every pending id with status, oldest first (a publisher that
 * ends for good). */
static void report_pending(ess_stream_pub_t *p, int status)
{
    while (ess_pubq_pending(&p->q) > 0 && !p->user_gone && !p->c->closing) {
        uint64_t id = 0;
        for (size_t i = 0; i < ess_pubq_slots(&p->q); i++) {
            if (!ess_pubq_at(&p->q, i)->taken) {
                id = ess_pubq_at(&p->q, i)->id;
                break;
            }
        }
        ess_pubq_take(&p->q, id);
        p->cbs.on_confirm(p, id, status, p->ud);
    }
}

void ess__stream_pub_fail(ess_stream_pub_t *p, int status, int declared)
{
    if (p->dead)
        return;
    p->dead = 1;
    p->needs_locate = 0;
    pub_slot_release(p);
    if (!p->user_gone && !p->c->closing) {
        p->depth++;
        if (!declared && p->cbs.on_ready)
            p->cbs.on_ready(p, status, p->ud);
        else if (declared && p->cbs.on_confirm) {
            report_pending(p, status);
            if (!p->user_gone && !p->c->closing)
                p->cbs.on_confirm(p, UINT64_MAX, status, p->ud);
        }
        p->depth--;
    }
    if (!declared)
        p->user_gone = 1;
    ess__stream_pub_put(p);
}

/* Arms the client's retry timer to fire within ms (never later than it
 * already would). */
static void arm_retry(ess_stream_client_t *c, uint64_t ms)
{
    if (c->closing)
        return;
    if (uv_is_active((uv_handle_t *)&c->retry_timer) && uv_timer_get_due_in(&c->retry_timer) <= ms)
        return;
    uv_timer_start(&c->retry_timer, ess__stream_on_retry_timer, ms, 0);
}

void ess__stream_pub_lost(ess_stream_pub_t *p, int err)
{
    ess_stream_client_t *c = p->c;
    if (p->dead || c->closing)
        return;
    if (!p->ever_ready) {
        ess__stream_pub_fail(p, err, 0);
        return;
    }
    if (err == ESS_ENOTFOUND || err == ESS_EAUTH) {
        ess__stream_pub_fail(p, err, 1);
        return;
    }
    ess__stream_conn_t *k = p->conn;
    if (k && p->on_wire && k->state == C_READY) {
        /* The broker may still hold it (a MetadataUpdate): free the id. */
        ess_proto_buf_t b = {0};
        ess_proto_enc_delete_publisher(&b, ++k->next_corr, (uint8_t)p->id);
        ess__stream_conn_write(k, &b);
    }
    pub_slot_release(p);
    p->attempts++;
    uint32_t d = (uint32_t)c->min_ms;
    for (int i = 1; i < p->attempts && d < (uint32_t)c->max_ms; i++)
        d *= 2;
    if (d > (uint32_t)c->max_ms)
        d = (uint32_t)c->max_ms;
    d = d / 2 + ess__stream_jitter(c, d / 2 + 1);
    ess_log_warn("stream: publisher on %s lost its connection (%s); %zu unconfirmed, finding "
                 "the leader again in %u ms",
                 p->stream, ess_strerror(err), ess_pubq_pending(&p->q), d);
    p->needs_locate = 1;
    p->retry_at = uv_now(c->loop) + d;
    arm_retry(c, d);
    if (k)
        ess__stream_conn_maybe_idle(k);
}

void ess__stream_pub_locate_failed(ess_stream_pub_t *p, int status)
{
    if (p->ever_ready)
        ess__stream_pub_lost(p, status);
    else
        ess__stream_pub_fail(p, status, 0);
}

static void send_declare_now(ess_stream_pub_t *p)
{
    ess__stream_conn_t *k = p->conn;
    ess__stream_req_t *r = ess__stream_req_new(R_DECLARE_PUB, NULL);
    r->pub = p;
    p->refs++;
    ess__stream_conn_send_req(k, r);
    p->decl_corr = r->corr;
    ess_proto_buf_t b = {0};
    ess_proto_enc_declare_publisher(&b, r->corr, (uint8_t)p->id, p->ref, p->stream);
    ess__stream_conn_write(k, &b);
}

void ess__stream_send_declare(ess_stream_pub_t *p)
{
    ess__stream_conn_t *k = p->conn;
    p->on_wire = 1;
    if (p->ref == NULL || p->seq_known) {
        send_declare_now(p);
        return;
    }
    ess__stream_req_t *r = ess__stream_req_new(R_QUERY_SEQ, NULL);
    r->pub = p;
    p->refs++;
    ess__stream_conn_send_req(k, r);
    p->decl_corr = r->corr;
    ess_proto_buf_t b = {0};
    ess_proto_enc_query_publisher_seq(&b, r->corr, p->ref, p->stream);
    ess__stream_conn_write(k, &b);
}

void ess__stream_on_query_seq_resp(ess__stream_conn_t *k, ess__stream_req_t *r,
                                   const ess_proto_frame_t *f, int status)
{
    ess_stream_pub_t *p = r->pub;
    p->refs--;
    if (p->dead || p->conn != k || p->decl_corr != r->corr) {
        ess__stream_pub_put(p);
        return;
    }
    if (status == ESS_OK) {
        /* New ids continue after what the broker stored for this
         * reference, or it would drop them as duplicates. */
        if (f->u.offset + 1 > p->next_id)
            p->next_id = f->u.offset + 1;
        p->seq_known = 1;
        send_declare_now(p);
    } else {
        ess__stream_pub_locate_failed(p, status);
    }
    ess__stream_pub_put(p);
}

/* Appends Publish frames for msgs (ids first_id, first_id+1, ...), as few
 * as limit allows. */
static void enc_run(ess_proto_buf_t *b, ess_stream_pub_t *p, size_t limit, uint64_t first_id,
                    const uint8_t *const *msgs, const size_t *lens, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i, total = 0;
        while (j < n && ess_proto_publish_size(j - i + 1, total + lens[j]) <= limit) {
            total += lens[j];
            j++;
        }
        ess_proto_enc_publish(b, (uint8_t)p->id, first_id + i, msgs + i, lens + i, j - i);
        i = j;
    }
}

/* After a re-declare: every pending message again, oldest first, in runs
 * of consecutive ids. */
static void resend_pending(ess_stream_pub_t *p)
{
    ess__stream_conn_t *k = p->conn;
    size_t limit = k->frame_max ? k->frame_max : RECV_LIMIT;
    const uint8_t *msgs[RESEND_BATCH];
    size_t lens[RESEND_BATCH], n = 0;
    uint64_t first = 0;
    ess_proto_buf_t b = {0};
    size_t slots = ess_pubq_slots(&p->q);
    for (size_t i = 0; i <= slots; i++) {
        const ess_pubq_item_t *it = i < slots ? ess_pubq_at(&p->q, i) : NULL;
        if (it && it->taken)
            continue;
        if (n > 0 && (it == NULL || it->id != first + n || n == RESEND_BATCH)) {
            enc_run(&b, p, limit, first, msgs, lens, n);
            n = 0;
        }
        if (it == NULL)
            break;
        if (n == 0)
            first = it->id;
        msgs[n] = it->data;
        lens[n++] = it->len;
    }
    ess__stream_conn_write(k, &b);
}

void ess__stream_on_declare_resp(ess__stream_conn_t *k, ess__stream_req_t *r, int status)
{
    ess_stream_pub_t *p = r->pub;
    ess_stream_client_t *c = k->c;
    p->refs--;
    if (p->dead || p->conn != k || p->decl_corr != r->corr) {
        ess__stream_pub_put(p);
        ess__stream_conn_maybe_idle(k);
        return;
    }
    if (status != ESS_OK) {
        ess__stream_pub_locate_failed(p, status);
    } else {
        p->ready = 1;
        p->attempts = 0;
        p->frame_max = k->frame_max;
        if (!p->ever_ready) {
            p->ever_ready = 1;
            if (p->cbs.on_ready && !p->user_gone && !c->closing) {
                p->depth++;
                p->cbs.on_ready(p, ESS_OK, p->ud);
                p->depth--;
            }
        } else {
            ess_log_info("stream: publisher on %s declared again on %s:%d; resending %zu "
                         "unconfirmed",
                         p->stream, k->host, k->port, ess_pubq_pending(&p->q));
            resend_pending(p);
        }
    }
    ess__stream_pub_put(p);
    ess__stream_conn_maybe_idle(k);
}

void ess__stream_pub_req_fail(ess_stream_client_t *c, ess__stream_req_t *r, int err)
{
    ess_stream_pub_t *p = r->pub;
    if (r->kind == R_LOCATE_PUB && p->ever_ready && !p->dead && !c->closing && c->locator != NULL) {
        /* A declared publisher waits for the locator to come back. */
        r->sent = 0;
        ess__stream_conn_add_req(c->locator, r);
        return;
    }
    /* The request's reference is dropped after locate_failed: pub_fail
     * ends with a put of its own, which would free p read below. */
    if (r->kind == R_LOCATE_PUB || !p->ever_ready)
        ess__stream_pub_locate_failed(p, err);
    /* else: a declare or query on a connection that reset; its slot pass
     * (conn_reset) decides. */
    p->refs--;
    ess__stream_pub_put(p);
    ess__stream_req_free(r);
}

/* Gives p a free slot on k (which has one) and declares it once k is ready. */
static void take_slot(ess_stream_pub_t *p, ess__stream_conn_t *k)
{
    int id = 0;
    while (k->pubs[id] != NULL)
        id++;
    k->pubs[id] = p;
    k->npubs++;
    p->conn = k;
    p->id = id;
    if (k->state == C_READY)
        ess__stream_send_declare(p);
}

void ess__stream_pub_attach(ess_stream_pub_t *p, const char *host, int port)
{
    ess__stream_conn_t *k = ess__stream_conn_for(p->c, host, port, 1);
    if (!ess__stream_conn_usable(k)) {
        ess__stream_pub_locate_failed(p, ESS_ECONN);
        ess__stream_conn_maybe_idle(k);
        return;
    }
    take_slot(p, k);
}

/* From the client's retry timer: publishers whose backoff ran out look
 * for the leader again; the timer is re-armed for the next one due. */
void ess__stream_pub_retry(ess_stream_client_t *c)
{
    uint64_t now = uv_now(c->loop), next = UINT64_MAX;
    for (ess_stream_pub_t *p = c->pubs; p && !c->closing; p = p->next) {
        if (p->dead || !p->needs_locate || p->conn != NULL)
            continue;
        if (p->retry_at > now) {
            if (p->retry_at - now < next)
                next = p->retry_at - now;
            continue;
        }
        if (c->lb_mode) {
            p->needs_locate = 0;
            take_slot(p,
                      ess__stream_conn_for(c, c->nodes[c->node].host, c->nodes[c->node].port, 1));
        } else if (c->locator != NULL) {
            p->needs_locate = 0;
            ess__stream_req_t *r = ess__stream_req_new(R_LOCATE_PUB, p->stream);
            r->pub = p;
            p->refs++;
            ess__stream_conn_queue_req(c->locator, r);
        }
    }
    if (next != UINT64_MAX)
        arm_retry(c, next);
}

void ess__stream_on_confirm(ess__stream_conn_t *k, const ess_proto_frame_t *f, int is_error)
{
    ess_stream_pub_t *p = f->u.pub.pub_id < MAX_PUBS ? k->pubs[f->u.pub.pub_id] : NULL;
    if (p == NULL || p->dead || p->user_gone || !p->cbs.on_confirm)
        return;
    p->depth++;
    for (uint32_t i = 0; i < f->u.pub.count && !p->user_gone && !k->c->closing; i++) {
        uint16_t code = ESS_PROTO_OK;
        uint64_t id = is_error ? ess_proto_error_id(f, i, &code) : ess_proto_confirm_id(f, i);
        if (ess_pubq_take(&p->q, id)) /* once per id, even when resent */
            p->cbs.on_confirm(p, id, ess_proto_code_to_ess(code), p->ud);
    }
    p->depth--;
    ess__stream_pub_put(p);
}

int ess_stream_publisher_create_ref(ess_stream_client_t *c, const char *stream, const char *ref,
                                    const ess_stream_pub_cbs_t *cbs, void *ud,
                                    ess_stream_pub_t **out)
{
    if (c == NULL || cbs == NULL || !ess__stream_name_ok(stream) ||
        (ref != NULL && !ess__stream_name_ok(ref)))
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess_stream_pub_t *p = ess_xcalloc(1, sizeof *p);
    p->c = c;
    p->stream = ess_xstrdup(stream);
    p->ref = ref ? ess_xstrdup(ref) : NULL;
    p->cbs = *cbs;
    p->ud = ud;
    p->next_id = 1;
    ess_pubq_init(&p->q);
    ESS__LIST_PUSH(c->pubs, p);
    *out = p;
    if (c->locator == NULL || !ess__stream_conn_usable(c->locator) ||
        (c->lb_mode && c->locator->npubs >= MAX_PUBS)) {
        ess__stream_req_t *r = ess__stream_req_new(R_PUB_FAIL, NULL);
        r->pub = p;
        p->refs++;
        ess__stream_defer(c, r, ESS_ECONN);
    } else if (c->lb_mode) {
        take_slot(p, ess__stream_conn_for(c, c->nodes[c->node].host, c->nodes[c->node].port, 1));
    } else {
        ess__stream_req_t *r = ess__stream_req_new(R_LOCATE_PUB, stream);
        r->pub = p;
        p->refs++;
        ess__stream_conn_queue_req(c->locator, r);
    }
    return ESS_OK;
}

int ess_stream_publisher_create(ess_stream_client_t *c, const char *stream,
                                const ess_stream_pub_cbs_t *cbs, void *ud, ess_stream_pub_t **out)
{
    return ess_stream_publisher_create_ref(c, stream, NULL, cbs, ud, out);
}

int ess_stream_publish(ess_stream_pub_t *p, const uint8_t *const *msgs, const size_t *lens,
                       size_t n, uint64_t *first_id)
{
    if (p == NULL || (n && (msgs == NULL || lens == NULL)))
        return ESS_EINVAL;
    ess__stream_conn_t *k = p->conn;
    if (p->dead || p->user_gone || !p->ever_ready)
        return ESS_ESTATE;
    int live = p->ready && k != NULL && k->state == C_READY;
    uint32_t fm = live && k->frame_max ? k->frame_max : p->frame_max;
    size_t limit = fm ? fm : RECV_LIMIT;
    for (size_t i = 0; i < n; i++)
        if (ess_proto_publish_size(1, lens[i]) > limit)
            return ESS_ETOOBIG;
    if (first_id)
        *first_id = p->next_id;
    for (size_t i = 0; i < n; i++) {
        int rc = ess_pubq_push(&p->q, p->next_id + i, msgs[i], lens[i]);
        ESS_ASSERT(rc == ESS_OK); /* ids only grow */
    }
    uint64_t first = p->next_id;
    p->next_id += n;
    if (!live)
        return ESS_OK; /* queued: sent after the re-declare */
    ess_proto_buf_t b = {0};
    enc_run(&b, p, limit, first, msgs, lens, n);
    ess__stream_conn_write(k, &b);
    return ESS_OK;
}

void ess_stream_publisher_close(ess_stream_pub_t *p)
{
    if (p == NULL || p->user_gone)
        return;
    p->user_gone = 1;
    ess__stream_conn_t *k = p->conn;
    if (k && p->on_wire && k->state == C_READY) {
        ess_proto_buf_t b = {0};
        ess_proto_enc_delete_publisher(&b, ++k->next_corr, (uint8_t)p->id);
        ess__stream_conn_write(k, &b);
    }
    p->dead = 1;
    p->needs_locate = 0;
    pub_slot_release(p);
    if (k)
        ess__stream_conn_maybe_idle(k);
    ess__stream_pub_put(p);
}
