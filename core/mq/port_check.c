/*
 * The TCP reachability check of port_check.h: getaddrinfo, then a connect
 * to each address in turn until one is accepted, under one timer. Owns the
 * handles of a running check and frees them in their close callbacks; the
 * result struct is the caller's.
 */
#include "mq/port_check.h"
#include "ess.h"
#include "util/log.h"

#include <string.h>

typedef struct {
    ess_port_check_t *st;
    uv_loop_t *loop;
    uv_getaddrinfo_t gai;
    struct addrinfo *addrs, *next;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_timer_t timer;
    int tcp_open, timer_open, resolving, closing, finished;
    int last_error;
} check_t;

/* Free the check once its result is in and nothing of it is pending. */
static void maybe_free(check_t *c)
{
    if (!c->closing || c->tcp_open || c->timer_open || c->resolving)
        return;
    if (c->addrs)
        uv_freeaddrinfo(c->addrs);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    check_t *c = h->data;
    if (h == (uv_handle_t *)&c->tcp)
        c->tcp_open = 0;
    else
        c->timer_open = 0;
    maybe_free(c);
}

/* Record the result once, then close what is open. */
static void finish(check_t *c, int ok, const char *why)
{
    if (!c->finished) {
        ess_port_check_t *st = c->st;
        c->finished = 1;
        if (ok && st->state != 1)
            ess_log_info("broker: %s %s accepts connections", st->what, st->where);
        else if (!ok && (st->state != 0 || strcmp(st->error, why) != 0))
            ess_log_warn("broker: nothing accepts connections at %s, %s: %s; /health/ready "
                         "reports not ready",
                         st->where, st->what, why);
        st->state = ok;
        snprintf(st->error, sizeof st->error, "%s", ok ? "" : why);
        st->done_ms = uv_now(c->loop);
        st->inflight = 0;
    }
    if (c->closing)
        return;
    c->closing = 1;
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
    if (c->timer_open)
        uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->gai);
    maybe_free(c);
}

static void try_next(check_t *c);

static void tcp_closed_for_retry(uv_handle_t *h)
{
    check_t *c = h->data;
    c->tcp_open = 0;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    try_next(c);
}

static void connected(uv_connect_t *req, int status)
{
    check_t *c = req->data;
    if (c->closing)
        return;
    if (status == 0) {
        finish(c, 1, NULL);
        return;
    }
    c->last_error = status;
    uv_close((uv_handle_t *)&c->tcp, tcp_closed_for_retry);
}

static void try_next(check_t *c)
{
    while (c->next != NULL) {
        struct addrinfo *a = c->next;
        c->next = a->ai_next;
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
            continue;
        uv_tcp_init(c->loop, &c->tcp);
        c->tcp.data = c;
        c->tcp_open = 1;
        c->conn.data = c;
        int rc = uv_tcp_connect(&c->conn, &c->tcp, a->ai_addr, connected);
        if (rc == 0)
            return;
        c->last_error = rc;
        uv_close((uv_handle_t *)&c->tcp, tcp_closed_for_retry);
        return;
    }
    finish(c, 0, c->last_error ? uv_strerror(c->last_error) : "no address");
}

static void timed_out(uv_timer_t *t)
{
    finish(t->data, 0, "no answer within the timeout");
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    check_t *c = req->data;
    c->addrs = res;
    c->resolving = 0;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (status != 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot resolve the host: %s", uv_strerror(status));
        finish(c, 0, why);
        return;
    }
    c->next = res;
    try_next(c);
}

int ess_port_check_start(uv_loop_t *loop, const char *host, int port, int timeout_ms,
                         ess_port_check_t *st)
{
    if (st->inflight)
        return ESS_ESTATE;
    check_t *c = ess_xcalloc(1, sizeof *c);
    c->st = st;
    c->loop = loop;
    int v6 = strchr(host, ':') != NULL;
    snprintf(st->where, sizeof st->where, v6 ? "[%s]:%d" : "%s:%d", host, port);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_open = 1;
    uv_timer_start(&c->timer, timed_out, (uint64_t)timeout_ms, 0);
    st->inflight = 1;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    c->gai.data = c;
    c->resolving = 1;
    int rc = uv_getaddrinfo(loop, &c->gai, resolved, host, service, &hints);
    if (rc != 0) {
        c->resolving = 0;
        char why[160];
        snprintf(why, sizeof why, "cannot resolve the host: %s", uv_strerror(rc));
        finish(c, 0, why);
    }
    return ESS_OK;
}
