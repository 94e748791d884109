/*
 * The asynchronous stream client: connections, handshake, heartbeats,
 * reconnects with backoff, subscriptions with credit-based flow control,
 * Metadata lookups, stream create/delete and publishers with confirms. It
 * owns every libuv handle it opens and frees memory only after the
 * handles' close callbacks. It does not parse bytes itself: frames go
 * through mq/proto.h, chunks through mq/chunk.h, message sections through
 * mq/amqp10.h.
 *
 * This file owns the client object (create, close, the final free), the
 * request objects and the deferred queue that delivers results known at
 * once on the next loop turn. Connections are in stream_conn.c,
 * subscriptions in stream_sub.c, publishers in stream_pub.c, answers to
 * requests and Metadata in stream_locator.c (see mq/stream_internal.h).
 *
 * Lifetimes: a subscription or publisher is freed only when it is released
 * (ended, failed or closed by its user), no request refers to it, it holds
 * no connection slot and no callback of its own is on the stack. User
 * callbacks never run from inside a public call: results that are known at
 * once are deferred to the next loop turn.
 */
#include "mq/stream_client.h"

#include <string.h>

#include "ess.h"
#include "mq/stream_internal.h"
#include "mq/url.h"

#define MAX_CREDIT 1000 /* chunks outstanding per subscription */

static void on_defer_timer(uv_timer_t *t);

uint32_t ess__stream_jitter(ess_stream_client_t *c, uint32_t n)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return n ? (uint32_t)(c->rng % n) : 0;
}

void ess__stream_req_free(ess__stream_req_t *r)
{
    free(r->stream);
    for (size_t i = 0; i < r->nargs; i++) {
        free((char *)r->args[i].key);
        free((char *)r->args[i].value);
    }
    free(r->args);
    free(r);
}

ess__stream_req_t *ess__stream_req_new(int kind, const char *stream)
{
    ess__stream_req_t *r = ess_xcalloc(1, sizeof *r);
    r->kind = kind;
    r->stream = stream ? ess_xstrdup(stream) : NULL;
    return r;
}

void ess__stream_defer(ess_stream_client_t *c, ess__stream_req_t *r, int status)
{
    r->status = status;
    r->next = c->deferred;
    c->deferred = r;
    uv_timer_start(&c->defer_timer, on_defer_timer, 0, 0);
}

