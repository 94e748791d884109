/*
 * The asynchronous stream client: connections, handshake, heartbeats,
 * reconnects with backoff, subscriptions with credit-based flow control,
 * Metadata lookups, stream create/delete and publishers with confirms. It
 * owns every libuv handle it opens and frees memory only after the
 * handles' close callbacks. It does not parse bytes itself: frames go
 * through mq/proto.h, chunks through mq/chunk.h, message sections through
 * mq/amqp10.h.
 *
 * Lifetimes: a subscription or publisher is freed only when it is released
 * (ended, failed or closed by its user), no request refers to it, it holds
 * no connection slot and no callback of its own is on the stack. User
 * callbacks never run from inside a public call: results that are known at
 * once are deferred to the next loop turn.
 */
#include "mq/stream_client.h"

#include <inttypes.h>
#include <string.h>

#include "ess.h"
#include "mq/chunk.h"
#include "mq/url.h"
#include "util/log.h"

#define MAX_SUBS 255
#define READ_BUDGET (256 * 1024) /* bytes of frames handled per connection per loop turn */
#define MAX_CREDIT 1000 /* chunks outstanding per subscription */
#define WINDOW_MAX_CREDIT 64 /* with a byte window: bounds bytes when chunks grow */
#define MAX_PUBS 255
#define CONNECT_TIMEOUT_MS 10000
#define RESUB_RETRY_MS 500
/* RabbitMQ sends each Osiris chunk as one Deliver frame whatever frame_max
 * was negotiated (3.10.8 sends a 1.2 MB chunk on a 1 MiB connection), so
 * the receive side enforces this larger hard cap instead; frame_max still
 * bounds every frame we send. */
#define RECV_LIMIT (64u * 1024 * 1024)
/* A session that lived this long resets the backoff; shorter ones (the
 * broker accepts, then drops us again) keep growing it. */
#define HEALTHY_MS 10000

enum { C_RESOLVING, C_CONNECTING, C_HANDSHAKE, C_READY, C_CLOSING, C_WAIT, C_DEAD };
enum { HS_PEER, HS_SASL_HS, HS_SASL_AUTH, HS_TUNE, HS_OPEN };
enum {
    R_SUBSCRIBE,   /* on the wire; sub */
    R_UNSUBSCRIBE, /* on the wire; sub */
    R_SUB_FAIL,    /* deferred failure of sub with status */
    R_EXISTS,
    R_CREATE,
    R_DELETE,
    R_LOCATE_SUB, /* Metadata for sub's stream */
    R_LOCATE_PUB,
    R_RECHECK, /* Metadata after a MetadataUpdate */
    R_DECLARE_PUB,
    R_PUB_FAIL,
    R_STATUS, /* deferred cb(status) */
    R_IGNORE, /* a response nobody waits for */
};

typedef struct conn_s conn_t;

typedef struct req_s {
    struct req_s *next;
    int kind;
    int sent;
    uint32_t corr;
    int status;
    char *stream;
    ess_proto_kv_t *args;
    size_t nargs;
    ess_stream_status_cb cb;
    void *ud;
    ess_stream_sub_t *sub;
    ess_stream_pub_t *pub;
} req_t;

struct ess_stream_sub_s {
    ess_stream_sub_t *prev, *next;
    ess_stream_client_t *c;
    conn_t *conn;
    int id;
    char *stream;
    ess_offset_spec_t from;
    ess_stream_sub_cbs_t cbs;
    void *ud;
    int on_wire, live, ever_live, dead, user_gone, needs_resub, needs_locate;
    int delivered_any;
    uint64_t last;
    int paused, credit_out;
    size_t avg_chunk; /* moving average of delivered chunk bytes, 0 = none yet */
    int refs, depth;
};

struct ess_stream_pub_s {
    ess_stream_pub_t *prev, *next;
    ess_stream_client_t *c;
    conn_t *conn;
    int id;
    char *stream;
    ess_stream_pub_cbs_t cbs;
    void *ud;
    int ready, dead, user_gone, on_wire;
    uint64_t next_id;
    int refs, depth;
};

struct conn_s {
    conn_t *next;
    ess_stream_client_t *c;
    char *host;
    int port;
    int is_locator;
    char *adv_host; /* the broker's advertised host:port (Open response), or NULL */
    int adv_port;
    int state, hs;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    struct gai_s *gai;
    int tcp_open, handles;
    ess_proto_buf_t rbuf;
    int read_held;     /* reading stopped until the next loop turn (READ_BUDGET) */
    size_t turn_bytes; /* frame bytes handled since the last turn began */
    uint32_t frame_max, heartbeat_s;
    uint64_t last_recv, ready_since;
    uint32_t next_corr;
    int attempts, pending_err;
    unsigned gen;
    ess_stream_sub_t *subs[MAX_SUBS];
    int nsubs;
    ess_stream_pub_t *pubs[MAX_PUBS];
    int npubs;
    req_t *reqs;
};

struct gai_s {
    uv_getaddrinfo_t req;
    conn_t *k;
};

struct ess_stream_client_s {
    uv_loop_t *loop;
    ess_url_t url;
    int port, lb_mode, heartbeat_s, min_ms, max_ms, credit;
    size_t credit_window;
    uint32_t frame_max;
    char *name;
    conn_t *conns, *locator;
    ess_stream_sub_t *subs;
    ess_stream_pub_t *pubs;
    req_t *deferred;
    uv_timer_t defer_timer, retry_timer;
    uv_idle_t turn; /* active while a connection counted bytes this turn */
    int closing, handles;
    void (*done)(void *);
    void *done_ud;
    uint64_t rng;
};

