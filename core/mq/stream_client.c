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

void ess__stream_client_maybe_finish(ess_stream_client_t *c)
{
    if (c->handles > 0)
        return;
    while (c->conns) {
        ess__stream_conn_t *k = c->conns;
        c->conns = k->next;
        while (k->reqs) {
            ess__stream_req_t *r = k->reqs;
            k->reqs = r->next;
            ess__stream_req_free(r);
        }
        ess_proto_buf_free(&k->rbuf);
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
        free(s);
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

int ess__stream_name_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= 255;
}
