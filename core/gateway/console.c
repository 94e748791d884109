/*
 * The operator console's view of the gateway (gateway/console.h). Owns
 * the one-second console timer, the slots of the tail-offset poll and of
 * the Tail watches, and the JSON of GET /admin/state's gateway part; reads
 * sessions through ess_session_info and the gateway's index, the registry
 * through its list. Nothing here runs per message: the per-second work is
 * one series sample and one pass over the live sessions (rates), and every
 * ESS_CONSOLE_LAG_EVERY_S seconds one pass that ranks the lags and asks
 * the broker for at most ESS_CONSOLE_LAG_POLLS tail offsets.
 */
#include "gateway/console.h"
#include "ess.h"
#include "gateway/gateway.h"
#include "gateway/session.h"
#include "gateway/tail.h"
#include "metrics/metrics.h"
#include "metrics/series.h"
#include "mq/stream_client.h"
#include "script/console.h"
#include "util/log.h"

#include <string.h>
#include <sys/time.h>

typedef struct {
    int used;
    int64_t es_id;
} poll_t;

typedef struct {
    int used;
    int64_t es_id;
    uint64_t last_read_ms;
} watch_t;

static struct {
    ess_app_t *app;
    uv_timer_t timer;
    int running;
    uint64_t ticks;
    poll_t polls[ESS_CONSOLE_LAG_POLLS];
    int inflight;
    size_t cursor;         /* where the next poll round starts among the sessions */
    int64_t lag_round_ms;  /* wall clock of the last poll round */
    uint64_t lag_answers;  /* tail offsets learned */
    uint64_t lag_failures; /* polls that failed */
    watch_t watches[ESS_CONSOLE_TAILS];
} C;

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Lag of a session: messages between its last delivered offset and the
 * stream's tail. 1 and *lag when known. */
static int lag_of(const ess_session_info_t *i, int64_t *lag)
{
    if (i->stream == NULL || i->stream_tail < -1)
        return 0;
    if (i->stream_tail == -1) {
        *lag = 0;
        return 1;
    }
    if (!i->delivered)
        return 0;
    int64_t d = i->stream_tail - (int64_t)i->last_offset;
    *lag = d > 0 ? d : 0;
    return 1;
}

/* ---- the tail-offset poll ------------------------------------------------ */

typedef struct {
    int64_t *ids, *lags;
    size_t n, cap;
    /* the poll round */
    ess_stream_client_t *client;
    size_t index, want_from, budget;
} pass_t;

static void update_lag_metrics(void);

static void on_tail(int status, int64_t last_offset, void *ud)
{
    poll_t *p = ud;
    p->used = 0;
    C.inflight--;
    if (!C.running)
        return;
    if (status != ESS_OK) {
        C.lag_failures++;
        return;
    }
    C.lag_answers++;
    ess_session_t *s = ess_gateway_find(C.app, p->es_id);
    if (s)
        ess_session_set_stream_tail(s, last_offset, uv_now(C.app->loop));
    if (C.inflight == 0) /* the round is answered: the gauges at once */
        update_lag_metrics();
}

static void poll_one(pass_t *ps, ess_session_t *s)
{
    ess_session_info_t i;
    ess_session_info(s, &i);
    if (i.stream == NULL || i.closing)
        return;
    size_t k = ps->index++;
    if (k < ps->want_from || ps->budget == 0)
        return;
    for (size_t j = 0; j < ESS_CONSOLE_LAG_POLLS; j++) {
        poll_t *p = &C.polls[j];
        if (p->used)
            continue;
        p->used = 1;
        p->es_id = i.es_id;
        if (ess_stream_tail(ps->client, i.stream, on_tail, p) != ESS_OK) {
            p->used = 0;
            C.lag_failures++;
            return;
        }
        C.inflight++;
        ps->budget--;
        C.cursor = k + 1;
        return;
    }
}

static void poll_pass(void *ud, ess_session_t *s)
{
    poll_one(ud, s);
}

/* One round: ask for the tail offsets of up to the free slots' worth of
 * sessions, continuing where the last round stopped (round robin). */
static void poll_tails(void)
{
    ess_stream_client_t *c = ess_gateway_stream_client(C.app);
    if (c == NULL || !ess_stream_client_connected(c))
        return;
    pass_t ps = {
        .client = c, .want_from = C.cursor, .budget = (size_t)(ESS_CONSOLE_LAG_POLLS - C.inflight)};
    if (ps.budget == 0)
        return; /* every slot still waits for an answer */
    ess_gateway_foreach(C.app, poll_pass, &ps);
    if (ps.budget > 0) /* reached the end of the sessions: start over next round */
        C.cursor = 0;
    C.lag_round_ms = wall_ms();
}