static void conn_reset(conn_t *k, int err);
static void conn_start(conn_t *k);
static void send_subscribe(ess_stream_sub_t *s);
static void send_declare(ess_stream_pub_t *p);
static void sub_put(ess_stream_sub_t *s);
static void pub_put(ess_stream_pub_t *p);
static void on_defer_timer(uv_timer_t *t);
static void on_conn_timer(uv_timer_t *t);
static void on_retry_timer(uv_timer_t *t);
static void on_turn(uv_idle_t *h);

/* ---- small helpers ---- */

static uint32_t jitter(ess_stream_client_t *c, uint32_t n)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return n ? (uint32_t)(c->rng % n) : 0;
}

static void req_free(req_t *r)
{
    free(r->stream);
    for (size_t i = 0; i < r->nargs; i++) {
        free((char *)r->args[i].key);
        free((char *)r->args[i].value);
    }
    free(r->args);
    free(r);
}

static req_t *req_new(int kind, const char *stream)
{
    req_t *r = ess_xcalloc(1, sizeof *r);
    r->kind = kind;
    r->stream = stream ? ess_xstrdup(stream) : NULL;
    return r;
}

static void defer(ess_stream_client_t *c, req_t *r, int status)
{
    r->status = status;
    r->next = c->deferred;
    c->deferred = r;
    uv_timer_start(&c->defer_timer, on_defer_timer, 0, 0);
}

static int conn_usable(const conn_t *k)
{
    return k->state <= C_READY;
}

static void on_write(uv_write_t *w, int status)
{
    conn_t *k = w->data;
    if (status < 0 && status != UV_ECANCELED && k != NULL && k->state == C_READY &&
        !k->c->closing) {
        k->pending_err = ESS_ECONN;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    }
    free(w);
}

/* Sends the frames in b (which is emptied). Write errors reset the
 * connection from its timer, never from inside the caller's stack. */
static void conn_write(conn_t *k, ess_proto_buf_t *b)
{
    if (b->len == 0)
        return;
    if (!k->tcp_open || k->state > C_READY || k->c->closing) {
        ess_proto_buf_free(b);
        return;
    }
    uv_write_t *w = ess_xmalloc(sizeof *w + b->len);
    memcpy(w + 1, b->data, b->len);
    uv_buf_t buf = uv_buf_init((char *)(w + 1), (unsigned)b->len);
    w->data = k;
    int rc = uv_write(w, (uv_stream_t *)&k->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(w);
        k->pending_err = ESS_ECONN;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    }
    ess_proto_buf_free(b);
}

static void conn_send_req(conn_t *k, req_t *r);
static void conn_queue_req(conn_t *k, req_t *r);

/* ---- subscriptions and publishers: release and free ---- */

static void slot_release(ess_stream_sub_t *s)
{
    conn_t *k = s->conn;
    if (k == NULL)
        return;
    k->subs[s->id] = NULL;
    k->nsubs--;
    s->conn = NULL;
    s->on_wire = s->live = 0;
}

static void pub_slot_release(ess_stream_pub_t *p)
{
    conn_t *k = p->conn;
    if (k == NULL)
        return;
    k->pubs[p->id] = NULL;
    k->npubs--;
    p->conn = NULL;
    p->on_wire = p->ready = 0;
}

static void sub_free(ess_stream_sub_t *s)
{
    ess_stream_client_t *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s->stream);
    free(s);
}

static void sub_put(ess_stream_sub_t *s)
{
    if (s->dead && s->refs == 0 && s->depth == 0 && s->conn == NULL && !s->c->closing)
        sub_free(s);
}

static void pub_free(ess_stream_pub_t *p)
{
    ess_stream_client_t *c = p->c;
    if (p->prev)
        p->prev->next = p->next;
    else
        c->pubs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p->stream);
    free(p);
}

static void pub_put(ess_stream_pub_t *p)
{
    if (p->dead && p->user_gone && p->refs == 0 && p->depth == 0 && p->conn == NULL &&
        !p->c->closing)
        pub_free(p);
}

/* The subscription never became live: report status and release it. */
static void sub_fail(ess_stream_sub_t *s, int status)
{
    if (s->dead)
        return;
    s->dead = 1;
    slot_release(s);
    if (!s->user_gone && !s->c->closing && s->cbs.on_subscribed) {
        s->depth++;
        s->cbs.on_subscribed(s, status, s->ud);
        s->depth--;
    }
    s->user_gone = 1;
    sub_put(s);
}

/* A live subscription ends for good (stream deleted, bad data). */
static void sub_end(ess_stream_sub_t *s, int reason)
{
    if (s->dead)
        return;
    s->dead = 1;
    conn_t *k = s->conn;
    if (k && k->state == C_READY && s->on_wire) {
        /* Tell the broker too; the slot is freed by the response (or, when
         * the Subscribe is still pending, by its response). */
        if (s->live) {
            req_t *r = req_new(R_UNSUBSCRIBE, NULL);
            r->sub = s;
            s->refs++;
            conn_send_req(k, r);
            s->live = 0;
        }
    } else {
        slot_release(s);
    }
    if (!s->user_gone && !s->c->closing && s->cbs.on_ended) {
        s->depth++;
        s->cbs.on_ended(s, reason, s->ud);
        s->depth--;
    }
    s->user_gone = 1;
    sub_put(s);
}

static void pub_fail(ess_stream_pub_t *p, int status, int declared)
{
    if (p->dead)
        return;
    p->dead = 1;
    pub_slot_release(p);
    if (!p->user_gone && !p->c->closing) {
        p->depth++;
        if (!declared && p->cbs.on_ready)
            p->cbs.on_ready(p, status, p->ud);
        else if (declared && p->cbs.on_confirm)
            p->cbs.on_confirm(p, UINT64_MAX, status, p->ud);
        p->depth--;
    }
    if (!declared)
        p->user_gone = 1;
    pub_put(p);
}

