/*
 * The console's time series (metrics/series.h). Owns the ring of
 * per-second samples and the previous counter values it subtracts; reads
 * ess_metrics and the labelled close counters, never writes them.
 */
#include "metrics/series.h"
#include "ess.h"
#include "metrics/metrics.h"

#include <string.h>

static const int codes[ESS_SERIES_CODES] = {1000, 1001, 1002, 1008, 1011, 1013, 0 /* other */};

typedef struct {
    uint32_t in, out, enrich_errors;
    uint32_t closes[ESS_SERIES_CODES];
    uint64_t bytes_out;
    int64_t connections, subscriptions;
} sample_t;

static struct {
    sample_t ring[ESS_SERIES_SECONDS];
    size_t n;    /* samples held */
    size_t next; /* where the next one goes */
    int64_t last_ms;
    int primed;
    uint64_t in, out, bytes_out, enrich_errors;
    uint64_t closes[ESS_SERIES_CODES];
} S;

static uint32_t delta32(uint64_t now, uint64_t *prev)
{
    uint64_t d = now >= *prev ? now - *prev : 0;
    *prev = now;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

void ess_series_sample(int64_t now_ms)
{
    const ess_metrics_t *m = &ess_metrics;
    uint64_t closes[ESS_SERIES_CODES];
    uint64_t named = 0;
    for (int i = 0; i < ESS_SERIES_CODES - 1; i++) {
        char label[32];
        snprintf(label, sizeof label, "code=\"%d\"", codes[i]);
        closes[i] = ess_metrics_get("ess_websocket_closes_total", label);
        named += closes[i];
    }
    uint64_t all = ess_metrics_sum("ess_websocket_closes_total");
    closes[ESS_SERIES_CODES - 1] = all >= named ? all - named : 0;
    if (!S.primed) { /* the first call only sets the baseline */
        S.primed = 1;
        S.in = m->msgs_in;
        S.out = m->msgs_out;
        S.bytes_out = m->bytes_out;
        S.enrich_errors = m->enrich_errors;
        memcpy(S.closes, closes, sizeof closes);
    }
    sample_t *s = &S.ring[S.next];
    s->in = delta32(m->msgs_in, &S.in);
    s->out = delta32(m->msgs_out, &S.out);
    uint64_t b = m->bytes_out >= S.bytes_out ? m->bytes_out - S.bytes_out : 0;
    S.bytes_out = m->bytes_out;
    s->bytes_out = b;
    s->enrich_errors = delta32(m->enrich_errors, &S.enrich_errors);
    for (int i = 0; i < ESS_SERIES_CODES; i++)
        s->closes[i] = delta32(closes[i], &S.closes[i]);
    s->connections = m->ws_open;
    s->subscriptions = m->subscriptions;
    S.next = (S.next + 1) % ESS_SERIES_SECONDS;
    if (S.n < ESS_SERIES_SECONDS)
        S.n++;
    S.last_ms = now_ms;
}

static const sample_t *at(size_t i, size_t count)
{
    /* i-th of the last count samples, oldest first */
    size_t start = (S.next + ESS_SERIES_SECONDS - count) % ESS_SERIES_SECONDS;
    return &S.ring[(start + i) % ESS_SERIES_SECONDS];
}

#define COLUMN(name, expr)                                                                         \
    do {                                                                                           \
        ess_buf_appendf(out, ",\"%s\":[", name);                                                   \
        for (size_t i = 0; i < count; i++) {                                                       \
            const sample_t *s = at(i, count);                                                      \
            ess_buf_appendf(out, "%s%lld", i ? "," : "", (long long)(expr));                       \
        }                                                                                          \
        ess_buf_append(out, "]", sizeof "]" - 1);                                                  \
    } while (0)

void ess_series_json(ess_buf_t *out, int seconds)
{
    size_t count = seconds < 0 ? 0 : (size_t)seconds;
    if (count > S.n)
        count = S.n;
    ess_buf_appendf(out, "{\"step\":1,\"end\":%lld,\"points\":%zu", (long long)S.last_ms, count);
    COLUMN("in", s->in);
    COLUMN("out", s->out);
    COLUMN("bytes_out", s->bytes_out);
    COLUMN("connections", s->connections);
    COLUMN("subscriptions", s->subscriptions);
    COLUMN("enrich_errors", s->enrich_errors);
    ess_buf_append(out, ",\"closes\":{", sizeof ",\"closes\":{" - 1);
    for (int c = 0; c < ESS_SERIES_CODES; c++) {
        if (codes[c])
            ess_buf_appendf(out, "%s\"%d\":[", c ? "," : "", codes[c]);
        else
            ess_buf_appendf(out, "%s\"other\":[", c ? "," : "");
        for (size_t i = 0; i < count; i++)
            ess_buf_appendf(out, "%s%u", i ? "," : "", at(i, count)->closes[c]);
        ess_buf_append(out, "]", sizeof "]" - 1);
    }
    ess_buf_append(out, "}}", sizeof "}}" - 1);
}

void ess_series_latest_json(ess_buf_t *out)
{
    const ess_metrics_t *m = &ess_metrics;
    const sample_t *s = S.n ? at(0, 1) : NULL;
    uint32_t closes = 0;
    for (int c = 0; s && c < ESS_SERIES_CODES; c++)
        closes += s->closes[c];
    ess_buf_appendf(out,
                    "{\"t\":%lld,\"in\":%u,\"out\":%u,\"bytes_out\":%llu,\"closes\":%u,"
                    "\"enrich_errors\":%u,\"connections\":%lld,\"subscriptions\":%lld,"
                    "\"broker_connected\":%lld,\"totals\":{\"in\":%llu,\"out\":%llu,"
                    "\"bytes_out\":%llu,\"credit_stalls\":%llu,\"enrich_errors\":%llu,"
                    "\"reloads\":%llu,\"reload_failures\":%llu}}",
                    (long long)S.last_ms, s ? s->in : 0, s ? s->out : 0,
                    (unsigned long long)(s ? s->bytes_out : 0), closes, s ? s->enrich_errors : 0,
                    (long long)m->ws_open, (long long)m->subscriptions,
                    (long long)m->broker_connected, (unsigned long long)m->msgs_in,
                    (unsigned long long)m->msgs_out, (unsigned long long)m->bytes_out,
                    (unsigned long long)m->credit_stalls, (unsigned long long)m->enrich_errors,
                    (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed);
    /* The last second's closes by code, as the series' columns name them. */
    out->len--; /* reopen the object */
    ess_buf_append(out, ",\"closes_by\":{", sizeof ",\"closes_by\":{" - 1);
    for (int c = 0; c < ESS_SERIES_CODES; c++) {
        if (codes[c])
            ess_buf_appendf(out, "%s\"%d\":%u", c ? "," : "", codes[c], s ? s->closes[c] : 0);
        else
            ess_buf_appendf(out, "%s\"other\":%u", c ? "," : "", s ? s->closes[c] : 0);
    }
    ess_buf_append(out, "}}", sizeof "}}" - 1);
}

void ess_series_reset(void)
{
    memset(&S, 0, sizeof S);
}