static void collect_lag(void *ud, ess_session_t *s)
{
    pass_t *ps = ud;
    ess_session_info_t i;
    ess_session_info(s, &i);
    int64_t lag;
    if (!lag_of(&i, &lag))
        return;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->ids = ess_xrealloc(ps->ids, ps->cap * sizeof *ps->ids);
        ps->lags = ess_xrealloc(ps->lags, ps->cap * sizeof *ps->lags);
    }
    ps->ids[ps->n] = i.es_id;
    ps->lags[ps->n] = lag;
    ps->n++;
}

/* The lag gauges on /metrics: the largest ESS_METRICS_LAG_MAX first. */
static void update_lag_metrics(void)
{
    pass_t ps = {0};
    ess_gateway_foreach(C.app, collect_lag, &ps);
    /* A partial selection: move the largest to the front. */
    size_t top = ps.n < ESS_METRICS_LAG_MAX ? ps.n : ESS_METRICS_LAG_MAX;
    for (size_t i = 0; i < top; i++) {
        size_t best = i;
        for (size_t j = i + 1; j < ps.n; j++)
            if (ps.lags[j] > ps.lags[best])
                best = j;
        int64_t t = ps.lags[i], id = ps.ids[i];
        ps.lags[i] = ps.lags[best];
        ps.ids[i] = ps.ids[best];
        ps.lags[best] = t;
        ps.ids[best] = id;
    }
    ess_metrics_set_lag(ps.ids, ps.lags, ps.n);
    free(ps.ids);
    free(ps.lags);
}

/* ---- Tail watches -------------------------------------------------------- */

static void end_watch(watch_t *w)
{
    ess_session_t *s = ess_gateway_find(C.app, w->es_id);
    if (s) {
        ess_tail_t **t = ess_session_tail_slot(s);
        ess_tail_free(*t);
        *t = NULL;
    }
    w->used = 0;
}

static void expire_watches(uint64_t now)
{
    for (int i = 0; i < ESS_CONSOLE_TAILS; i++) {
        watch_t *w = &C.watches[i];
        if (w->used && now - w->last_read_ms > ESS_CONSOLE_TAIL_IDLE_S * 1000u)
            end_watch(w);
    }
}

static int provide_tail(ess_app_t *app, int64_t id, uint64_t after, int stop, ess_buf_t *out)
{
    watch_t *w = NULL;
    for (int i = 0; i < ESS_CONSOLE_TAILS; i++)
        if (C.watches[i].used && C.watches[i].es_id == id)
            w = &C.watches[i];
    if (stop) {
        if (w)
            end_watch(w);
        ess_buf_appendf(out, "{\"event_stream\":%lld,\"watching\":false}", (long long)id);
        return ESS_OK;
    }
    ess_session_t *s = ess_gateway_find(app, id);
    if (s == NULL) {
        if (w)
            w->used = 0;
        return ESS_ENOTFOUND;
    }
    if (w == NULL) {
        for (int i = 0; i < ESS_CONSOLE_TAILS && w == NULL; i++)
            if (!C.watches[i].used)
                w = &C.watches[i];
        if (w == NULL)
            return ESS_ETOOBIG;
        w->used = 1;
        w->es_id = id;
    }
    w->last_read_ms = uv_now(app->loop);
    ess_tail_t **t = ess_session_tail_slot(s);
    if (*t == NULL) {
        *t = ess_tail_new(); /* a new connection of the stream: watch it too */
        ess_session_watched(s);
    }
    ess_buf_appendf(out,
                    "{\"event_stream\":%lld,\"watching\":true,\"idle_timeout_s\":%d,"
                    "\"capacity\":%d,\"seq\":%llu,\"entries\":",
                    (long long)id, ESS_CONSOLE_TAIL_IDLE_S, ESS_TAIL_ENTRIES,
                    (unsigned long long)ess_tail_seq(*t));
    ess_tail_json(*t, after, out);
    ess_buf_append(out, "}", sizeof "}" - 1);
    return ESS_OK;
}

/* ---- GET /admin/state ------------------------------------------------------ */

typedef struct {
    int64_t id, created;
    char uuid[ESS_UUID_LEN + 1];
    char *rk;
    size_t rklen;
    const ess_session_info_t *client; /* or NULL */
    int has_lag;
    int64_t lag;
} row_t;