/* ---- connections ---- */

static void client_maybe_finish(ess_stream_client_t *c);
static void schedule_retry(conn_t *k);

static void conn_unlink_free(conn_t *k)
{
    ess_stream_client_t *c = k->c;
    for (conn_t **pp = &c->conns; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    if (c->locator == k)
        c->locator = NULL;
    ess_proto_buf_free(&k->rbuf);
    free(k->host);
    free(k->adv_host);
    free(k);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *k = h->data;
    ess_stream_client_t *c = k->c;
    k->handles--;
    c->handles--;
    if (c->closing) {
        client_maybe_finish(c);
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

static void schedule_retry(conn_t *k)
{
    ess_stream_client_t *c = k->c;
    {
        uint32_t d = (uint32_t)c->min_ms;
        for (int i = 1; i < k->attempts && d < (uint32_t)c->max_ms; i++)
            d *= 2;
        if (d > (uint32_t)c->max_ms)
            d = (uint32_t)c->max_ms;
        d = d / 2 + jitter(c, d / 2 + 1);
        k->state = C_WAIT;
        ess_log_debug("stream: reconnecting to %s:%d in %u ms", k->host, k->port, d);
        uv_timer_start(&k->timer, on_conn_timer, d, 0);
    }
}

/* Drops an idle non-locator connection; its memory goes with its handles. */
static void conn_destroy(conn_t *k)
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
        k->tcp_open = 0;
        uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    }
    uv_close((uv_handle_t *)&k->timer, on_conn_handle_closed);
}

static void conn_maybe_idle(conn_t *k)
{
    if (!k->is_locator && k->nsubs == 0 && k->npubs == 0 && k->reqs == NULL && k->state != C_DEAD &&
        !k->c->closing)
        conn_destroy(k);
}

static void req_fail(ess_stream_client_t *c, req_t *r, int err)
{
    switch (r->kind) {
    case R_SUBSCRIBE:
    case R_UNSUBSCRIBE:
        /* The slot pass of conn_reset decides what happens to the sub. */
        r->sub->refs--;
        if (r->kind == R_UNSUBSCRIBE)
            slot_release(r->sub);
        sub_put(r->sub);
        break;
    case R_LOCATE_SUB:
        if (r->sub->ever_live && !r->sub->dead && !c->closing && c->locator != NULL) {
            /* A live subscription waits for the locator to come back. */
            r->sent = 0;
            r->next = c->locator->reqs;
            c->locator->reqs = r;
            return;
        }
        r->sub->refs--;
        sub_fail(r->sub, err);
        sub_put(r->sub);
        break;
    case R_LOCATE_PUB:
    case R_DECLARE_PUB:
        r->pub->refs--;
        pub_fail(r->pub, err, 0);
        pub_put(r->pub);
        break;
    case R_EXISTS:
    case R_CREATE:
    case R_DELETE:
        if (r->cb && !c->closing)
            r->cb(err, r->ud);
        break;
    case R_RECHECK:
        if (!c->closing)
            uv_timer_start(&c->retry_timer, on_retry_timer, RESUB_RETRY_MS, 0);
        break;
    default: break;
    }
    req_free(r);
}

/* Tears down the TCP session after an error: fails pending requests and
 * never-live subscriptions, keeps live ones for the next session. */
static void conn_reset(conn_t *k, int err)
{
    ess_stream_client_t *c = k->c;
    if (k->state >= C_CLOSING || c->closing)
        return;
    if (k->state == C_READY)
        ess_log_warn("stream: connection to %s:%d lost (%s)", k->host, k->port, ess_strerror(err));
    else
        ess_log_debug("stream: connecting to %s:%d failed (%s)", k->host, k->port,
                      ess_strerror(err));
    if (k->state == C_READY && uv_now(c->loop) - k->ready_since >= HEALTHY_MS)
        k->attempts = 0;
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
        k->tcp_open = 0;
        uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    }
    req_t *reqs = k->reqs;
    k->reqs = NULL;
    while (reqs) {
        req_t *r = reqs;
        reqs = r->next;
        req_fail(c, r, err);
    }
    for (int i = 0; i < MAX_SUBS && !c->closing; i++) {
        ess_stream_sub_t *s = k->subs[i];
        if (s == NULL)
            continue;
        s->on_wire = s->live = 0;
        s->credit_out = 0;
        if (s->dead) {
            slot_release(s);
            sub_put(s);
        } else if (!s->ever_live) {
            sub_fail(s, err);
        } else if (!c->lb_mode && c->locator != NULL) {
            /* The node may be gone for good: ask Metadata where the stream
             * lives now rather than retrying this host forever (also for
             * subscriptions sharing the locator: it may come back on
             * another node). */
            slot_release(s);
            req_t *r = req_new(R_LOCATE_SUB, s->stream);
            r->sub = s;
            s->refs++;
            conn_queue_req(c->locator, r);
        }
    }
    for (int i = 0; i < MAX_PUBS && !c->closing; i++) {
        ess_stream_pub_t *p = k->pubs[i];
        if (p != NULL)
            pub_fail(p, err == ESS_OK ? ESS_ECONN : err, p->ready);
    }
    if (c->closing || k->state != C_CLOSING)
        return;
    if (!k->is_locator && k->nsubs == 0 && k->npubs == 0) {
        conn_destroy(k);
        return;
    }
    if (!had_tcp)
        schedule_retry(k); /* no handle to wait for */
}

