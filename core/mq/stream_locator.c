/*
 * Answers to the stream client's requests: matching each response to its
 * request, and failing requests when their connection resets. Most of
 * these are Metadata lookups on the locator connection (one node of the
 * client's list, stream_conn.c moves it to the next when it fails): where a
 * subscription's or a publisher's stream lives and which member to use
 * (ess__stream_pick_member: the leader for publishers, the member
 * broker.read_from names for subscriptions, not the node a subscription
 * just lost when there is another), the nodes the answer names (added to
 * the locator's list), whether a stream whose
 * subscriptions the broker dropped still exists, and the public exists,
 * create and delete calls. StreamStats (ess_stream_stats) also goes to the
 * locator, and only to a broker whose `version` says 3.11 or later.
 *
 * Requests are owned by the connection they are queued on and freed here
 * once answered or failed; a request holds a reference on its subscription
 * or publisher until then.
 */
#include <string.h>

#include "ess.h"
#include "mq/stream_internal.h"
#include "util/log.h"

static void on_recheck(ess_stream_client_t *c, ess__stream_req_t *r, int status);

void ess__stream_req_fail(ess_stream_client_t *c, ess__stream_req_t *r, int err)
{
    switch (r->kind) {
    case R_SUBSCRIBE:
    case R_UNSUBSCRIBE:
        /* The slot pass of conn_reset decides what happens to the sub. */
        r->sub->refs--;
        if (r->kind == R_UNSUBSCRIBE)
            ess__stream_sub_slot_release(r->sub);
        ess__stream_sub_put(r->sub);
        break;
    case R_LOCATE_SUB:
        if (r->sub->ever_live && !r->sub->dead && !c->closing && c->locator != NULL) {
            /* A live subscription waits for the locator to come back. */
            r->sent = 0;
            ess__stream_conn_add_req(c->locator, r);
            return;
        }
        /* The request's reference is dropped after sub_fail: it ends with
         * a put of its own, which would free the sub read below. */
        ess__stream_sub_fail(r->sub, err);
        r->sub->refs--;
        ess__stream_sub_put(r->sub);
        break;
    case R_LOCATE_PUB:
    case R_DECLARE_PUB:
    case R_QUERY_SEQ: ess__stream_pub_req_fail(c, r, err); return; /* frees or requeues r */
    case R_EXISTS:
    case R_CREATE:
    case R_DELETE:
        if (r->cb && !c->closing)
            r->cb(err, r->ud);
        break;
    case R_RECHECK:
        if (!c->closing)
            uv_timer_start(&c->retry_timer, ess__stream_on_retry_timer, RESUB_RETRY_MS, 0);
        break;
    case R_STATS:
        if (r->stats_cb && !c->closing)
            r->stats_cb(err, NULL, r->ud);
        break;
    default: break;
    }
    ess__stream_req_free(r);
}

/* A StreamStats answer: first and committed chunk ids are required (a
 * broker that answers without them broke the protocol); last is optional. */
static void on_stats(ess_stream_client_t *c, ess__stream_req_t *r, int status,
                     const ess_proto_frame_t *f)
{
    ess_stream_stats_t st = {-1, -1, -1};
    if (status == ESS_OK &&
        (ess_proto_stats_get(f, "first_chunk_id", &st.first_chunk_id) != ESS_OK ||
         ess_proto_stats_get(f, "committed_chunk_id", &st.committed_chunk_id) != ESS_OK))
        status = ESS_EPROTO;
    if (status == ESS_OK && ess_proto_stats_get(f, "last_chunk_id", &st.last_chunk_id) != ESS_OK)
        st.last_chunk_id = -1;
    if (r->stats_cb && !c->closing)
        r->stats_cb(status, status == ESS_OK ? &st : NULL, r->ud);
}