typedef struct {
    const ess_console_query_t *q;
    ess_session_info_t *infos;
    size_t ninfos, capinfos;
    row_t *rows;
    size_t nrows, caprows;
    int64_t total;
} state_t;

static void collect_session(void *ud, ess_session_t *s)
{
    state_t *st = ud;
    if (st->ninfos == st->capinfos) {
        st->capinfos = st->capinfos ? st->capinfos * 2 : 64;
        st->infos = ess_xrealloc(st->infos, st->capinfos * sizeof *st->infos);
    }
    ess_session_info(s, &st->infos[st->ninfos++]);
}

static int by_es_id(const void *a, const void *b)
{
    const ess_session_info_t *x = a, *y = b;
    return x->es_id < y->es_id ? -1 : x->es_id > y->es_id;
}

static const ess_session_info_t *find_info(const state_t *st, int64_t id)
{
    size_t lo = 0, hi = st->ninfos;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (st->infos[mid].es_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Sessions of one id: the one not closing (a replaced one is closing). */
    const ess_session_info_t *found = NULL;
    for (size_t i = lo; i < st->ninfos && st->infos[i].es_id == id; i++)
        if (found == NULL || !st->infos[i].closing)
            found = &st->infos[i];
    return found;
}

static int contains(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return 1;
    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(hay + i, needle, n) == 0)
            return 1;
    return 0;
}

static int matches(const row_t *r, const char *f)
{
    if (f == NULL || f[0] == '\0')
        return 1;
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)r->id);
    if (strcmp(id, f) == 0 || contains(r->rk, r->rklen, f) || contains(r->uuid, strlen(r->uuid), f))
        return 1;
    const ess_session_info_t *c = r->client;
    return c && (contains(c->peer, strlen(c->peer), f) ||
                 contains(c->user_agent, strlen(c->user_agent), f) ||
                 (c->stream && contains(c->stream, strlen(c->stream), f)));
}

static int collect_row(void *ud, const ess_es_row_t *row)
{
    state_t *st = ud;
    st->total++;
    row_t r = {.id = row->id, .created = row->created_ms};
    memcpy(r.uuid, row->uuid, sizeof r.uuid);
    r.rk = (char *)row->routing_key; /* borrowed until copied below */
    r.rklen = row->routing_key_len;
    r.client = find_info(st, row->id);
    if (st->q->live && r.client == NULL)
        return 0;
    if (!matches(&r, st->q->filter))
        return 0;
    if (r.client)
        r.has_lag = lag_of(r.client, &r.lag);
    r.rk = ess_xstrndup(row->routing_key, row->routing_key_len);
    if (st->nrows == st->caprows) {
        st->caprows = st->caprows ? st->caprows * 2 : 64;
        st->rows = ess_xrealloc(st->rows, st->caprows * sizeof *st->rows);
    }
    st->rows[st->nrows++] = r;
    return 0;
}

static const char *sort_key;
static int sort_desc;

static int64_t key_num(const row_t *r)
{
    const ess_session_info_t *c = r->client;
    if (strcmp(sort_key, "lag") == 0)
        return r->has_lag ? r->lag : -1;
    if (strcmp(sort_key, "rate") == 0)
        return c ? (int64_t)c->rate_out : -1;
    if (strcmp(sort_key, "connected") == 0)
        return c ? c->connected_ms : -1;
    if (strcmp(sort_key, "stalls") == 0)
        return c ? (int64_t)c->stalls : -1;
    if (strcmp(sort_key, "created") == 0)
        return r->created;
    return r->id;
}

static int by_key(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    int c;
    if (strcmp(sort_key, "routing_key") == 0) {
        size_t n = x->rklen < y->rklen ? x->rklen : y->rklen;
        c = memcmp(x->rk, y->rk, n);
        if (c == 0)
            c = x->rklen < y->rklen ? -1 : x->rklen > y->rklen;
    } else {
        int64_t kx = key_num(x), ky = key_num(y);
        c = kx < ky ? -1 : kx > ky;
    }
    if (c == 0) /* ties in id order, whatever the direction */
        return x->id < y->id ? -1 : x->id > y->id;
    return sort_desc ? -c : c;
}

static void json_str(ess_buf_t *o, const char *s)
{
    ess_tail_json_str(o, s, strlen(s));
}