static void conn_send_req(conn_t *k, req_t *r)
{
    ess_proto_buf_t b = {0};
    r->corr = ++k->next_corr;
    r->sent = 1;
    r->next = k->reqs;
    k->reqs = r;
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
    case R_DECLARE_PUB: return; /* encoded by send_declare */
    default: break;
    }
    ESS_ASSERT(rc == ESS_OK); /* arguments were validated by the public calls */
    conn_write(k, &b);
}

/* Queues r on k: sent now when ready, else when the handshake completes. */
static void conn_queue_req(conn_t *k, req_t *r)
{
    if (k->state == C_READY) {
        conn_send_req(k, r);
        return;
    }
    r->sent = 0;
    r->next = k->reqs;
    k->reqs = r;
}

/* Remember the node's advertised host:port (Open response properties):
 * Metadata names leaders by it, so a subscription to this node can share
 * this connection (the locator, usually) instead of opening another. */
static void note_advertised(conn_t *k, const ess_proto_frame_t *f)
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
    }
}

static int conn_is(const conn_t *k, const char *host, int port)
{
    return (k->port == port && strcmp(k->host, host) == 0) ||
           (k->adv_host != NULL && k->adv_port == port && strcmp(k->adv_host, host) == 0);
}

static void on_ready(conn_t *k)
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
    /* Unsent requests, oldest first (the list is newest first). */
    req_t *unsent = NULL, **pp = &k->reqs;
    while (*pp) {
        req_t *r = *pp;
        if (!r->sent) {
            *pp = r->next;
            r->next = unsent;
            unsent = r;
        } else {
            pp = &r->next;
        }
    }
    unsigned gen = k->gen;
    while (unsent && k->gen == gen) {
        req_t *r = unsent;
        unsent = r->next;
        conn_send_req(k, r);
    }
    while (unsent) { /* the connection died meanwhile */
        req_t *r = unsent;
        unsent = r->next;
        req_fail(c, r, ESS_ECONN);
    }
    for (int i = 0; i < MAX_SUBS && k->gen == gen; i++) {
        ess_stream_sub_t *s = k->subs[i];
        if (s && !s->dead && !s->on_wire)
            send_subscribe(s);
    }
    for (int i = 0; i < MAX_PUBS && k->gen == gen; i++) {
        ess_stream_pub_t *p = k->pubs[i];
        if (p && !p->dead && !p->on_wire)
            send_declare(p);
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

static void handshake(conn_t *k, const ess_proto_frame_t *f)
{
    ess_stream_client_t *c = k->c;
    ess_proto_buf_t b = {0};
    uint16_t key = f->key;
    if (key == (ESS_PROTO_PEER_PROPERTIES | ESS_PROTO_RESPONSE) && k->hs == HS_PEER) {
        if (f->code != ESS_PROTO_OK)
            goto fail_proto;
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
    conn_write(k, &b);
    return;
fail_proto:
    ess_log_error("stream: unexpected frame 0x%04x (code %u) during handshake with %s:%d", key,
                  f->code, k->host, k->port);
    conn_reset(k, ESS_EPROTO);
}

/* ---- subscriptions ---- */

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
    conn_t *k = s->conn;
    int want = credit_target(s) - s->credit_out;
    if (want <= 0 || s->paused || !s->live || k == NULL || k->state != C_READY)
        return;
    ess_proto_buf_t b = {0};
    ess_proto_enc_credit(&b, (uint8_t)s->id, (uint16_t)want);
    s->credit_out += want;
    conn_write(k, &b);
}

static void send_subscribe(ess_stream_sub_t *s)
{
    conn_t *k = s->conn;
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
    req_t *r = req_new(R_SUBSCRIBE, NULL);
    r->sub = s;
    s->refs++;
    conn_send_req(k, r);
    ess_proto_buf_t b = {0};
    uint16_t credit = (uint16_t)(s->paused ? 0 : s->c->credit);
    ess_proto_enc_subscribe(&b, r->corr, (uint8_t)s->id, s->stream, &off, credit, NULL, 0);
    s->on_wire = 1;
    s->needs_resub = 0;
    s->credit_out = credit;
    conn_write(k, &b);
}

static conn_t *conn_new(ess_stream_client_t *c, const char *host, int port, int is_locator)
{
    conn_t *k = ess_xcalloc(1, sizeof *k);
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
static conn_t *conn_for(ess_stream_client_t *c, const char *host, int port, int pubs)
{
    conn_t *best = NULL;
    for (conn_t *k = c->conns; k; k = k->next) {
        if (k->state == C_DEAD || !conn_is(k, host, port))
            continue;
        if ((pubs ? k->npubs >= MAX_PUBS : k->nsubs >= MAX_SUBS))
            continue;
        if (best == NULL || (conn_usable(k) && !conn_usable(best)))
            best = k;
    }
    return best ? best : conn_new(c, host, port, 0);
}

/* Gives s a slot on a connection to host:port; defer says whether a
 * failure must wait for the next loop turn (called from a public call). */
static void sub_attach(ess_stream_sub_t *s, const char *host, int port, int defer_fail)
{
    ess_stream_client_t *c = s->c;
    conn_t *k = conn_for(c, host, port, 0);
    if (!conn_usable(k) && !s->ever_live) {
        if (defer_fail) {
            req_t *r = req_new(R_SUB_FAIL, NULL);
            r->sub = s;
            s->refs++;
            defer(c, r, ESS_ECONN);
        } else {
            sub_fail(s, ESS_ECONN);
        }
        conn_maybe_idle(k);
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
        send_subscribe(s);
}

static void on_subscribe_resp(conn_t *k, req_t *r, int status)
{
    ess_stream_sub_t *s = r->sub;
    s->refs--;
    if (s->dead) {
        if (status == ESS_OK && k->state == C_READY && s->conn == k) {
            req_t *u = req_new(R_UNSUBSCRIBE, NULL);
            u->sub = s;
            s->refs++;
            conn_send_req(k, u);
        } else {
            slot_release(s);
            conn_maybe_idle(k);
        }
        sub_put(s);
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
            sub_put(s);
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
        sub_fail(s, status);
        conn_maybe_idle(k);
    } else if (status == ESS_ENOTFOUND) {
        sub_end(s, status);
        conn_maybe_idle(k);
    } else {
        /* Transient (stream not yet available after a restart): retry. */
        ess_log_warn("stream: resubscribing %s failed (%s), retrying", s->stream,
                     ess_strerror(status));
        s->needs_resub = 1;
        uv_timer_start(&s->c->retry_timer, on_retry_timer, RESUB_RETRY_MS, 0);
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

static void on_deliver(conn_t *k, const ess_proto_frame_t *f)
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
        sub_end(s, rc);
    }
    sub_put(s);
}

/* The broker dropped the subscriptions of a stream (deleted, or its
 * leader moved): ask Metadata whether it still exists. */
static void on_metadata_update(conn_t *k, const ess_proto_frame_t *f)
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
            slot_release(s);
            sub_put(s);
        } else {
            s->needs_resub = 1;
            any = 1;
        }
    }
    for (int i = 0; i < MAX_PUBS && !c->closing; i++) {
        ess_stream_pub_t *p = k->pubs[i];
        if (p && strlen(p->stream) == st->len && st->p && memcmp(p->stream, st->p, st->len) == 0)
            pub_fail(p, ESS_ENOTFOUND, p->ready);
    }
    if (any && c->locator) {
        req_t *r = req_new(R_RECHECK, NULL);
        r->stream = ess_xstrndup(st->p, st->len);
        conn_queue_req(c->locator, r);
    }
    conn_maybe_idle(k);
}