int ess__stream_pick_member(int read_from, const ess__stream_member_t *m, size_t n, int for_pub)
{
    if (n == 0)
        return -1;
    if (for_pub || read_from == ESS_READ_LEADER)
        return m[0].host ? 0 : -1;
    /* Candidates in order of preference; the first usable one that is not
     * the node just lost wins, else the first usable one. */
    size_t order[1 + 255], k = 0;
    if (read_from == ESS_READ_ANY)
        for (size_t i = 0; i < n; i++)
            if (m[i].connected && !m[i].avoid)
                order[k++] = i;
    for (size_t i = 1; i < n && k < ESS_ARRAY_SIZE(order) - 1; i++)
        order[k++] = i;
    order[k++] = 0;
    for (size_t i = 0; i < k; i++)
        if (m[order[i]].host && !m[order[i]].avoid)
            return (int)order[i];
    for (size_t i = 0; i < k; i++)
        if (m[order[i]].host)
            return (int)order[i];
    return -1;
}

/* Metadata names every member node: the locator may use them later. */
static void learn_nodes(ess_stream_client_t *c, const ess_proto_frame_t *f)
{
    if (c->lb_mode)
        return; /* advertised hosts are not reachable through a load balancer */
    for (uint32_t i = 0; i < f->u.metadata.brokers; i++) {
        ess_proto_broker_t b;
        if (ess_proto_metadata_broker(f, i, &b) != ESS_OK || b.host.p == NULL)
            continue;
        int before = c->nnodes;
        ess__stream_node_add(c, b.host.p, b.host.len, (int)b.port, 1);
        if (c->nnodes > before)
            ess_log_debug("stream: learned node %s:%d from Metadata", c->nodes[before].host,
                          c->nodes[before].port);
    }
}

static int connected_to(ess_stream_client_t *c, const ess_proto_str_t *host, int port)
{
    for (ess__stream_conn_t *k = c->conns; k; k = k->next) {
        if (k->state != C_READY)
            continue;
        const char *h = k->adv_host ? k->adv_host : k->host;
        int p = k->adv_host ? k->adv_port : k->port;
        if (p == port && strlen(h) == host->len && memcmp(h, host->p, host->len) == 0)
            return 1;
    }
    return 0;
}

/* Host and port of the member of a stream that s (or a publisher, when s
 * is NULL: the leader) should use. */
static int pick_host(ess_stream_client_t *c, const ess_proto_frame_t *f, ess_stream_sub_t *s,
                     ess_proto_str_t *host, uint32_t *port, int *status)
{
    ess_proto_stream_meta_t m;
    if (ess_proto_metadata_stream(f, 0, &m) != ESS_OK) {
        *status = ESS_EPROTO;
        return -1;
    }
    *status = ess_proto_code_to_ess(m.code);
    if (*status != ESS_OK)
        return -1;
    ess__stream_member_t mem[1 + 255];
    size_t n = 1 + (m.replicas < 255 ? m.replicas : 255);
    memset(mem, 0, sizeof mem[0] * n);
    for (size_t i = 0; i < n; i++) {
        uint16_t ref = i == 0 ? m.leader : ess_proto_replica_ref(&m, (uint32_t)(i - 1));
        for (uint32_t j = 0; j < f->u.metadata.brokers; j++) {
            ess_proto_broker_t b;
            if (ess_proto_metadata_broker(f, j, &b) == ESS_OK && b.ref == ref && b.host.p &&
                b.port > 0 && b.port <= 65535) {
                mem[i].host = b.host.p;
                mem[i].hostlen = b.host.len;
                mem[i].port = (int)b.port;
                break;
            }
        }
        if (mem[i].host == NULL)
            continue;
        mem[i].connected =
            connected_to(c, &(ess_proto_str_t){mem[i].host, mem[i].hostlen}, mem[i].port);
        mem[i].avoid = s && s->avoid_host && s->avoid_port == mem[i].port &&
                       strlen(s->avoid_host) == mem[i].hostlen &&
                       memcmp(s->avoid_host, mem[i].host, mem[i].hostlen) == 0;
    }
    int i = ess__stream_pick_member(c->read_from, mem, n, s == NULL);
    if (i < 0) {
        *status = ESS_ECONN; /* no leader known: stream not available */
        return -1;
    }
    host->p = mem[i].host;
    host->len = mem[i].hostlen;
    *port = (uint32_t)mem[i].port;
    return 0;
}

