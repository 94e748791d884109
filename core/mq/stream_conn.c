/*
 * One TCP connection of the stream client to a RabbitMQ node: resolving
 * the host, connecting, the handshake (peer properties, SASL PLAIN, tune,
 * open), heartbeats, reconnecting with backoff and jitter (the locator,
 * and every connection in load-balancer mode, moves to the next node of
 * the client's list first; a subscription whose node is lost asks
 * Metadata again, preferring another member), the read budget
 * that keeps one connection from holding the loop for a whole turn, and
 * splitting the byte stream into frames that it hands to the subscription,
 * publisher and response handlers. It also sends requests and queues them
 * until the handshake completes.
 *
 * A connection owns its libuv handles (TCP socket, timer) and its read
 * buffer, and is freed only after both handles' close callbacks ran. It
 * holds slots for subscriptions and publishers but does not own them: a
 * reset fails or moves them (stream_sub.c, stream_pub.c decide how) and
 * fails its pending requests (stream_locator.c). Not here: what a frame
 * means once dispatched.
 */
#include <string.h>

#include "ess.h"
#include "mq/stream_internal.h"
#include "util/log.h"

#define READ_BUDGET (256 * 1024) /* bytes of frames handled per connection per loop turn */
#define CONNECT_TIMEOUT_MS 10000
/* A session that lived this long resets the backoff; shorter ones (the
 * broker accepts, then drops us again) keep growing it. */
#define HEALTHY_MS 10000

enum { HS_PEER, HS_SASL_HS, HS_SASL_AUTH, HS_TUNE, HS_OPEN };

struct ess__stream_gai_s {
    uv_getaddrinfo_t req;
    ess__stream_conn_t *k;
};

static void conn_start(ess__stream_conn_t *k);
static void on_conn_timer(uv_timer_t *t);
static void on_turn(uv_idle_t *h);
static void schedule_retry(ess__stream_conn_t *k);

int ess__stream_conn_usable(const ess__stream_conn_t *k)
{
    return k->state <= C_READY;
}

int ess__stream_conn_has_311(const ess__stream_conn_t *k)
{
    const char *v = k->version;
    if (v == NULL || *v < '0' || *v > '9')
        return 0;
    char *end;
    long major = strtol(v, &end, 10), minor = 0;
    if (*end == '.' && end[1] >= '0' && end[1] <= '9')
        minor = strtol(end + 1, NULL, 10);
    return major > 3 || (major == 3 && minor >= 11);
}

/* Keep the broker's `version` peer property (PeerProperties response) for
 * this session: newer commands are sent only to a broker that has them. */
static void note_version(ess__stream_conn_t *k, const ess_proto_frame_t *f)
{
    free(k->version);
    k->version = NULL;
    ess_proto_str_t key, val;
    for (uint32_t i = 0; i < f->u.kv.count; i++) {
        if (ess_proto_kv_at(f->u.kv.p, f->u.kv.len, i, &key, &val) != ESS_OK)
            break;
        if (key.len == 7 && memcmp(key.p, "version", 7) == 0 && val.p != NULL && val.len > 0 &&
            val.len < 64) {
            k->version = ess_xstrndup(val.p, val.len);
            break;
        }
    }
    ess_log_debug("stream: %s:%d is RabbitMQ %s", k->host, k->port,
                  k->version ? k->version : "(no version)");
}

static void on_write(uv_write_t *w, int status)
{
    ess__stream_conn_t *k = w->data;
    if (status < 0 && status != UV_ECANCELED && k != NULL && k->state == C_READY &&
        !k->c->closing) {
        k->pending_err = ESS_ECONN;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    }
    free(w);
}

/* Sends what k->wbuf holds in one write. Write errors reset the
 * connection from its timer, never from inside the caller's stack. */
static void conn_flush(ess__stream_conn_t *k)
{
    ess_proto_buf_t *b = &k->wbuf;
    if (b->len == 0)
        return;
    if (!k->tcp_open) {
        b->len = 0;
        return;
    }
    uv_write_t *w = ess_xmalloc(sizeof *w + b->len);
    memcpy(w + 1, b->data, b->len);
    uv_buf_t buf = uv_buf_init((char *)(w + 1), (unsigned)b->len);
    w->data = k;
    b->len = 0;
    if (b->cap > 65536) /* a burst's worth: not kept for the connection's life */
        ess_proto_buf_free(b);
    int rc = uv_write(w, (uv_stream_t *)&k->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(w);
        k->pending_err = ESS_ECONN;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    }
}