static void on_recheck(ess_stream_client_t *c, req_t *r, int status)
{
    for (conn_t *k = c->conns; k && !c->closing; k = k->next) {
        for (int i = 0; i < MAX_SUBS && !c->closing; i++) {
            ess_stream_sub_t *s = k->subs[i];
            if (s == NULL || s->dead || !s->needs_resub || strcmp(s->stream, r->stream) != 0)
                continue;
            if (status == ESS_ENOTFOUND)
                sub_end(s, ESS_ENOTFOUND);
            else
                uv_timer_start(&c->retry_timer, on_retry_timer, RESUB_RETRY_MS, 0);
        }
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    ess_stream_client_t *c = t->data;
    for (ess_stream_sub_t *s = c->subs; s && !c->closing; s = s->next) {
        if (s->dead || !s->needs_locate || s->conn != NULL || c->locator == NULL)
            continue;
        s->needs_locate = 0;
        req_t *r = req_new(R_LOCATE_SUB, s->stream);
        r->sub = s;
        s->refs++;
        conn_queue_req(c->locator, r);
    }
    for (conn_t *k = c->conns; k; k = k->next) {
        if (k->state != C_READY)
            continue;
        unsigned gen = k->gen;
        for (int i = 0; i < MAX_SUBS && k->gen == gen && !c->closing; i++) {
            ess_stream_sub_t *s = k->subs[i];
            if (s && !s->dead && s->needs_resub && !s->on_wire)
                send_subscribe(s);
        }
    }
}

/* ---- publishers ---- */

static void send_declare(ess_stream_pub_t *p)
{
    conn_t *k = p->conn;
    req_t *r = req_new(R_DECLARE_PUB, NULL);
    r->pub = p;
    p->refs++;
    conn_send_req(k, r);
    ess_proto_buf_t b = {0};
    ess_proto_enc_declare_publisher(&b, r->corr, (uint8_t)p->id, NULL, p->stream);
    p->on_wire = 1;
    conn_write(k, &b);
}

static void pub_attach(ess_stream_pub_t *p, const char *host, int port)
{
    conn_t *k = conn_for(p->c, host, port, 1);
    if (!conn_usable(k)) {
        pub_fail(p, ESS_ECONN, 0);
        conn_maybe_idle(k);
        return;
    }
    int id = 0;
    while (k->pubs[id] != NULL)
        id++;
    k->pubs[id] = p;
    k->npubs++;
    p->conn = k;
    p->id = id;
    if (k->state == C_READY)
        send_declare(p);
}

static void on_confirm(conn_t *k, const ess_proto_frame_t *f, int is_error)
{
    ess_stream_pub_t *p = f->u.pub.pub_id < MAX_PUBS ? k->pubs[f->u.pub.pub_id] : NULL;
    if (p == NULL || p->dead || p->user_gone || !p->cbs.on_confirm)
        return;
    p->depth++;
    for (uint32_t i = 0; i < f->u.pub.count && !p->user_gone && !k->c->closing; i++) {
        uint16_t code = ESS_PROTO_OK;
        uint64_t id = is_error ? ess_proto_error_id(f, i, &code) : ess_proto_confirm_id(f, i);
        p->cbs.on_confirm(p, id, ess_proto_code_to_ess(code), p->ud);
    }
    p->depth--;
    pub_put(p);
}

/* ---- responses to requests ---- */

/* Host and port of a stream's leader (want_replica: a replica if any). */
static int pick_host(const ess_proto_frame_t *f, int want_replica, ess_proto_str_t *host,
                     uint32_t *port, int *status)
{
    ess_proto_stream_meta_t m;
    if (ess_proto_metadata_stream(f, 0, &m) != ESS_OK) {
        *status = ESS_EPROTO;
        return -1;
    }
    *status = ess_proto_code_to_ess(m.code);
    if (*status != ESS_OK)
        return -1;
    uint16_t ref = m.leader;
    if (want_replica && m.replicas > 0)
        ref = ess_proto_replica_ref(&m, 0);
    for (uint32_t i = 0; i < f->u.metadata.brokers; i++) {
        ess_proto_broker_t b;
        if (ess_proto_metadata_broker(f, i, &b) == ESS_OK && b.ref == ref && b.host.p) {
            *host = b.host;
            *port = b.port;
            return 0;
        }
    }
    *status = ESS_ECONN; /* no leader known: stream not available */
    return -1;
}

static void on_response(conn_t *k, const ess_proto_frame_t *f)
{
    ess_stream_client_t *c = k->c;
    req_t **pp = &k->reqs, *r = NULL;
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->sent && (*pp)->corr == f->corr) {
            r = *pp;
            *pp = r->next;
            break;
        }
    }
    if (r == NULL)
        return;
    int status = ess_proto_code_to_ess(f->code);
    uint16_t key = f->key & (uint16_t)~ESS_PROTO_RESPONSE;
    int is_meta = key == ESS_PROTO_METADATA;
    if (is_meta && status == ESS_OK) {
        ess_proto_stream_meta_t m;
        status = ess_proto_metadata_stream(f, 0, &m) == ESS_OK ? ess_proto_code_to_ess(m.code)
                                                               : ESS_EPROTO;
    }
    switch (r->kind) {
    case R_SUBSCRIBE: on_subscribe_resp(k, r, status); break;
    case R_UNSUBSCRIBE:
        r->sub->refs--;
        slot_release(r->sub);
        sub_put(r->sub);
        conn_maybe_idle(k);
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
        if (!dead && is_meta && pick_host(f, is_sub, &host, &port, &st) == 0 && port > 0 &&
            port <= 65535) {
            char *h = ess_xstrndup(host.p, host.len);
            if (is_sub)
                sub_attach(r->sub, h, (int)port, 0);
            else
                pub_attach(r->pub, h, (int)port);
            free(h);
        } else if (!dead) {
            if (is_sub && r->sub->ever_live && st == ESS_ENOTFOUND) {
                sub_end(r->sub, st);
            } else if (is_sub && r->sub->ever_live) {
                r->sub->needs_locate = 1; /* e.g. no leader yet: ask again later */
                uv_timer_start(&c->retry_timer, on_retry_timer, RESUB_RETRY_MS, 0);
            } else if (is_sub) {
                sub_fail(r->sub, is_meta ? st : ESS_EPROTO);
            } else
                pub_fail(r->pub, is_meta ? st : ESS_EPROTO, 0);
        }
        if (is_sub) {
            r->sub->refs--;
            sub_put(r->sub);
        } else {
            r->pub->refs--;
            pub_put(r->pub);
        }
        break;
    }
    case R_RECHECK: on_recheck(c, r, status); break;
    case R_DECLARE_PUB: {
        ess_stream_pub_t *p = r->pub;
        p->refs--;
        if (status != ESS_OK) {
            pub_fail(p, status, 0);
        } else if (!p->dead) {
            p->ready = 1;
            if (p->cbs.on_ready && !p->user_gone && !c->closing) {
                p->depth++;
                p->cbs.on_ready(p, ESS_OK, p->ud);
                p->depth--;
            }
        }
        pub_put(p);
        conn_maybe_idle(k);
        break;
    }
    default: break;
    }
    req_free(r);
}

