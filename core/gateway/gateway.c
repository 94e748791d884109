/*
 * The gateway's shared state: the broker clients every session subscribes
 * through (the stream client; the classic one at start in Version 1, or on
 * the first classic route), the index of live sessions by event-stream id
 * (its own entries; one live session per event stream: a newer one
 * replaces the older), its listener of registry deletions, and the
 * one-second timer that closes stalled clients. Owns those; the
 * per-connection logic is in session.c.
 */
#include "gateway/gateway.h"
#include "gateway/console.h"
#include "ess.h"
#include "metrics/metrics.h"
#include "mq/classic.h"
#include "mq/stream_client.h"
#include "mq/source.h"
#include "util/log.h"

#include <string.h>
#include <sys/random.h>

#define BUCKETS 4096
#define TOKENS 32

/* One entry of the index: the gateway's own node, so sessions know nothing
 * of how they are indexed. */
typedef struct entry_s {
    struct entry_s *next;
    int64_t id;
    ess_session_t *s;
    uint64_t token; /* its connection claim (shared registry) */
    int claimed;    /* its own claim was read back from the log */
} entry_t;

typedef struct ess_gateway_s {
    ess_app_t *app;
    ess_stream_client_t *client;
    ess_classic_t *classic; /* Version 1: created at start, or at the first classic route */
    int closing_clients;    /* broker clients still closing during stop */
    uv_timer_t timer;
    entry_t *buckets[BUCKETS];
    size_t count; /* sessions in the index */
    int stopping;
    void (*stopped)(ess_app_t *app);
    uint64_t tokens[TOKENS]; /* random claim tokens not handed out yet (new_token) */
    size_t ntokens;
} gateway_t;

static entry_t **bucket_of(gateway_t *g, int64_t id)
{
    return &g->buckets[(uint64_t)id % BUCKETS];
}

/* The sessions of the index that match id (or all of them with all set),
 * copied out first: closing a session detaches it, which edits the chain
 * being walked. The caller frees the array. */
static ess_session_t **snapshot(gateway_t *g, int all, int64_t id, size_t *n)
{
    *n = 0;
    size_t from = all ? 0 : (uint64_t)id % BUCKETS, to = all ? BUCKETS : from + 1, cap = 0;
    if (all)
        cap = g->count;
    else /* one chain: size the copy to its matches (none, on most connections) */
        for (entry_t *e = g->buckets[from]; e; e = e->next)
            cap += e->id == id;
    if (cap == 0)
        return NULL;
    ess_session_t **v = ess_xmalloc(cap * sizeof *v);
    for (size_t b = from; b < to; b++)
        for (entry_t *e = g->buckets[b]; e; e = e->next)
            if (all || e->id == id)
                v[(*n)++] = e->s;
    return v;
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
    size_t n;
    ess_session_t **v = snapshot(g, 1, 0, &n);
    for (size_t i = 0; i < n; i++)
        ess_session_check_stall(v[i], now);
    free(v);
}

/* A connection claim read from the shared registry's log (in log order):
 * the session whose own claim came earlier is replaced by the newer one,
 * wherever that one is. A session whose claim is not read back yet came
 * later in the log than this one and stays. */
static void on_claim(gateway_t *g, const ess_es_row_t *row)
{
    size_t n = 0;
    ess_session_t *v[16];
    for (entry_t *e = *bucket_of(g, row->id); e; e = e->next) {
        if (e->id != row->id)
            continue;
        if (e->token == row->token)
            e->claimed = 1;
        else if (e->claimed && n < ESS_ARRAY_SIZE(v))
            v[n++] = e->s;
    }
    for (size_t i = 0; i < n; i++)
        ess_session_close(v[i], 1000, "replaced by a newer connection", 0);
}

/* The registry deleted an event stream: close its live session at once
 * (1000); or a connection claim was read. */
static void on_registry(void *ud, ess_registry_event_t ev, const ess_es_row_t *row)
{
    gateway_t *g = ud;
    if (ev == ESS_REGISTRY_CLAIMED) {
        on_claim(g, row);
        return;
    }
    if (ev != ESS_REGISTRY_DELETED)
        return;
    ess_log_info("gateway: event stream %lld (%s) deleted", (long long)row->id, row->uuid);
    size_t n;
    ess_session_t **v = snapshot(g, 0, row->id, &n);
    for (size_t i = 0; i < n; i++)
        ess_session_close(v[i], 1000, "The stream has been deleted", 0);
    free(v);
}

static int broker_ready(ess_app_t *app)
{
    gateway_t *g = app->gateway;
    return g != NULL && broker_up(g);
}