static void on_turn(uv_idle_t *h);

/* Queues the frames in b (which is emptied) for this loop turn's one
 * write per connection: a burst of subscriptions or the credit of many
 * small chunks costs a system call per turn, not per frame. The client's
 * turn handle (an idle handle: the poll after it does not block) sends
 * them at the start of the next turn; a connection about to close sends
 * them first. */
void ess__stream_conn_write(ess__stream_conn_t *k, ess_proto_buf_t *b)
{
    if (b->len == 0)
        return;
    if (!k->tcp_open || k->state > C_READY || k->c->closing) {
        ess_proto_buf_free(b);
        return;
    }
    ess_proto_buf_t *q = &k->wbuf;
    if (q->len == 0 && q->cap == 0) { /* take b's buffer as it is */
        *q = *b;
        memset(b, 0, sizeof *b);
    } else {
        if (q->cap - q->len < b->len) {
            size_t cap = q->cap ? q->cap : 4096;
            while (cap - q->len < b->len)
                cap *= 2;
            q->data = ess_xrealloc(q->data, cap);
            q->cap = cap;
        }
        memcpy(q->data + q->len, b->data, b->len);
        q->len += b->len;
        ess_proto_buf_free(b);
    }
    k->c->wpending = 1;
    uv_idle_start(&k->c->turn, on_turn);
}