static void handle_frame(conn_t *k, const uint8_t *p, size_t len)
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
    case ESS_PROTO_DELIVER: on_deliver(k, &f); break;
    case ESS_PROTO_HEARTBEAT: break;
    case ESS_PROTO_PUBLISH_CONFIRM: on_confirm(k, &f, 0); break;
    case ESS_PROTO_PUBLISH_ERROR: on_confirm(k, &f, 1); break;
    case ESS_PROTO_METADATA_UPDATE: on_metadata_update(k, &f); break;
    case ESS_PROTO_CLOSE: {
        ess_log_warn("stream: broker closed the connection: %.*s",
                     (int)(f.u.close_reason.p ? f.u.close_reason.len : 0),
                     f.u.close_reason.p ? f.u.close_reason.p : "");
        ess_proto_buf_t b = {0};
        ess_proto_enc_close_response(&b, f.corr, ESS_PROTO_OK);
        conn_write(k, &b);
        conn_reset(k, ESS_ECONN);
        break;
    }
    case ESS_PROTO_CREDIT | ESS_PROTO_RESPONSE:
        ess_log_warn("stream: credit refused for subscription %u: %s", f.u.credit_sub_id,
                     ess_proto_code_name(f.code));
        break;
    default:
        if (f.key & ESS_PROTO_RESPONSE)
            on_response(k, &f);
        else
            ess_log_debug("stream: ignoring command 0x%04x", f.key);
        break;
    }
}

/* ---- I/O callbacks ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *k = h->data;
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
static int parse_frames(conn_t *k)
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
    conn_t *k = st->data;
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
static void on_turn(uv_idle_t *h)
{
    ess_stream_client_t *c = h->data;
    int counted = 0;
    for (conn_t *k = c->conns; k && !c->closing; k = k->next) {
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
    if (!counted && !c->closing)
        uv_idle_stop(h);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *k = req->data;
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
    conn_write(k, &b);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct gai_s *g = container_of(req, struct gai_s, req);
    conn_t *k = g->k;
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
    conn_t *k = t->data;
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
        conn_write(k, &b);
        break;
    }
    default: break;
    }
}

static void conn_start(conn_t *k)
{
    ess_stream_client_t *c = k->c;
    char port[16];
    snprintf(port, sizeof port, "%d", k->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct gai_s *g = ess_xcalloc(1, sizeof *g);
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

/* ---- the client ---- */