static void row_json(ess_buf_t *o, const row_t *r, uint64_t now_loop)
{
    ess_buf_appendf(o, "{\"id\":%lld,\"uuid\":\"%s\",\"routing_key\":", (long long)r->id, r->uuid);
    ess_tail_json_str(o, r->rk, r->rklen);
    ess_buf_appendf(o, ",\"created\":%lld,\"client\":", (long long)r->created);
    const ess_session_info_t *c = r->client;
    if (c == NULL) {
        ess_buf_append(o, "null}", sizeof "null}" - 1);
        return;
    }
    ess_buf_append(o, "{\"peer\":", sizeof "{\"peer\":" - 1);
    json_str(o, c->peer);
    ess_buf_append(o, ",\"user_agent\":", sizeof ",\"user_agent\":" - 1);
    json_str(o, c->user_agent);
    ess_buf_append(o, ",\"selector\":", sizeof ",\"selector\":" - 1);
    json_str(o, c->selector);
    ess_buf_append(o, ",\"stream\":", sizeof ",\"stream\":" - 1);
    if (c->stream)
        json_str(o, c->stream);
    else
        ess_buf_append(o, "null", sizeof "null" - 1);
    ess_buf_appendf(o, ",\"since\":%lld", (long long)c->connected_ms);
    if (c->delivered && c->has_offsets)
        ess_buf_appendf(o, ",\"delivered_offset\":%llu", (unsigned long long)c->last_offset);
    else
        ess_buf_append(o, ",\"delivered_offset\":null", sizeof ",\"delivered_offset\":null" - 1);
    if (c->stream_tail >= -1)
        ess_buf_appendf(o, ",\"tail_offset\":%lld,\"tail_age_ms\":%llu", (long long)c->stream_tail,
                        (unsigned long long)(now_loop - c->stream_tail_ms));
    else
        ess_buf_append(o, ",\"tail_offset\":null,\"tail_age_ms\":null",
                       sizeof ",\"tail_offset\":null,\"tail_age_ms\":null" - 1);
    if (r->has_lag)
        ess_buf_appendf(o, ",\"lag\":%lld", (long long)r->lag);
    else
        ess_buf_append(o, ",\"lag\":null", sizeof ",\"lag\":null" - 1);
    int watched = 0;
    for (int i = 0; i < ESS_CONSOLE_TAILS; i++)
        watched |= C.watches[i].used && C.watches[i].es_id == r->id;
    ess_buf_appendf(o,
                    ",\"msgs_in\":%llu,\"msgs_out\":%llu,\"bytes_out\":%llu,\"rate_in\":%llu,"
                    "\"rate_out\":%llu,\"rate_bytes\":%llu,\"credit_stalls\":%llu,"
                    "\"queued_bytes\":%zu,\"paused\":%s,\"closing\":%s,\"tailed\":%s}}",
                    (unsigned long long)c->msgs_in, (unsigned long long)c->msgs_out,
                    (unsigned long long)c->bytes_out, (unsigned long long)c->rate_in,
                    (unsigned long long)c->rate_out, (unsigned long long)c->rate_bytes,
                    (unsigned long long)c->stalls, c->queued_bytes, c->paused ? "true" : "false",
                    c->closing ? "true" : "false", watched ? "true" : "false");
}