static void conn_unlink_free(ess__stream_conn_t *k)
{
    ess_stream_client_t *c = k->c;
    for (ess__stream_conn_t **pp = &c->conns; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    if (c->locator == k)
        c->locator = NULL;
    ess_proto_buf_free(&k->rbuf);
    ess_proto_buf_free(&k->wbuf);
    free(k->host);
    free(k->adv_host);
    free(k->version);
    free(k);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    ess__stream_conn_t *k = h->data;
    ess_stream_client_t *c = k->c;
    k->handles--;
    c->handles--;
    if (c->closing) {
        ess__stream_client_maybe_finish(c);
        return;
    }
    if (k->state == C_DEAD) {
        if (k->handles == 0)
            conn_unlink_free(k);
        return;
    }
    /* The TCP handle of a reset connection is closed: back off, retry. */
    if (k->state == C_CLOSING)
        schedule_retry(k);
}

/* 1 when k moves to the next node of the client's list after a failure:
 * the locator, and every connection in load-balancer mode. */
static int rotates(const ess__stream_conn_t *k)
{
    return (k->is_locator || k->c->lb_mode) && k->c->nnodes > 1;
}

/* Points k at the node after its current one in the client's list (the
 * next locator candidate); its advertised name goes with the old node. */
static void next_node(ess__stream_conn_t *k)
{
    ess_stream_client_t *c = k->c;
    int cur = k->is_locator ? c->node : -1;
    if (cur < 0)
        for (int i = 0; i < c->nnodes && cur < 0; i++)
            if (c->nodes[i].port == k->port && strcmp(c->nodes[i].host, k->host) == 0)
                cur = i;
    int next = (cur + 1) % c->nnodes;
    if (k->is_locator)
        c->node = next;
    free(k->host);
    k->host = ess_xstrdup(c->nodes[next].host);
    k->port = c->nodes[next].port;
    free(k->adv_host);
    k->adv_host = NULL;
    k->adv_port = 0;
}

static void schedule_retry(ess__stream_conn_t *k)
{
    ess_stream_client_t *c = k->c;
    {
        /* Over a list of nodes the delay grows once per round, so a lost
         * node is followed at once by the next one. */
        int round = rotates(k) ? (k->attempts - 1) / c->nnodes + 1 : k->attempts;
        uint32_t d = (uint32_t)c->min_ms;
        for (int i = 1; i < round && d < (uint32_t)c->max_ms; i++)
            d *= 2;
        if (d > (uint32_t)c->max_ms)
            d = (uint32_t)c->max_ms;
        d = d / 2 + ess__stream_jitter(c, d / 2 + 1);
        k->state = C_WAIT;
        ess_log_debug("stream: reconnecting to %s:%d in %u ms", k->host, k->port, d);
        uv_timer_start(&k->timer, on_conn_timer, d, 0);
    }
}

/* Drops an idle non-locator connection, or any connection when the client
 * closes; its memory goes with its handles. A dead one is left as it is. */
void ess__stream_conn_destroy(ess__stream_conn_t *k)
{
    if (k->state == C_DEAD)
        return;
    k->state = C_DEAD;
    k->gen++;
    if (k->gai) {
        k->gai->k = NULL;
        uv_cancel((uv_req_t *)&k->gai->req);
        k->gai = NULL;
    }
    if (k->tcp_open) {
        conn_flush(k);
        k->tcp_open = 0;
        uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    }
    uv_close((uv_handle_t *)&k->timer, on_conn_handle_closed);
}

void ess__stream_conn_maybe_idle(ess__stream_conn_t *k)
{
    if (!k->is_locator && k->nsubs == 0 && k->npubs == 0 && k->reqs == NULL && k->state != C_DEAD &&
        !k->c->closing)
        ess__stream_conn_destroy(k);
}

/* Tears down the TCP session after an error: fails pending requests and
 * never-live subscriptions, keeps live ones for the next session. */
static void conn_reset(ess__stream_conn_t *k, int err)
{
    ess_stream_client_t *c = k->c;
    if (k->state >= C_CLOSING || c->closing)
        return;
    if (k->state == C_READY) {
        ess_log_warn("stream: connection to %s:%d lost (%s)", k->host, k->port, ess_strerror(err));
        c->conns_lost++;
    } else
        ess_log_debug("stream: connecting to %s:%d failed (%s)", k->host, k->port,
                      ess_strerror(err));
    if (k->state == C_READY && uv_now(c->loop) - k->ready_since >= HEALTHY_MS)
        k->attempts = 0;
    int was_ready = k->state == C_READY;
    /* The node subscriptions lost here: Metadata may still name it for a
     * while, so they prefer another member. */
    const char *lost_host = k->adv_host ? k->adv_host : k->host;
    int lost_port = k->adv_host ? k->adv_port : k->port, relocate_later = 0;
    k->gen++;
    k->state = C_CLOSING;
    k->attempts++;
    k->pending_err = 0;
    k->rbuf.len = 0;
    k->read_held = 0;
    k->turn_bytes = 0;
    k->frame_max = 0;
    uv_timer_stop(&k->timer);
    if (k->gai) {
        k->gai->k = NULL;
        uv_cancel((uv_req_t *)&k->gai->req);
        k->gai = NULL;
    }
    int had_tcp = k->tcp_open;
    if (k->tcp_open) {
        conn_flush(k); /* a Close response, say */
        k->tcp_open = 0;
        uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    }
    ess__stream_req_t *reqs = ess__stream_conn_take_reqs(k);
    while (reqs) {
        ess__stream_req_t *r = reqs;
        reqs = r->next;
        ess__stream_req_fail(c, r, err);
    }
    for (int i = 0; i < MAX_SUBS && !c->closing; i++) {
        ess_stream_sub_t *s = k->subs[i];
        if (s == NULL)
            continue;
        s->on_wire = s->live = 0;
        s->credit_out = 0;
        if (s->dead) {
            ess__stream_sub_slot_release(s);
            ess__stream_sub_put(s);
        } else if (!s->ever_live) {
            ess__stream_sub_fail(s, err);
        } else if (!c->lb_mode && c->locator != NULL) {
            /* The node may be gone for good: ask Metadata where the stream
             * lives now rather than retrying this host forever (also for
             * subscriptions sharing the locator: it may come back on
             * another node). A connection that never came up is asked
             * about again after RESUB_RETRY_MS, not in a tight loop. */
            free(s->avoid_host);
            s->avoid_host = ess_xstrdup(lost_host);
            s->avoid_port = lost_port;
            ess__stream_sub_slot_release(s);
            if (was_ready) {
                ess__stream_req_t *r = ess__stream_req_new(R_LOCATE_SUB, s->stream);
                r->sub = s;
                s->refs++;
                ess__stream_conn_queue_req(c->locator, r);
            } else {
                s->needs_locate = 1;
                relocate_later = 1;
            }
        }
    }
    if (relocate_later && !c->closing)
        uv_timer_start(&c->retry_timer, ess__stream_on_retry_timer, RESUB_RETRY_MS, 0);
    for (int i = 0; i < MAX_PUBS && !c->closing; i++) {
        ess_stream_pub_t *p = k->pubs[i];
        if (p != NULL)
            ess__stream_pub_lost(p, err == ESS_OK ? ESS_ECONN : err);
    }
    if (c->closing || k->state != C_CLOSING)
        return;
    if (!k->is_locator && k->nsubs == 0 && k->npubs == 0) {
        ess__stream_conn_destroy(k);
        return;
    }
    if (rotates(k)) {
        next_node(k);
        ess_log_info("stream: %s connection tries %s:%d next",
                     k->is_locator ? "locator" : "load-balancer", k->host, k->port);
    }
    if (!had_tcp)
        schedule_retry(k); /* no handle to wait for */
}

void ess__stream_conn_add_req(ess__stream_conn_t *k, ess__stream_req_t *r)
{
    r->next = NULL;
    if (k->reqs_last)
        k->reqs_last->next = r;
    else
        k->reqs = r;
    k->reqs_last = r;
}

ess__stream_req_t *ess__stream_conn_take_reqs(ess__stream_conn_t *k)
{
    ess__stream_req_t *r = k->reqs;
    k->reqs = k->reqs_last = NULL;
    return r;
}

ess__stream_req_t *ess__stream_conn_answered(ess__stream_conn_t *k, uint32_t corr)
{
    for (ess__stream_req_t *prev = NULL, *r = k->reqs; r; prev = r, r = r->next) {
        if (!r->sent || r->corr != corr)
            continue;
        if (prev)
            prev->next = r->next;
        else
            k->reqs = r->next;
        if (k->reqs_last == r)
            k->reqs_last = prev;
        r->next = NULL;
        return r;
    }
    return NULL;
}

void ess__stream_conn_send_req(ess__stream_conn_t *k, ess__stream_req_t *r)
{
    ess_proto_buf_t b = {0};
    if (r->kind == R_STATS && !ess__stream_conn_has_311(k)) {
        /* 3.10 would close the connection: answer without asking. */
        ess__stream_defer(k->c, r, ESS_ENOTSUP);
        return;
    }
    r->corr = ++k->next_corr;
    r->sent = 1;
    ess__stream_conn_add_req(k, r);
    int rc = ESS_OK;
    switch (r->kind) {
    case R_SUBSCRIBE: return; /* encoded by send_subscribe */
    case R_UNSUBSCRIBE: rc = ess_proto_enc_unsubscribe(&b, r->corr, (uint8_t)r->sub->id); break;
    case R_EXISTS:
    case R_LOCATE_SUB:
    case R_LOCATE_PUB:
    case R_RECHECK: {
        const char *s = r->stream;
        rc = ess_proto_enc_metadata(&b, r->corr, &s, 1);
        break;
    }
    case R_CREATE: rc = ess_proto_enc_create(&b, r->corr, r->stream, r->args, r->nargs); break;
    case R_DELETE: rc = ess_proto_enc_delete(&b, r->corr, r->stream); break;
    case R_STATS: rc = ess_proto_enc_stream_stats(&b, r->corr, r->stream); break;
    case R_DECLARE_PUB:
    case R_QUERY_SEQ: return; /* encoded by send_declare */
    default: break;
    }
    ESS_ASSERT(rc == ESS_OK); /* arguments were validated by the public calls */
    ess__stream_conn_write(k, &b);
}

/* Queues r on k: sent now when ready, else when the handshake completes. */
void ess__stream_conn_queue_req(ess__stream_conn_t *k, ess__stream_req_t *r)
{
    if (k->state == C_READY) {
        ess__stream_conn_send_req(k, r);
        return;
    }
    r->sent = 0;
    ess__stream_conn_add_req(k, r);
}

/* Remember the node's advertised host:port (Open response properties):
 * Metadata names leaders by it, so a subscription to this node can share
 * this connection (the locator, usually) instead of opening another. */
static void note_advertised(ess__stream_conn_t *k, const ess_proto_frame_t *f)
{
    free(k->adv_host);
    k->adv_host = NULL;
    ess_proto_str_t key, val, host = {NULL, 0};
    int port = 0;
    for (uint32_t i = 0; i < f->u.kv.count; i++) {
        if (ess_proto_kv_at(f->u.kv.p, f->u.kv.len, i, &key, &val) != ESS_OK || val.p == NULL)
            break;
        if (key.len == 15 && memcmp(key.p, "advertised_host", 15) == 0)
            host = val;
        else if (key.len == 15 && memcmp(key.p, "advertised_port", 15) == 0 && val.len < 6)
            for (size_t j = 0; j < val.len && val.p[j] >= '0' && val.p[j] <= '9'; j++)
                port = port * 10 + (val.p[j] - '0');
    }
    if (host.p != NULL && host.len > 0 && port > 0 && port < 65536) {
        k->adv_host = ess_xstrndup(host.p, host.len);
        k->adv_port = port;
        if (k->is_locator && !k->c->lb_mode) {
            /* Metadata names this node by that name: not another node. */
            ess__stream_node_t *n = &k->c->nodes[k->c->node];
            free(n->adv_host);
            n->adv_host = ess_xstrdup(k->adv_host);
            n->adv_port = port;
        }
    }
}

static int conn_is(const ess__stream_conn_t *k, const char *host, int port)
{
    return (k->port == port && strcmp(k->host, host) == 0) ||
           (k->adv_host != NULL && k->adv_port == port && strcmp(k->adv_host, host) == 0);
}

static void on_ready(ess__stream_conn_t *k)
{
    ess_stream_client_t *c = k->c;
    k->state = C_READY;
    k->ready_since = uv_now(c->loop);
    ess_log_info("stream: connected to %s:%d (frame_max %u, heartbeat %u s)", k->host, k->port,
                 k->frame_max, k->heartbeat_s);
    if (k->heartbeat_s)
        uv_timer_start(&k->timer, on_conn_timer, k->heartbeat_s * 500u, k->heartbeat_s * 500u);
    else
        uv_timer_stop(&k->timer);
    /* Unsent requests, oldest first, apart from any already sent. */
    ess__stream_req_t *unsent = NULL, **tail = &unsent;
    for (ess__stream_req_t *r = ess__stream_conn_take_reqs(k), *next; r; r = next) {
        next = r->next;
        if (r->sent) {
            ess__stream_conn_add_req(k, r);
        } else {
            r->next = NULL;
            *tail = r;
            tail = &r->next;
        }
    }
    unsigned gen = k->gen;
    while (unsent && k->gen == gen) {
        ess__stream_req_t *r = unsent;
        unsent = r->next;
        ess__stream_conn_send_req(k, r);
    }
    while (unsent) { /* the connection died meanwhile */
        ess__stream_req_t *r = unsent;
        unsent = r->next;
        ess__stream_req_fail(c, r, ESS_ECONN);
    }
    for (int i = 0; i < MAX_SUBS && k->gen == gen; i++) {
        ess_stream_sub_t *s = k->subs[i];
        if (s && !s->dead && !s->on_wire)
            ess__stream_send_subscribe(s);
    }
    for (int i = 0; i < MAX_PUBS && k->gen == gen; i++) {
        ess_stream_pub_t *p = k->pubs[i];
        if (p && !p->dead && !p->on_wire)
            ess__stream_send_declare(p);
    }
}

static uint32_t min_nz(uint32_t a, uint32_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

static void handshake(ess__stream_conn_t *k, const ess_proto_frame_t *f)
{
    ess_stream_client_t *c = k->c;
    ess_proto_buf_t b = {0};
    uint16_t key = f->key;
    if (key == (ESS_PROTO_PEER_PROPERTIES | ESS_PROTO_RESPONSE) && k->hs == HS_PEER) {
        if (f->code != ESS_PROTO_OK)
            goto fail_proto;
        note_version(k, f);
        k->hs = HS_SASL_HS;
        ess_proto_enc_sasl_handshake(&b, ++k->next_corr);
    } else if (key == (ESS_PROTO_SASL_HANDSHAKE | ESS_PROTO_RESPONSE) && k->hs == HS_SASL_HS) {
        int plain = 0;
        for (uint32_t i = 0; i < f->u.mechs.count; i++) {
            ess_proto_str_t m;
            if (ess_proto_mech_at(f, i, &m) == ESS_OK && m.len == 5 && memcmp(m.p, "PLAIN", 5) == 0)
                plain = 1;
        }
        if (f->code != ESS_PROTO_OK || !plain) {
            ess_log_error("stream: broker %s:%d does not offer SASL PLAIN", k->host, k->port);
            conn_reset(k, ESS_EAUTH);
            return;
        }
        k->hs = HS_SASL_AUTH;
        ess_proto_enc_sasl_plain(&b, ++k->next_corr, c->url.user, c->url.pass);
    } else if (key == (ESS_PROTO_SASL_AUTHENTICATE | ESS_PROTO_RESPONSE) && k->hs == HS_SASL_AUTH) {
        if (f->code != ESS_PROTO_OK) {
            ess_log_error("stream: login as '%s' refused by %s:%d: %s", c->url.user, k->host,
                          k->port, ess_proto_code_name(f->code));
            conn_reset(k, ESS_EAUTH);
            return;
        }
        k->hs = HS_TUNE;
    } else if (key == ESS_PROTO_TUNE && k->hs == HS_TUNE) {
        k->frame_max = min_nz(f->u.tune.frame_max, c->frame_max);
        if (k->frame_max < ESS_PROTO_MIN_FRAME_MAX)
            k->frame_max = ESS_PROTO_MIN_FRAME_MAX;
        k->heartbeat_s = min_nz(f->u.tune.heartbeat_s, (uint32_t)c->heartbeat_s);
        ess_proto_enc_tune(&b, k->frame_max, k->heartbeat_s);
        k->hs = HS_OPEN;
        ess_proto_enc_open(&b, ++k->next_corr, c->url.vhost);
    } else if (key == (ESS_PROTO_OPEN | ESS_PROTO_RESPONSE) && k->hs == HS_OPEN) {
        if (f->code != ESS_PROTO_OK) {
            ess_log_error("stream: opening vhost '%s' refused: %s", c->url.vhost,
                          ess_proto_code_name(f->code));
            conn_reset(k, ESS_EAUTH);
            return;
        }
        note_advertised(k, f);
        on_ready(k);
        return;
    } else if (key == ESS_PROTO_HEARTBEAT) {
        return;
    } else {
        goto fail_proto;
    }
    ess__stream_conn_write(k, &b);
    return;
fail_proto:
    ess_log_error("stream: unexpected frame 0x%04x (code %u) during handshake with %s:%d", key,
                  f->code, k->host, k->port);
    conn_reset(k, ESS_EPROTO);
}

ess__stream_conn_t *ess__stream_conn_new(ess_stream_client_t *c, const char *host, int port,
                                         int is_locator)
{
    ess__stream_conn_t *k = ess_xcalloc(1, sizeof *k);
    k->c = c;
    k->host = ess_xstrdup(host);
    k->port = port;
    k->is_locator = is_locator;
    k->next = c->conns;
    c->conns = k;
    uv_timer_init(c->loop, &k->timer);
    k->timer.data = k;
    k->handles++;
    c->handles++;
    conn_start(k);
    return k;
}

/* A connection to host:port with a free subscription slot, or a new one. */
ess__stream_conn_t *ess__stream_conn_for(ess_stream_client_t *c, const char *host, int port,
                                         int pubs)
{
    ess__stream_conn_t *best = NULL;
    for (ess__stream_conn_t *k = c->conns; k; k = k->next) {
        if (k->state == C_DEAD || !conn_is(k, host, port))
            continue;
        if ((pubs ? k->npubs >= MAX_PUBS : k->nsubs >= MAX_SUBS))
            continue;
        if (best == NULL || (ess__stream_conn_usable(k) && !ess__stream_conn_usable(best)))
            best = k;
    }
    return best ? best : ess__stream_conn_new(c, host, port, 0);
}

static void handle_frame(ess__stream_conn_t *k, const uint8_t *p, size_t len)
{
    ess_proto_frame_t f;
    int rc = ess_proto_decode(p, len, &f);
    if (rc != ESS_OK) {
        ess_log_error("stream: malformed frame from %s:%d: %s", k->host, k->port, ess_strerror(rc));
        conn_reset(k, ESS_EPROTO);
        return;
    }
    if (k->state == C_HANDSHAKE) {
        handshake(k, &f);
        return;
    }
    switch (f.key) {
    case ESS_PROTO_DELIVER: ess__stream_on_deliver(k, &f); break;
    case ESS_PROTO_HEARTBEAT: break;
    case ESS_PROTO_PUBLISH_CONFIRM: ess__stream_on_confirm(k, &f, 0); break;
    case ESS_PROTO_PUBLISH_ERROR: ess__stream_on_confirm(k, &f, 1); break;
    case ESS_PROTO_METADATA_UPDATE: ess__stream_on_metadata_update(k, &f); break;
    case ESS_PROTO_CLOSE: {
        ess_log_warn("stream: broker closed the connection: %.*s",
                     (int)(f.u.close_reason.p ? f.u.close_reason.len : 0),
                     f.u.close_reason.p ? f.u.close_reason.p : "");
        ess_proto_buf_t b = {0};
        ess_proto_enc_close_response(&b, f.corr, ESS_PROTO_OK);
        ess__stream_conn_write(k, &b);
        conn_reset(k, ESS_ECONN);
        break;
    }
    case ESS_PROTO_CREDIT | ESS_PROTO_RESPONSE:
        ess_log_warn("stream: credit refused for subscription %u: %s", f.u.credit_sub_id,
                     ess_proto_code_name(f.code));
        break;
    default:
        if (f.key & ESS_PROTO_RESPONSE)
            ess__stream_on_response(k, &f);
        else
            ess_log_debug("stream: ignoring command 0x%04x", f.key);
        break;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ess__stream_conn_t *k = h->data;
    ess_proto_buf_t *b = &k->rbuf;
    if (b->cap - b->len < 65536) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap - b->len < 65536)
            cap *= 2;
        b->data = ess_xrealloc(b->data, cap);
        b->cap = cap;
    }
    *buf = uv_buf_init((char *)b->data + b->len, (unsigned)(b->cap - b->len));
}

/* Handle the whole frames in rbuf. libuv reads a socket up to 32 times
 * per loop turn; after READ_BUDGET bytes of frames in one turn the
 * connection stops reading until the next, so the WebSocket writes of what
 * was just delivered are not queued behind megabytes of replay (first
 * message, live latency). Returns 0 when the connection was reset or
 * closed. */
static int parse_frames(ess__stream_conn_t *k)
{
    ess_stream_client_t *c = k->c;
    unsigned gen = k->gen;
    size_t pos = 0;
    for (;;) {
        if (k->turn_bytes >= READ_BUDGET) {
            if (!k->read_held) {
                k->read_held = 1;
                uv_read_stop((uv_stream_t *)&k->tcp);
            }
            break;
        }
        size_t flen;
        uint32_t limit = k->frame_max > RECV_LIMIT ? k->frame_max : RECV_LIMIT;
        int rc = ess_proto_split(k->rbuf.data + pos, k->rbuf.len - pos, limit, &flen);
        if (rc == ESS_ETRUNC)
            break;
        if (rc != ESS_OK) {
            ess_log_error("stream: bad frame size from %s:%d: %s", k->host, k->port,
                          ess_strerror(rc));
            conn_reset(k, rc);
            return 0;
        }
        handle_frame(k, k->rbuf.data + pos + 4, flen - 4);
        if (k->gen != gen || c->closing)
            return 0;
        pos += flen;
        k->turn_bytes += flen;
    }
    ess_proto_buf_consume(&k->rbuf, pos);
    if (k->turn_bytes > 0 && !uv_is_active((uv_handle_t *)&c->turn))
        uv_idle_start(&c->turn, on_turn);
    return 1;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    ess__stream_conn_t *k = st->data;
    ess_stream_client_t *c = k->c;
    if (n == 0 || c->closing || k->state > C_READY)
        return;
    if (n < 0) {
        conn_reset(k, ESS_ECONN);
        return;
    }
    k->rbuf.len += (size_t)n;
    k->last_recv = uv_now(c->loop);
    parse_frames(k);
}

/* A new loop turn (idle handles run before the poll, and an active one
 * makes that poll not block): budgets start again and held connections
 * handle what they hold, then read again. Stops once a turn went by with
 * nothing counted. */
static void flush_all(ess_stream_client_t *c)
{
    if (!c->wpending)
        return;
    c->wpending = 0;
    for (ess__stream_conn_t *k = c->conns; k; k = k->next)
        conn_flush(k);
}

static void on_turn(uv_idle_t *h)
{
    ess_stream_client_t *c = h->data;
    int counted = 0;
    flush_all(c);
    for (ess__stream_conn_t *k = c->conns; k && !c->closing; k = k->next) {
        k->turn_bytes = 0;
        if (!k->read_held)
            continue;
        k->read_held = 0;
        if (!k->tcp_open || k->state > C_READY)
            continue;
        if (parse_frames(k) && !k->read_held && k->tcp_open && k->state <= C_READY)
            uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
        counted |= k->turn_bytes > 0;
    }
    flush_all(c); /* what handling the held frames wrote */
    if (!counted && !c->closing)
        uv_idle_stop(h);
}

static void on_connect(uv_connect_t *req, int status)
{
    ess__stream_conn_t *k = req->data;
    if (status == UV_ECANCELED || k->state != C_CONNECTING || k->c->closing)
        return;
    if (status < 0) {
        conn_reset(k, ESS_ECONN);
        return;
    }
    k->state = C_HANDSHAKE;
    k->hs = HS_PEER;
    k->last_recv = uv_now(k->c->loop);
    uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    ess_proto_kv_t props[] = {
        {"product", "ESS Gateway"},
        {"version", ESS_VERSION},
        {"platform", "C11/libuv"},
        {"connection_name", k->c->name},
    };
    ess_proto_buf_t b = {0};
    ess_proto_enc_peer_properties(&b, ++k->next_corr, props, ESS_ARRAY_SIZE(props));
    ess__stream_conn_write(k, &b);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct ess__stream_gai_s *g = container_of(req, struct ess__stream_gai_s, req);
    ess__stream_conn_t *k = g->k;
    free(g);
    if (k == NULL || k->c->closing) {
        if (res)
            uv_freeaddrinfo(res);
        return;
    }
    k->gai = NULL;
    if (status < 0 || res == NULL) {
        ess_log_warn("stream: cannot resolve %s: %s", k->host, uv_strerror(status));
        if (res)
            uv_freeaddrinfo(res);
        conn_reset(k, ESS_ECONN);
        return;
    }
    uv_tcp_init(k->c->loop, &k->tcp);
    k->tcp.data = k;
    k->tcp_open = 1;
    k->handles++;
    k->c->handles++;
    uv_tcp_nodelay(&k->tcp, 1);
    k->creq.data = k;
    k->state = C_CONNECTING;
    int rc = uv_tcp_connect(&k->creq, &k->tcp, res->ai_addr, on_connect);
    uv_freeaddrinfo(res);
    if (rc < 0)
        conn_reset(k, ESS_ECONN);
}

static void on_conn_timer(uv_timer_t *t)
{
    ess__stream_conn_t *k = t->data;
    ess_stream_client_t *c = k->c;
    if (c->closing)
        return;
    if (k->pending_err) {
        conn_reset(k, k->pending_err);
        return;
    }
    switch (k->state) {
    case C_WAIT: conn_start(k); break;
    case C_RESOLVING:
    case C_CONNECTING:
    case C_HANDSHAKE: conn_reset(k, ESS_ECONN); break;
    case C_READY: {
        uint64_t now = uv_now(c->loop);
        if (now - k->last_recv > 2000ull * k->heartbeat_s) {
            ess_log_warn("stream: no data from %s:%d for %u s", k->host, k->port,
                         2 * k->heartbeat_s);
            conn_reset(k, ESS_ECONN);
            return;
        }
        ess_proto_buf_t b = {0};
        ess_proto_enc_heartbeat(&b);
        ess__stream_conn_write(k, &b);
        break;
    }
    default: break;
    }
}

static void conn_start(ess__stream_conn_t *k)
{
    ess_stream_client_t *c = k->c;
    char port[16];
    snprintf(port, sizeof port, "%d", k->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct ess__stream_gai_s *g = ess_xcalloc(1, sizeof *g);
    g->k = k;
    k->gai = g;
    k->state = C_RESOLVING;
    uv_timer_start(&k->timer, on_conn_timer, CONNECT_TIMEOUT_MS, 0);
    int rc = uv_getaddrinfo(c->loop, &g->req, on_resolved, k->host, port, &hints);
    if (rc < 0) {
        free(g);
        k->gai = NULL;
        k->pending_err = ESS_ECONN;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    }
}