int ess_gateway_start(ess_app_t *app, char *err, size_t errlen)
{
    const ess_config_t *cfg = app->cfg;
    ess_stream_client_opts_t opts = {
        .url = cfg->broker_url,
        .stream_port = cfg->stream_port,
        .stream_hosts = cfg->stream_hosts,
        .read_from = cfg->read_from,
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
    app->broker_ready = broker_ready;
    if (app->registry)
        ess_registry_listen(app->registry, on_registry, g);
    ess_console_start(app);
    return ESS_OK;
}

static void client_closed(void *ud)
{
    gateway_t *g = ud;
    if (--g->closing_clients > 0)
        return;
    ess_app_t *app = g->app;
    void (*done)(ess_app_t *) = g->stopped;
    if (app->registry && app->registry->listener_ud == g)
        ess_registry_listen(app->registry, NULL, NULL);
    for (size_t b = 0; b < BUCKETS; b++) /* sessions not yet detached: their entries */
        while (g->buckets[b]) {
            entry_t *e = g->buckets[b];
            g->buckets[b] = e->next;
            free(e);
        }
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
    ess_console_stop(app);
    size_t n;
    ess_session_t **v = snapshot(g, 1, 0, &n);
    for (size_t i = 0; i < n; i++)
        ess_session_close_resumable(v[i], 1001, "the server is shutting down");
    free(v);
    uv_close((uv_handle_t *)&g->timer, timer_closed);
}

/* The classic client, created on first use when broker.version is not 1
 * (a route hook may still choose classic). */
static ess_classic_t *classic_client(gateway_t *g)
{
    if (g->classic == NULL && start_classic(g) != ESS_OK)
        g->classic = NULL;
    return g->classic;
}

int ess_gateway_subscribe(ess_app_t *app, const ess_route_t *route, ess_offset_spec_t from,
                          const ess_source_cbs_t *cbs, void *ud, ess_source_t **out)
{
    gateway_t *g = app->gateway;
    if (g == NULL || g->stopping)
        return ESS_ESTATE;
    if (route->classic) {
        ess_classic_t *c = classic_client(g);
        if (c == NULL)
            return ESS_ECONN;
        return ess_classic_source_subscribe(c, route->exchange, route->routing_key, cbs, ud, out);
    }
    if (g->client == NULL || !ess_stream_client_connected(g->client))
        return ESS_ECONN;
    return ess_stream_source_subscribe(g->client, route->stream, from, cbs, ud, out);
}

/* A connection claim's token: random, from a pool that one getrandom call
 * fills for TOKENS claims (at most 256 bytes, which getrandom never
 * returns in part); from the clock and salt's address when the kernel
 * gives none. */
static uint64_t new_token(gateway_t *g, const void *salt)
{
    if (g->ntokens == 0) {
        ssize_t got = getrandom(g->tokens, sizeof g->tokens, 0);
        g->ntokens = got > 0 ? (size_t)got / sizeof g->tokens[0] : 0;
    }
    if (g->ntokens > 0)
        return g->tokens[--g->ntokens];
    return uv_hrtime() ^ (uint64_t)(uintptr_t)salt;
}

void ess_gateway_attach(ess_app_t *app, ess_session_t *s)
{
    gateway_t *g = app->gateway;
    if (g == NULL)
        return;
    int64_t id = ess_session_es_id(s);
    size_t n;
    ess_session_t **v = snapshot(g, 0, id, &n);
    for (size_t i = 0; i < n; i++)
        ess_session_close(v[i], 1000, "replaced by a newer connection", 0);
    free(v);
    entry_t *e = ess_xcalloc(1, sizeof *e);
    e->id = id;
    e->s = s;
    e->token = new_token(g, e);
    /* Tell the other replicas (the shared registry; nothing for SQLite). */
    ess_registry_claim(g->app->registry, id, e->token);
    e->next = *bucket_of(g, id);
    *bucket_of(g, id) = e;
    g->count++;
}

void ess_gateway_detach(ess_app_t *app, ess_session_t *s)
{
    gateway_t *g = app->gateway;
    if (g == NULL)
        return;
    for (entry_t **p = bucket_of(g, ess_session_es_id(s)); *p; p = &(*p)->next) {
        if ((*p)->s == s) {
            entry_t *e = *p;
            *p = e->next;
            free(e);
            g->count--;
            return;
        }
    }
}

size_t ess_gateway_foreach(ess_app_t *app, void (*fn)(void *ud, ess_session_t *s), void *ud)
{
    gateway_t *g = app->gateway;
    if (g == NULL)
        return 0;
    size_t n = 0;
    for (size_t b = 0; b < BUCKETS; b++)
        for (entry_t *e = g->buckets[b]; e; e = e->next, n++)
            fn(ud, e->s);
    return n;
}

ess_session_t *ess_gateway_find(ess_app_t *app, int64_t id)
{
    gateway_t *g = app->gateway;
    if (g == NULL)
        return NULL;
    for (entry_t *e = *bucket_of(g, id); e; e = e->next)
        if (e->id == id)
            return e->s;
    return NULL;
}

ess_stream_client_t *ess_gateway_stream_client(ess_app_t *app)
{
    gateway_t *g = app->gateway;
    return g != NULL && !g->stopping ? g->client : NULL;
}
