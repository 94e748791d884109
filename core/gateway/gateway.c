/*
 * The gateway's shared state: the stream client every session subscribes
 * through, the index of live sessions by event-stream id (one live session
 * per event stream: a newer one replaces the older), and the one-second
 * timer that closes stalled clients. Owns those; the per-connection logic
 * is in session.c.
 */
#include "gateway/gateway.h"
#include "ess.h"
#include "metrics/metrics.h"
#include "mq/classic.h"
#include "mq/stream_client.h"
#include "util/log.h"

#include <string.h>

#define BUCKETS 4096

typedef struct ess_gateway_s {
    ess_app_t *app;
    ess_stream_client_t *client;
    ess_classic_t *classic; /* Version 1: created at start, or at the first classic route */
    int closing_clients;    /* broker clients still closing during stop */
    uv_timer_t timer;
    ess_session_t *buckets[BUCKETS];
    int stopping;
    void (*stopped)(ess_app_t *app);
} gateway_t;

static ess_session_t **slot_of(gateway_t *g, int64_t id, ess_session_t *s)
{
    ess_session_t **p = &g->buckets[(uint64_t)id % BUCKETS];
    while (*p && *p != s)
        p = ess_session_next_slot(*p);
    return p;
}

/* Version 1 deployments need only the classic connection; otherwise the stream one. */
static int broker_up(gateway_t *g)
{
    if (g->app->cfg->broker_version == 1)
        return g->classic != NULL && ess_classic_connected(g->classic);
    return g->client != NULL && ess_stream_client_connected(g->client);
}

static int start_classic(gateway_t *g)
{
    const ess_config_t *cfg = g->app->cfg;
    ess_classic_opts_t opts = {
        .url = cfg->broker_url,
        .heartbeat_s = cfg->heartbeat_s,
        .reconnect_min_ms = cfg->reconnect_min_ms,
        .reconnect_max_ms = cfg->reconnect_max_ms,
        .connection_name = "essd-classic",
    };
    return ess_classic_create(g->app->loop, &opts, &g->classic);
}

static void tick(uv_timer_t *t)
{
    gateway_t *g = t->data;
    uint64_t now = uv_now(g->app->loop);
    ess_metrics.broker_connected = broker_up(g);
    for (size_t b = 0; b < BUCKETS; b++) {
        ess_session_t *s = g->buckets[b];
        while (s) {
            ess_session_t *next = *ess_session_next_slot(s);
            ess_session_check_stall(s, now);
            s = next;
        }
    }
}

int ess_gateway_start(ess_app_t *app, char *err, size_t errlen)
{
    const ess_config_t *cfg = app->cfg;
    ess_stream_client_opts_t opts = {
        .url = cfg->broker_url,
        .stream_port = cfg->stream_port,
        .load_balancer_mode = cfg->load_balancer_mode,
        .heartbeat_s = cfg->heartbeat_s,
        .reconnect_min_ms = cfg->reconnect_min_ms,
        .reconnect_max_ms = cfg->reconnect_max_ms,
        .connection_name = "essd",
        /* Bytes in flight from the broker come on top of a paused
         * session's budget: a quarter of it, in as many chunks as fit. */
        .credit_window_bytes = (size_t)cfg->outbound_budget_bytes / 4,
    };
    gateway_t *g = ess_xcalloc(1, sizeof *g);
    g->app = app;
    if (ess_stream_client_create(app->loop, &opts, &g->client) != ESS_OK) {
        snprintf(err, errlen, "broker.url: not a valid amqp:// URL");
        free(g);
        return ESS_EINVAL;
    }
    if (cfg->broker_version == 1 && start_classic(g) != ESS_OK) {
        snprintf(err, errlen, "broker.url: not a valid amqp:// URL for classic mode");
        ess_stream_client_close(g->client, NULL, NULL);
        free(g);
        return ESS_EINVAL;
    }
    uv_timer_init(app->loop, &g->timer);
    g->timer.data = g;
    uv_timer_start(&g->timer, tick, 1000, 1000);
    app->gateway = g;
    return ESS_OK;
}

static void client_closed(void *ud)
{
    gateway_t *g = ud;
    if (--g->closing_clients > 0)
        return;
    ess_app_t *app = g->app;
    void (*done)(ess_app_t *) = g->stopped;
    app->gateway = NULL;
    free(g);
    if (done)
        done(app);
}

static void timer_closed(uv_handle_t *h)
{
    gateway_t *g = h->data;
    ess_stream_client_t *c = g->client;
    ess_classic_t *cc = g->classic;
    g->client = NULL;
    g->classic = NULL;
    g->closing_clients = cc ? 2 : 1;
    if (cc)
        ess_classic_close(cc, client_closed, g);
    ess_stream_client_close(c, client_closed, g);
}

void ess_gateway_stop(ess_app_t *app, void (*done)(ess_app_t *app))
{
    gateway_t *g = app->gateway;
    if (g == NULL) {
        if (done)
            done(app);
        return;
    }
    if (g->stopping)
        return;
    g->stopping = 1;
    g->stopped = done;
    for (size_t b = 0; b < BUCKETS; b++)
        for (ess_session_t *s = g->buckets[b]; s; s = *ess_session_next_slot(s))
            ess_session_close(s, 1001, "the server is shutting down", 0);
    uv_close((uv_handle_t *)&g->timer, timer_closed);
}

void ess_gateway_stream_deleted(ess_app_t *app, int64_t id, const char *uuid)
{
    gateway_t *g = app->gateway;
    ess_log_info("gateway: event stream %lld (%s) deleted", (long long)id, uuid);
    if (g == NULL)
        return;
    for (ess_session_t *s = g->buckets[(uint64_t)id % BUCKETS]; s; s = *ess_session_next_slot(s))
        if (ess_session_es_id(s) == id)
            ess_session_close(s, 1000, "The stream has been deleted", 0);
}

int ess_gateway_broker_ready(ess_app_t *app)
{
    gateway_t *g = app->gateway;
    return g != NULL && broker_up(g);
}

struct ess_classic_s *ess_gateway_classic_client(ess_app_t *app)
{
    gateway_t *g = app->gateway;
    if (g == NULL || g->stopping)
        return NULL;
    if (g->classic == NULL && start_classic(g) != ESS_OK)
        g->classic = NULL;
    return g->classic;
}

struct ess_stream_client_s *ess_gateway_stream_client(ess_app_t *app)
{
    gateway_t *g = app->gateway;
    return g && !g->stopping ? g->client : NULL;
}

void ess_gateway_attach(ess_app_t *app, ess_session_t *s)
{
    gateway_t *g = app->gateway;
    if (g == NULL)
        return;
    int64_t id = ess_session_es_id(s);
    for (ess_session_t *o = g->buckets[(uint64_t)id % BUCKETS]; o; o = *ess_session_next_slot(o))
        if (ess_session_es_id(o) == id)
            ess_session_close(o, 1000, "replaced by a newer connection", 0);
    ess_session_t **head = &g->buckets[(uint64_t)id % BUCKETS];
    *ess_session_next_slot(s) = *head;
    *head = s;
}

void ess_gateway_detach(ess_app_t *app, ess_session_t *s)
{
    gateway_t *g = app->gateway;
    if (g == NULL)
        return;
    ess_session_t **p = slot_of(g, ess_session_es_id(s), s);
    if (*p == s)
        *p = *ess_session_next_slot(s);
    *ess_session_next_slot(s) = NULL;
}