void ess__stream_on_response(ess__stream_conn_t *k, const ess_proto_frame_t *f)
{
    ess_stream_client_t *c = k->c;
    ess__stream_req_t *r = ess__stream_conn_answered(k, f->corr);
    if (r == NULL)
        return;
    int status = ess_proto_code_to_ess(f->code);
    uint16_t key = f->key & (uint16_t)~ESS_PROTO_RESPONSE;
    int is_meta = key == ESS_PROTO_METADATA;
    if (is_meta)
        learn_nodes(c, f);
    if (is_meta && status == ESS_OK) {
        ess_proto_stream_meta_t m;
        status = ess_proto_metadata_stream(f, 0, &m) == ESS_OK ? ess_proto_code_to_ess(m.code)
                                                               : ESS_EPROTO;
    }
    switch (r->kind) {
    case R_SUBSCRIBE: ess__stream_on_subscribe_resp(k, r, status); break;
    case R_UNSUBSCRIBE:
        r->sub->refs--;
        ess__stream_sub_slot_release(r->sub);
        ess__stream_sub_put(r->sub);
        ess__stream_conn_maybe_idle(k);
        break;
    case R_EXISTS:
    case R_CREATE:
    case R_DELETE:
        if (r->cb && !c->closing)
            r->cb(status, r->ud);
        break;
    case R_LOCATE_SUB:
    case R_LOCATE_PUB: {
        ess_proto_str_t host;
        uint32_t port = 0;
        int st = ESS_OK;
        int is_sub = r->kind == R_LOCATE_SUB;
        int dead = is_sub ? r->sub->dead : r->pub->dead;
        /* Keep the request's reference until the end: sub_fail/pub_fail
         * would otherwise free the object that sub_put reads below. */
        if (!dead && is_meta && pick_host(c, f, is_sub ? r->sub : NULL, &host, &port, &st) == 0 &&
            port > 0 && port <= 65535) {
            char *h = ess_xstrndup(host.p, host.len);
            if (is_sub)
                ess__stream_sub_attach(r->sub, h, (int)port, 0);
            else
                ess__stream_pub_attach(r->pub, h, (int)port);
            free(h);
        } else if (!dead) {
            if (is_sub && r->sub->ever_live && st == ESS_ENOTFOUND) {
                ess__stream_sub_end(r->sub, st);
            } else if (is_sub && r->sub->ever_live) {
                r->sub->needs_locate = 1; /* e.g. no leader yet: ask again later */
                uv_timer_start(&c->retry_timer, ess__stream_on_retry_timer, RESUB_RETRY_MS, 0);
            } else if (is_sub) {
                ess__stream_sub_fail(r->sub, is_meta ? st : ESS_EPROTO);
            } else
                ess__stream_pub_locate_failed(r->pub, is_meta ? st : ESS_EPROTO);
        }
        if (is_sub) {
            r->sub->refs--;
            ess__stream_sub_put(r->sub);
        } else {
            r->pub->refs--;
            ess__stream_pub_put(r->pub);
        }
        break;
    }
    case R_RECHECK: on_recheck(c, r, status); break;
    case R_STATS: on_stats(c, r, key == ESS_PROTO_STREAM_STATS ? status : ESS_EPROTO, f); break;
    case R_DECLARE_PUB: ess__stream_on_declare_resp(k, r, status); break;
    case R_QUERY_SEQ: ess__stream_on_query_seq_resp(k, r, f, status); break;
    default: break;
    }
    ess__stream_req_free(r);
}

/* The broker dropped the subscriptions of a stream (deleted, or its
 * leader moved): ask Metadata whether it still exists. */
void ess__stream_on_metadata_update(ess__stream_conn_t *k, const ess_proto_frame_t *f)
{
    ess_stream_client_t *c = k->c;
    const ess_proto_str_t *st = &f->u.update_stream;
    int any = 0;
    for (int i = 0; i < MAX_SUBS; i++) {
        ess_stream_sub_t *s = k->subs[i];
        if (s == NULL || st->p == NULL || strlen(s->stream) != st->len ||
            memcmp(s->stream, st->p, st->len) != 0)
            continue;
        s->on_wire = s->live = 0;
        s->credit_out = 0;
        if (s->dead) {
            ess__stream_sub_slot_release(s);
            ess__stream_sub_put(s);
        } else {
            s->needs_resub = 1;
            any = 1;
        }
    }
    for (int i = 0; i < MAX_PUBS && !c->closing; i++) {
        ess_stream_pub_t *p = k->pubs[i];
        if (p && strlen(p->stream) == st->len && st->p && memcmp(p->stream, st->p, st->len) == 0)
            ess__stream_pub_lost(p, ESS_ECONN); /* Metadata says whether it still exists */
    }
    if (any && c->locator) {
        ess__stream_req_t *r = ess__stream_req_new(R_RECHECK, NULL);
        r->stream = ess_xstrndup(st->p, st->len);
        ess__stream_conn_queue_req(c->locator, r);
    }
    ess__stream_conn_maybe_idle(k);
}

