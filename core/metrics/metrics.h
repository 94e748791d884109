/*
 * Process metrics: fixed counters for the hot paths (plain fields, no
 * lookup) and a small table of labelled counters for the rest (requests by
 * route and code, closes by code, counters scripts bump). Rendered in the
 * Prometheus text format. Event-loop thread only. Metrics observe, never
 * decide: no admission or shutdown logic reads these fields.
 */
#ifndef ESS_METRICS_H
#define ESS_METRICS_H

#include <stdint.h>

#include "util/buf.h"

typedef struct {
    int64_t ws_open; /* gauge */
    uint64_t ws_accepted;
    uint64_t msgs_in;  /* from the broker */
    uint64_t msgs_out; /* frames sent to clients */
    uint64_t bytes_out;
    uint64_t credit_stalls;       /* times a subscription was paused for its budget */
    uint64_t replay_truncated;    /* ordinal selectors that started after retention removed them */
    int64_t subscriptions;        /* gauge: sessions subscribed (own or shared) */
    int64_t broker_subscriptions; /* gauge: subscriptions held at the broker */
    uint64_t enrich_errors;
    uint64_t reloads_ok;
    uint64_t reloads_failed;
    int64_t broker_connected; /* gauge: 1 or 0 */
} ess_metrics_t;

extern ess_metrics_t ess_metrics;

/**
 * Add by to the counter name{labels}. labels is the inside of the braces
 * ("route=\"/x\",code=\"200\"") or "" ; both are copied on first use.
 * name must be a valid Prometheus metric name (checked; invalid ones are
 * dropped with ESS_EINVAL).
 */
int ess_metrics_add(const char *name, const char *labels, uint64_t by);

/** Append the whole exposition to out. event_streams is the registry count. */
void ess_metrics_render(ess_buf_t *out, int64_t event_streams);

/** The value of name{labels} in the labelled table (0 when never added). */
uint64_t ess_metrics_get(const char *name, const char *labels);

/** The sum of name{...} over all its labels in the labelled table. */
uint64_t ess_metrics_sum(const char *name);

/* Most event streams given a lag series on /metrics (the label-cardinality cap). */
#define ESS_METRICS_LAG_MAX 50

/**
 * Replace the lag gauges: ess_stream_lag_messages{event_stream="<id>"} for
 * the first ESS_METRICS_LAG_MAX of the n pairs (the caller passes the
 * largest lags first), and ess_stream_lag_sum_messages over all n.
 */
void ess_metrics_set_lag(const int64_t *ids, const int64_t *lags, size_t n);

/** Free the labelled-counter table (at exit). */
void ess_metrics_free(void);

#endif
