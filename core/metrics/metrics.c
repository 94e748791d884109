/*
 * Counters and their Prometheus rendering. Owns the labelled-counter
 * table; the values it renders come from everywhere else.
 */
#include "metrics/metrics.h"
#include "ess.h"

#include <string.h>

ess_metrics_t ess_metrics;

typedef struct {
    char *name;
    char *labels;
    uint64_t value;
} labelled_t;

#define MAX_LABELLED 4096

static labelled_t *table;
static size_t ntable, captable;

static int valid_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

int ess_metrics_add(const char *name, const char *labels, uint64_t by)
{
    if (!valid_name(name))
        return ESS_EINVAL;
    labels = labels ? labels : "";
    for (size_t i = 0; i < ntable; i++) {
        if (strcmp(table[i].name, name) == 0 && strcmp(table[i].labels, labels) == 0) {
            table[i].value += by;
            return ESS_OK;
        }
    }
    if (ntable == MAX_LABELLED)
        return ESS_ETOOBIG; /* a runaway label set must not grow memory without bound */
    if (ntable == captable) {
        captable = captable ? captable * 2 : 32;
        table = ess_xrealloc(table, captable * sizeof *table);
    }
    table[ntable++] = (labelled_t){ess_xstrdup(name), ess_xstrdup(labels), by};
    return ESS_OK;
}

uint64_t ess_metrics_get(const char *name, const char *labels)
{
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i].name, name) == 0 && strcmp(table[i].labels, labels) == 0)
            return table[i].value;
    return 0;
}

uint64_t ess_metrics_sum(const char *name)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i].name, name) == 0)
            sum += table[i].value;
    return sum;
}

/* The lag gauges (set by the console's poll, gateway/console.c). */
static struct {
    int64_t id, lag;
} lag_top[ESS_METRICS_LAG_MAX];
static size_t nlag;
static int64_t lag_sum;
static int lag_known; /* set at least once */

void ess_metrics_set_lag(const int64_t *ids, const int64_t *lags, size_t n)
{
    lag_known = 1;
    lag_sum = 0;
    nlag = 0;
    for (size_t i = 0; i < n; i++) {
        lag_sum += lags[i];
        if (nlag < ESS_METRICS_LAG_MAX) {
            lag_top[nlag].id = ids[i];
            lag_top[nlag].lag = lags[i];
            nlag++;
        }
    }
}

static void gauge(ess_buf_t *o, const char *name, const char *help, const char *type, int64_t v)
{
    ess_buf_appendf(o, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name,
                    (long long)v);
}

void ess_metrics_render(ess_buf_t *o, int64_t event_streams)
{
    const ess_metrics_t *m = &ess_metrics;
    ess_buf_appendf(o,
                    "# HELP ess_build_info Build information.\n# TYPE ess_build_info gauge\n"
                    "ess_build_info{version=\"%s\"} 1\n",
                    ESS_VERSION);
    gauge(o, "ess_event_streams", "Event streams in the registry.", "gauge", event_streams);
    gauge(o, "ess_websocket_connections", "Open WebSocket connections.", "gauge", m->ws_open);
    gauge(o, "ess_websocket_accepted_total", "WebSocket connections accepted.", "counter",
          (int64_t)m->ws_accepted);
    gauge(o, "ess_messages_in_total", "Messages received from the broker.", "counter",
          (int64_t)m->msgs_in);
    gauge(o, "ess_messages_out_total", "Frames sent to WebSocket clients.", "counter",
          (int64_t)m->msgs_out);
    gauge(o, "ess_bytes_out_total", "Payload bytes sent to WebSocket clients.", "counter",
          (int64_t)m->bytes_out);
    gauge(o, "ess_credit_stalls_total", "Times a subscription was paused for its budget.",
          "counter", (int64_t)m->credit_stalls);
    gauge(o, "ess_replay_truncated_total",
          "Replays whose ordinal selector pointed before the first retained message.", "counter",
          (int64_t)m->replay_truncated);
    gauge(o, "ess_subscriptions",
          "Sessions subscribed to a broker source (their own or a shared one).", "gauge",
          m->subscriptions);
    gauge(o, "ess_broker_subscriptions",
          "Subscriptions held at the broker (shared ones count once).", "gauge",
          m->broker_subscriptions);
    gauge(o, "ess_enrich_errors_total", "Enrichment script errors.", "counter",
          (int64_t)m->enrich_errors);
    gauge(o, "ess_reloads_total", "Successful script/config reloads.", "counter",
          (int64_t)m->reloads_ok);
    gauge(o, "ess_reload_failures_total", "Rejected reloads.", "counter",
          (int64_t)m->reloads_failed);
    gauge(o, "ess_broker_connected", "1 when the broker connection is up.", "gauge",
          m->broker_connected);

    if (lag_known) {
        ess_buf_appendf(o,
                        "# HELP ess_stream_lag_messages Messages a live client is behind its "
                        "stream's tail (the %d largest).\n# TYPE ess_stream_lag_messages gauge\n",
                        ESS_METRICS_LAG_MAX);
        for (size_t i = 0; i < nlag; i++)
            ess_buf_appendf(o, "ess_stream_lag_messages{event_stream=\"%lld\"} %lld\n",
                            (long long)lag_top[i].id, (long long)lag_top[i].lag);
        gauge(o, "ess_stream_lag_sum_messages",
              "Messages live clients are behind, summed over every client with a known lag.",
              "gauge", lag_sum);
    }

    /* Labelled counters, grouped by name in first-seen order. */
    for (size_t i = 0; i < ntable; i++) {
        int first = 1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(table[j].name, table[i].name) == 0) {
                first = 0;
                break;
            }
        if (!first)
            continue;
        ess_buf_appendf(o, "# TYPE %s counter\n", table[i].name);
        for (size_t j = i; j < ntable; j++) {
            if (strcmp(table[j].name, table[i].name) != 0)
                continue;
            if (table[j].labels[0])
                ess_buf_appendf(o, "%s{%s} %llu\n", table[j].name, table[j].labels,
                                (unsigned long long)table[j].value);
            else
                ess_buf_appendf(o, "%s %llu\n", table[j].name, (unsigned long long)table[j].value);
        }
    }
}

void ess_metrics_free(void)
{
    for (size_t i = 0; i < ntable; i++) {
        free(table[i].name);
        free(table[i].labels);
    }
    free(table);
    table = NULL;
    ntable = captable = 0;
}