static void on_defer_timer(uv_timer_t *t)
{
    ess_stream_client_t *c = t->data;
    ess__stream_req_t *list = c->deferred, *rev = NULL;
    c->deferred = NULL;
    while (list) { /* run in the order they were deferred */
        ess__stream_req_t *r = list;
        list = r->next;
        r->next = rev;
        rev = r;
    }
    while (rev) {
        ess__stream_req_t *r = rev;
        rev = r->next;
        if (c->closing) {
            ess__stream_req_free(r);
            continue;
        }
        if (r->kind == R_SUB_FAIL) {
            r->sub->refs--;
            ess__stream_sub_fail(r->sub, r->status);
            ess__stream_sub_put(r->sub);
        } else if (r->kind == R_PUB_FAIL) {
            r->pub->refs--;
            ess__stream_pub_fail(r->pub, r->status, 0);
            ess__stream_pub_put(r->pub);
        } else if (r->kind == R_STATS) {
            if (r->stats_cb)
                r->stats_cb(r->status, NULL, r->ud);
        } else if (r->cb) {
            r->cb(r->status, r->ud);
        }
        ess__stream_req_free(r);
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
    c->read_from = opts->read_from;
    ess__stream_node_add(c, c->url.host, strlen(c->url.host), c->port, 0);
    if ((unsigned)opts->read_from > ESS_READ_ANY ||
        (opts->stream_hosts != NULL && ess__stream_nodes_parse(c, opts->stream_hosts) != ESS_OK)) {
        for (int i = 0; i < c->nnodes; i++)
            free(c->nodes[i].host);
        ess_url_free(&c->url);
        free(c);
        return ESS_EINVAL;
    }
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
    c->locator = ess__stream_conn_new(c, c->url.host, c->port, 1);
    *out = c;
    return ESS_OK;
}

int ess_stream_client_connected(const ess_stream_client_t *c)
{
    return c->locator != NULL && c->locator->state == C_READY;
}

const char *ess_stream_client_broker_version(const ess_stream_client_t *c)
{
    return c != NULL && c->locator != NULL ? c->locator->version : NULL;
}

/* The entry of out[0..n) for host:port, or NULL. */
static ess_stream_node_info_t *node_find(ess_stream_node_info_t *out, size_t n, const char *host,
                                         int port)
{
    for (size_t i = 0; i < n; i++)
        if (out[i].port == port && strcmp(out[i].host, host) == 0)
            return &out[i];
    return NULL;
}

size_t ess_stream_client_nodes(const ess_stream_client_t *c, ess_stream_node_info_t *out,
                               size_t max, uint64_t *lost)
{
    size_t n = 0;
    if (lost)
        *lost = c ? c->conns_lost : 0;
    if (c == NULL)
        return 0;
    for (int i = 0; i < c->nnodes && n < max; i++) {
        const ess__stream_node_t *nd = &c->nodes[i];
        out[n++] = (ess_stream_node_info_t){.host = nd->host,
                                            .port = nd->port,
                                            .configured = !nd->learned,
                                            .locator = i == c->node};
    }
    for (const ess__stream_conn_t *k = c->conns; k; k = k->next) {
        if (k->state == C_DEAD)
            continue;
        ess_stream_node_info_t *e = node_find(out, n, k->host, k->port);
        if (e == NULL && k->adv_host)
            e = node_find(out, n, k->adv_host, k->adv_port);
        if (e == NULL && n < max) {
            e = &out[n++];
            *e = (ess_stream_node_info_t){.host = k->host, .port = k->port};
        }
        if (e == NULL)
            continue;
        e->connections++;
        e->ready += k->state == C_READY;
        e->subscriptions += k->nsubs;
        e->publishers += k->npubs;
    }
    return n;
}

void ess__stream_client_maybe_finish(ess_stream_client_t *c)
{
    if (c->handles > 0)
        return;
    while (c->conns) {
        ess__stream_conn_t *k = c->conns;
        c->conns = k->next;
        for (ess__stream_req_t *r = ess__stream_conn_take_reqs(k), *next; r; r = next) {
            next = r->next;
            ess__stream_req_free(r);
        }
        ess_proto_buf_free(&k->rbuf);
        ess_proto_buf_free(&k->wbuf); /* frames queued for a turn that never came */
        free(k->host);
        free(k->adv_host);
        free(k->version);
        free(k);
    }
    while (c->deferred) {
        ess__stream_req_t *r = c->deferred;
        c->deferred = r->next;
        ess__stream_req_free(r);
    }
    while (c->subs) {
        ess_stream_sub_t *s = c->subs;
        c->subs = s->next;
        free(s->stream);
        free(s->avoid_host);
        free(s);
    }
    for (int i = 0; i < c->nnodes; i++) {
        free(c->nodes[i].host);
        free(c->nodes[i].adv_host);
    }
    while (c->pubs) {
        ess_stream_pub_t *p = c->pubs;
        c->pubs = p->next;
        ess__stream_pub_destroy(p);
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
    ess__stream_client_maybe_finish(c);
}

void ess_stream_client_close(ess_stream_client_t *c, void (*done)(void *ud), void *ud)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    c->done = done;
    c->done_ud = ud;
    for (ess__stream_conn_t *k = c->conns; k; k = k->next)
        ess__stream_conn_destroy(k); /* a no-op when its handles are already closing */
    ess__stream_tail_close_all(c);
    uv_close((uv_handle_t *)&c->defer_timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->retry_timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->turn, on_client_handle_closed);
}

int ess__stream_node_add(ess_stream_client_t *c, const char *host, size_t hostlen, int port,
                         int learned)
{
    if (host == NULL || hostlen == 0 || hostlen > 253 || port < 1 || port > 65535)
        return -1;
    for (int i = 0; i < c->nnodes; i++) {
        const ess__stream_node_t *n = &c->nodes[i];
        if ((n->port == port && strlen(n->host) == hostlen &&
             memcmp(n->host, host, hostlen) == 0) ||
            (n->adv_host && n->adv_port == port && strlen(n->adv_host) == hostlen &&
             memcmp(n->adv_host, host, hostlen) == 0))
            return i; /* known, maybe under the name it advertised */
    }
    if (c->nnodes >= MAX_NODES || memchr(host, '\0', hostlen) != NULL)
        return -1;
    ess__stream_node_t *n = &c->nodes[c->nnodes];
    n->host = ess_xstrndup(host, hostlen);
    n->port = port;
    n->learned = learned;
    return c->nnodes++;
}

int ess__stream_nodes_parse(ess_stream_client_t *c, const char *list)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ')
            end++;
        const char *host = p, *colon;
        size_t hostlen;
        if (*p == '[') {
            const char *close = memchr(p, ']', (size_t)(end - p));
            if (close == NULL || close + 1 >= end || close[1] != ':')
                return ESS_EINVAL;
            host = p + 1;
            hostlen = (size_t)(close - host);
            colon = close + 1;
        } else {
            colon = NULL;
            for (const char *q = p; q < end; q++)
                if (*q == ':')
                    colon = q;
            if (colon == NULL)
                return ESS_EINVAL;
            hostlen = (size_t)(colon - p);
            if (memchr(p, ':', hostlen) != NULL)
                return ESS_EINVAL; /* a bare IPv6 address needs brackets */
        }
        long port = 0;
        const char *q = colon + 1;
        if (q == end || end - q > 5)
            return ESS_EINVAL;
        for (; q < end; q++) {
            if (*q < '0' || *q > '9')
                return ESS_EINVAL;
            port = port * 10 + (*q - '0');
        }
        if (hostlen == 0 || port < 1 || port > 65535 || c->nnodes >= MAX_NODES)
            return ESS_EINVAL;
        if (ess__stream_node_add(c, host, hostlen, (int)port, 0) < 0)
            return ESS_EINVAL;
        p = end;
    }
    return ESS_OK;
}

const char *ess_stream_client_locator_node(const ess_stream_client_t *c, char *buf, size_t len)
{
    const ess__stream_node_t *n = &c->nodes[c->node];
    int v6 = strchr(n->host, ':') != NULL;
    int w = snprintf(buf, len, "%s%s%s:%d", v6 ? "[" : "", n->host, v6 ? "]" : "", n->port);
    return w >= 0 && (size_t)w < len ? buf : NULL;
}

int ess__stream_name_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= 255;
}