static void on_defer_timer(uv_timer_t *t)
{
    ess_stream_client_t *c = t->data;
    req_t *list = c->deferred, *rev = NULL;
    c->deferred = NULL;
    while (list) { /* run in the order they were deferred */
        req_t *r = list;
        list = r->next;
        r->next = rev;
        rev = r;
    }
    while (rev) {
        req_t *r = rev;
        rev = r->next;
        if (c->closing) {
            req_free(r);
            continue;
        }
        if (r->kind == R_SUB_FAIL) {
            r->sub->refs--;
            sub_fail(r->sub, r->status);
            sub_put(r->sub);
        } else if (r->kind == R_PUB_FAIL) {
            r->pub->refs--;
            pub_fail(r->pub, r->status, 0);
            pub_put(r->pub);
        } else if (r->cb) {
            r->cb(r->status, r->ud);
        }
        req_free(r);
    }
}

int ess_stream_client_create(uv_loop_t *loop, const ess_stream_client_opts_t *opts,
                             ess_stream_client_t **out)
{
    ess_stream_client_t *c = ess_xcalloc(1, sizeof *c);
    if (opts == NULL || ess_url_parse(opts->url, &c->url) != ESS_OK) {
        free(c);
        return ESS_EINVAL;
    }
    c->loop = loop;
    c->port = opts->stream_port > 0 ? opts->stream_port : 5552;
    c->lb_mode = opts->load_balancer_mode;
    c->heartbeat_s = opts->heartbeat_s > 0 ? opts->heartbeat_s : 60;
    c->frame_max = opts->frame_max ? opts->frame_max : 8u * 1024 * 1024;
    c->min_ms = opts->reconnect_min_ms > 0 ? opts->reconnect_min_ms : 100;
    c->max_ms = opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : 5000;
    if (c->max_ms < c->min_ms)
        c->max_ms = c->min_ms;
    c->credit = opts->initial_credit > 0 ? opts->initial_credit : 3;
    if (c->credit > MAX_CREDIT)
        c->credit = MAX_CREDIT;
    c->credit_window = opts->credit_window_bytes;
    c->name = ess_xstrdup(opts->connection_name ? opts->connection_name : "essd");
    c->rng = uv_hrtime() | 1;
    uv_timer_init(loop, &c->defer_timer);
    c->defer_timer.data = c;
    uv_timer_init(loop, &c->retry_timer);
    c->retry_timer.data = c;
    uv_idle_init(loop, &c->turn);
    c->turn.data = c;
    c->handles = 3;
    c->locator = conn_new(c, c->url.host, c->port, 1);
    *out = c;
    return ESS_OK;
}

int ess_stream_client_connected(const ess_stream_client_t *c)
{
    return c->locator != NULL && c->locator->state == C_READY;
}

static void client_maybe_finish(ess_stream_client_t *c)
{
    if (c->handles > 0)
        return;
    while (c->conns) {
        conn_t *k = c->conns;
        c->conns = k->next;
        while (k->reqs) {
            req_t *r = k->reqs;
            k->reqs = r->next;
            req_free(r);
        }
        ess_proto_buf_free(&k->rbuf);
        free(k->host);
    free(k->adv_host);
        free(k);
    }
    while (c->deferred) {
        req_t *r = c->deferred;
        c->deferred = r->next;
        req_free(r);
    }
    while (c->subs) {
        ess_stream_sub_t *s = c->subs;
        c->subs = s->next;
        free(s->stream);
        free(s);
    }
    while (c->pubs) {
        ess_stream_pub_t *p = c->pubs;
        c->pubs = p->next;
        free(p->stream);
        free(p);
    }
    void (*done)(void *) = c->done;
    void *ud = c->done_ud;
    ess_url_free(&c->url);
    free(c->name);
    free(c);
    if (done)
        done(ud);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    ess_stream_client_t *c = h->data;
    c->handles--;
    client_maybe_finish(c);
}

void ess_stream_client_close(ess_stream_client_t *c, void (*done)(void *ud), void *ud)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    c->done = done;
    c->done_ud = ud;
    for (conn_t *k = c->conns; k; k = k->next) {
        if (k->state == C_DEAD)
            continue; /* its handles are already closing */
        k->state = C_DEAD;
        k->gen++;
        if (k->gai) {
            k->gai->k = NULL;
            uv_cancel((uv_req_t *)&k->gai->req);
            k->gai = NULL;
        }
        if (k->tcp_open) {
            k->tcp_open = 0;
            uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
        }
        uv_close((uv_handle_t *)&k->timer, on_conn_handle_closed);
    }
    uv_close((uv_handle_t *)&c->defer_timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->retry_timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->turn, on_client_handle_closed);
}

static int name_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= 255;
}

