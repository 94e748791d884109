/*
 * Broker reachability for /health/ready: a non-blocking TCP connect to the
 * broker's stream port every few seconds. Owns the probe's handles; the
 * live connections and their subscriptions are in ws.c and session.c.
 */
#include "gateway/gateway.h"
#include "ess.h"
#include "metrics/metrics.h"
#include "mq/url.h"
#include "util/log.h"

#include <string.h>

typedef struct ess_gateway_s {
    ess_app_t *app;
    uv_timer_t timer;
    uv_tcp_t *probe; /* in flight, or NULL */
    uv_connect_t connect;
    uv_getaddrinfo_t gai;
    char host[256];
    char port[8];
    int reachable;
    int stopping;
    void (*stopped)(ess_app_t *app);
} gateway_t;

static void probe_closed(uv_handle_t *h)
{
    free(h);
}

static void probe_done(uv_connect_t *req, int status)
{
    gateway_t *g = req->data;
    int up = status == 0;
    if (up != g->reachable)
        ess_log_info("broker: %s:%s %s", g->host, g->port, up ? "reachable" : "unreachable");
    g->reachable = up;
    ess_metrics.broker_connected = up;
    uv_close((uv_handle_t *)g->probe, probe_closed);
    g->probe = NULL;
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    gateway_t *g = req->data;
    if (status != 0 || g->stopping) {
        if (status != 0 && g->reachable)
            ess_log_warn("broker: cannot resolve %s: %s", g->host, uv_strerror(status));
        if (status != 0)
            g->reachable = 0;
        uv_freeaddrinfo(res);
        g->probe = NULL;
        return;
    }
    g->probe = ess_xmalloc(sizeof *g->probe);
    uv_tcp_init(g->app->loop, g->probe);
    g->connect.data = g;
    if (uv_tcp_connect(&g->connect, g->probe, res->ai_addr, probe_done) != 0) {
        g->reachable = 0;
        uv_close((uv_handle_t *)g->probe, probe_closed);
        g->probe = NULL;
    }
    uv_freeaddrinfo(res);
}

static void tick(uv_timer_t *t)
{
    gateway_t *g = t->data;
    if (g->probe != NULL || g->stopping)
        return;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    g->gai.data = g;
    g->probe = (uv_tcp_t *)&g->gai; /* marks "in flight" until resolved */
    if (uv_getaddrinfo(g->app->loop, &g->gai, resolved, g->host, g->port, &hints) != 0)
        g->probe = NULL;
}

int ess_gateway_start(ess_app_t *app, char *err, size_t errlen)
{
    ess_url_t url;
    if (ess_url_parse(app->cfg->broker_url, &url) != ESS_OK) {
        snprintf(err, errlen, "broker.url: not a valid amqp:// URL");
        return ESS_EINVAL;
    }
    gateway_t *g = ess_xcalloc(1, sizeof *g);
    g->app = app;
    snprintf(g->host, sizeof g->host, "%s", url.host);
    snprintf(g->port, sizeof g->port, "%d", app->cfg->stream_port);
    ess_url_free(&url);
    uv_timer_init(app->loop, &g->timer);
    g->timer.data = g;
    uv_timer_start(&g->timer, tick, 0, 2000);
    app->gateway = g;
    return ESS_OK;
}

static void timer_closed(uv_handle_t *h)
{
    gateway_t *g = h->data;
    ess_app_t *app = g->app;
    void (*done)(ess_app_t *) = g->stopped;
    app->gateway = NULL;
    free(g);
    if (done)
        done(app);
}

void ess_gateway_stop(ess_app_t *app, void (*done)(ess_app_t *app))
{
    gateway_t *g = app->gateway;
    if (g == NULL || g->stopping) {
        if (g == NULL && done)
            done(app);
        return;
    }
    g->stopping = 1;
    g->stopped = done;
    uv_close((uv_handle_t *)&g->timer, timer_closed);
}

void ess_gateway_stream_deleted(ess_app_t *app, int64_t id, const char *uuid)
{
    (void)app;
    ess_log_info("gateway: event stream %lld (%s) deleted", (long long)id, uuid);
}

int ess_gateway_broker_ready(ess_app_t *app)
{
    return app->gateway != NULL && app->gateway->reachable;
}