static int provide_state(ess_app_t *app, const ess_console_query_t *q, ess_buf_t *o)
{
    state_t st = {.q = q};
    ess_gateway_foreach(app, collect_session, &st);
    if (st.ninfos > 1) /* infos is NULL when there is no session */
        qsort(st.infos, st.ninfos, sizeof *st.infos, by_es_id);
    int rc = ess_registry_list(app->registry, collect_row, &st);
    if (rc == ESS_OK) {
        sort_key = q->sort ? q->sort : "id";
        sort_desc = q->desc;
        if (st.nrows > 1)
            qsort(st.rows, st.nrows, sizeof *st.rows, by_key);
        int64_t live = 0;
        for (size_t i = 0; i < st.ninfos; i++)
            live += !st.infos[i].closing;
        const ess_metrics_t *m = &ess_metrics;
        ess_stream_client_t *c = ess_gateway_stream_client(app);
        const char *bv = c ? ess_stream_client_broker_version(c) : NULL;
        ess_buf_appendf(o,
                        "{\"now\":%lld,\"version\":\"%s\",\"gateway\":{\"connections\":%lld,"
                        "\"live_sessions\":%lld,\"subscriptions\":%lld,\"event_streams\":%lld,"
                        "\"messages_in\":%llu,\"messages_out\":%llu,\"bytes_out\":%llu,"
                        "\"credit_stalls\":%llu,\"enrich_errors\":%llu,\"draining\":%s},"
                        "\"broker\":{\"connected\":%s,\"version\":",
                        (long long)wall_ms(), ESS_VERSION, (long long)m->ws_open, (long long)live,
                        (long long)m->subscriptions, (long long)st.total,
                        (unsigned long long)m->msgs_in, (unsigned long long)m->msgs_out,
                        (unsigned long long)m->bytes_out, (unsigned long long)m->credit_stalls,
                        (unsigned long long)m->enrich_errors, app->draining ? "true" : "false",
                        app->broker_ready && app->broker_ready(app) ? "true" : "false");
        if (bv)
            json_str(o, bv);
        else
            ess_buf_append(o, "null", sizeof "null" - 1);
        ess_stream_node_info_t nodes[ESS_CONSOLE_NODES];
        uint64_t lost = 0;
        size_t nn = ess_stream_client_nodes(c, nodes, ESS_CONSOLE_NODES, &lost);
        ess_buf_appendf(o, ",\"connections_lost\":%llu,\"nodes\":[", (unsigned long long)lost);
        for (size_t i = 0; i < nn; i++) {
            ess_buf_appendf(o, "%s{\"host\":", i ? "," : "");
            json_str(o, nodes[i].host);
            ess_buf_appendf(o,
                            ",\"port\":%d,\"configured\":%s,\"locator\":%s,\"connections\":%d,"
                            "\"ready\":%d,\"subscriptions\":%d,\"publishers\":%d}",
                            nodes[i].port, nodes[i].configured ? "true" : "false",
                            nodes[i].locator ? "true" : "false", nodes[i].connections,
                            nodes[i].ready, nodes[i].subscriptions, nodes[i].publishers);
        }
        ess_buf_append(o, "]", 1);
        ess_buf_appendf(o,
                        ",\"lag_poll\":{\"every_s\":%d,\"max_streams\":%d,"
                        "\"in_flight\":%d,\"last_round\":%lld,\"answers\":%llu,"
                        "\"failures\":%llu}},",
                        ESS_CONSOLE_LAG_EVERY_S, ESS_CONSOLE_LAG_POLLS, C.inflight,
                        (long long)C.lag_round_ms, (unsigned long long)C.lag_answers,
                        (unsigned long long)C.lag_failures);
        int64_t off = q->offset < 0 ? 0 : q->offset;
        int64_t lim = q->limit < 0 ? 0 : q->limit;
        ess_buf_appendf(o,
                        "\"event_streams\":{\"total\":%lld,\"matched\":%zu,\"offset\":%lld,"
                        "\"limit\":%lld,\"sort\":",
                        (long long)st.total, st.nrows, (long long)off, (long long)lim);
        json_str(o, sort_key);
        ess_buf_appendf(o, ",\"desc\":%s,\"rows\":[", sort_desc ? "true" : "false");
        uint64_t now_loop = uv_now(app->loop);
        for (int64_t i = off; i < (int64_t)st.nrows && i < off + lim; i++) {
            if (i > off)
                ess_buf_append(o, ",", sizeof "," - 1);
            row_json(o, &st.rows[i], now_loop);
        }
        ess_buf_append(o, "]}}", sizeof "]}}" - 1);
    }
    for (size_t i = 0; i < st.nrows; i++)
        free(st.rows[i].rk);
    free(st.rows);
    free(st.infos);
    return rc;
}

/* ---- the timer ------------------------------------------------------------- */

static void sample_session(void *ud, ess_session_t *s)
{
    (void)ud;
    ess_session_sample(s);
}

static void tick(uv_timer_t *t)
{
    (void)t;
    ess_series_sample(wall_ms());
    ess_gateway_foreach(C.app, sample_session, NULL);
    expire_watches(uv_now(C.app->loop));
    if (++C.ticks % ESS_CONSOLE_LAG_EVERY_S == 0) {
        update_lag_metrics();
        poll_tails();
    }
}

static const ess_console_provider_t provider = {provide_state, provide_tail};

void ess_console_start(ess_app_t *app)
{
    if (C.running)
        return;
    memset(&C, 0, sizeof C);
    C.app = app;
    C.running = 1;
    uv_timer_init(app->loop, &C.timer);
    uv_timer_start(&C.timer, tick, 1000, 1000);
    ess_series_sample(wall_ms()); /* the baseline */
    ess_script_console_provide(&provider);
}

void ess_console_stop(ess_app_t *app)
{
    (void)app;
    if (!C.running)
        return;
    C.running = 0;
    ess_script_console_provide(NULL);
    for (int i = 0; i < ESS_CONSOLE_TAILS; i++)
        if (C.watches[i].used)
            end_watch(&C.watches[i]);
    uv_close((uv_handle_t *)&C.timer, NULL);
}