int ess_stream_subscribe(ess_stream_client_t *c, const char *stream, ess_offset_spec_t from,
                         const ess_stream_sub_cbs_t *cbs, void *ud, ess_stream_sub_t **out)
{
    if (c == NULL || cbs == NULL || !name_ok(stream) || (unsigned)from.kind > ESS_OFFSET_TIMESTAMP)
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess_stream_sub_t *s = ess_xcalloc(1, sizeof *s);
    s->c = c;
    s->stream = ess_xstrdup(stream);
    s->from = from;
    s->cbs = *cbs;
    s->ud = ud;
    s->next = c->subs;
    if (c->subs)
        c->subs->prev = s;
    c->subs = s;
    *out = s;
    if (c->lb_mode) {
        sub_attach(s, c->url.host, c->port, 1);
    } else if (c->locator == NULL || !conn_usable(c->locator)) {
        req_t *r = req_new(R_SUB_FAIL, NULL);
        r->sub = s;
        s->refs++;
        defer(c, r, ESS_ECONN);
    } else {
        req_t *r = req_new(R_LOCATE_SUB, stream);
        r->sub = s;
        s->refs++;
        conn_queue_req(c->locator, r);
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
    conn_t *k = s->conn;
    if (k && s->on_wire && k->state == C_READY) {
        if (s->live) {
            req_t *r = req_new(R_UNSUBSCRIBE, NULL);
            r->sub = s;
            s->refs++;
            conn_send_req(k, r);
            s->live = 0;
        }
        /* else the Subscribe response sends the Unsubscribe */
    } else if (k) {
        slot_release(s);
        conn_maybe_idle(k);
    }
    sub_put(s);
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

/* Sends r on the locator, or fails it on the next loop turn. */
static int locator_req(ess_stream_client_t *c, req_t *r)
{
    if (c->locator == NULL || !conn_usable(c->locator)) {
        r->kind = R_STATUS;
        defer(c, r, ESS_ECONN);
    } else {
        conn_queue_req(c->locator, r);
    }
    return ESS_OK;
}

int ess_stream_exists(ess_stream_client_t *c, const char *stream, ess_stream_status_cb cb, void *ud)
{
    if (c == NULL || !name_ok(stream) || cb == NULL)
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    req_t *r = req_new(R_EXISTS, stream);
    r->cb = cb;
    r->ud = ud;
    return locator_req(c, r);
}

int ess_stream_create_stream(ess_stream_client_t *c, const char *stream, const ess_proto_kv_t *args,
                             size_t nargs, ess_stream_status_cb cb, void *ud)
{
    if (c == NULL || !name_ok(stream) || nargs > 64 || (nargs && args == NULL))
        return ESS_EINVAL;
    for (size_t i = 0; i < nargs; i++)
        if (!name_ok(args[i].key) || !name_ok(args[i].value))
            return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    req_t *r = req_new(R_CREATE, stream);
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
    if (c == NULL || !name_ok(stream))
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    req_t *r = req_new(R_DELETE, stream);
    r->cb = cb;
    r->ud = ud;
    return locator_req(c, r);
}

int ess_stream_publisher_create(ess_stream_client_t *c, const char *stream,
                                const ess_stream_pub_cbs_t *cbs, void *ud, ess_stream_pub_t **out)
{
    if (c == NULL || cbs == NULL || !name_ok(stream))
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess_stream_pub_t *p = ess_xcalloc(1, sizeof *p);
    p->c = c;
    p->stream = ess_xstrdup(stream);
    p->cbs = *cbs;
    p->ud = ud;
    p->next_id = 1;
    p->next = c->pubs;
    if (c->pubs)
        c->pubs->prev = p;
    c->pubs = p;
    *out = p;
    if (c->locator == NULL || !conn_usable(c->locator) ||
        (c->lb_mode && c->locator->npubs >= MAX_PUBS)) {
        req_t *r = req_new(R_PUB_FAIL, NULL);
        r->pub = p;
        p->refs++;
        defer(c, r, ESS_ECONN);
    } else if (c->lb_mode) {
        conn_t *k = conn_for(c, c->url.host, c->port, 1);
        int id = 0;
        while (k->pubs[id] != NULL)
            id++;
        k->pubs[id] = p;
        k->npubs++;
        p->conn = k;
        p->id = id;
        if (k->state == C_READY)
            send_declare(p);
    } else {
        req_t *r = req_new(R_LOCATE_PUB, stream);
        r->pub = p;
        p->refs++;
        conn_queue_req(c->locator, r);
    }
    return ESS_OK;
}

int ess_stream_publish(ess_stream_pub_t *p, const uint8_t *const *msgs, const size_t *lens,
                       size_t n, uint64_t *first_id)
{
    if (p == NULL || (n && (msgs == NULL || lens == NULL)))
        return ESS_EINVAL;
    conn_t *k = p->conn;
    if (p->dead || !p->ready || k == NULL || k->state != C_READY)
        return ESS_ESTATE;
    size_t limit = k->frame_max ? k->frame_max : RECV_LIMIT;
    for (size_t i = 0; i < n; i++)
        if (ess_proto_publish_size(1, lens[i]) > limit)
            return ESS_ETOOBIG;
    if (first_id)
        *first_id = p->next_id;
    ess_proto_buf_t b = {0};
    size_t i = 0;
    while (i < n) {
        size_t j = i, total = 0;
        while (j < n && ess_proto_publish_size(j - i + 1, total + lens[j]) <= limit) {
            total += lens[j];
            j++;
        }
        ess_proto_enc_publish(&b, (uint8_t)p->id, p->next_id, msgs + i, lens + i, j - i);
        p->next_id += j - i;
        i = j;
    }
    conn_write(k, &b);
    return ESS_OK;
}

void ess_stream_publisher_close(ess_stream_pub_t *p)
{
    if (p == NULL || p->user_gone)
        return;
    p->user_gone = 1;
    conn_t *k = p->conn;
    if (k && p->on_wire && k->state == C_READY) {
        ess_proto_buf_t b = {0};
        ess_proto_enc_delete_publisher(&b, ++k->next_corr, (uint8_t)p->id);
        conn_write(k, &b);
    }
    p->dead = 1;
    pub_slot_release(p);
    if (k)
        conn_maybe_idle(k);
    pub_put(p);
}