static void on_recheck(ess_stream_client_t *c, ess__stream_req_t *r, int status)
{
    for (ess__stream_conn_t *k = c->conns; k && !c->closing; k = k->next) {
        for (int i = 0; i < MAX_SUBS && !c->closing; i++) {
            ess_stream_sub_t *s = k->subs[i];
            if (s == NULL || s->dead || !s->needs_resub || strcmp(s->stream, r->stream) != 0)
                continue;
            if (status == ESS_ENOTFOUND)
                ess__stream_sub_end(s, ESS_ENOTFOUND);
            else
                uv_timer_start(&c->retry_timer, ess__stream_on_retry_timer, RESUB_RETRY_MS, 0);
        }
    }
}

/* Sends r on the locator, or fails it on the next loop turn. */
static int locator_req(ess_stream_client_t *c, ess__stream_req_t *r)
{
    if (c->locator == NULL || !ess__stream_conn_usable(c->locator)) {
        r->kind = R_STATUS;
        ess__stream_defer(c, r, ESS_ECONN);
    } else {
        ess__stream_conn_queue_req(c->locator, r);
    }
    return ESS_OK;
}

int ess_stream_exists(ess_stream_client_t *c, const char *stream, ess_stream_status_cb cb, void *ud)
{
    if (c == NULL || !ess__stream_name_ok(stream) || cb == NULL)
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess__stream_req_t *r = ess__stream_req_new(R_EXISTS, stream);
    r->cb = cb;
    r->ud = ud;
    return locator_req(c, r);
}

int ess_stream_create_stream(ess_stream_client_t *c, const char *stream, const ess_proto_kv_t *args,
                             size_t nargs, ess_stream_status_cb cb, void *ud)
{
    if (c == NULL || !ess__stream_name_ok(stream) || nargs > 64 || (nargs && args == NULL))
        return ESS_EINVAL;
    for (size_t i = 0; i < nargs; i++)
        if (!ess__stream_name_ok(args[i].key) || !ess__stream_name_ok(args[i].value))
            return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess__stream_req_t *r = ess__stream_req_new(R_CREATE, stream);
    r->cb = cb;
    r->ud = ud;
    if (nargs) {
        r->args = ess_xcalloc(nargs, sizeof *r->args);
        r->nargs = nargs;
        for (size_t i = 0; i < nargs; i++) {
            r->args[i].key = ess_xstrdup(args[i].key);
            r->args[i].value = ess_xstrdup(args[i].value);
        }
    }
    return locator_req(c, r);
}

int ess_stream_delete_stream(ess_stream_client_t *c, const char *stream, ess_stream_status_cb cb,
                             void *ud)
{
    if (c == NULL || !ess__stream_name_ok(stream))
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess__stream_req_t *r = ess__stream_req_new(R_DELETE, stream);
    r->cb = cb;
    r->ud = ud;
    return locator_req(c, r);
}

int ess_stream_stats(ess_stream_client_t *c, const char *stream, ess_stream_stats_cb cb, void *ud)
{
    if (c == NULL || !ess__stream_name_ok(stream) || cb == NULL)
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess__stream_req_t *r = ess__stream_req_new(R_STATS, stream);
    r->stats_cb = cb;
    r->ud = ud;
    /* Sent once the locator is ready, and only to a 3.11+ broker
     * (ess__stream_conn_send_req answers ESS_ENOTSUP otherwise). */
    if (c->locator == NULL || !ess__stream_conn_usable(c->locator))
        ess__stream_defer(c, r, ESS_ECONN);
    else
        ess__stream_conn_queue_req(c->locator, r);
    return ESS_OK;
}
