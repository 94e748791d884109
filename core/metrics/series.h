/*
 * The console's time series: the last ESS_SERIES_SECONDS seconds of the
 * process totals, one sample a second, in a fixed ring (no allocation
 * after the first sample: about 60 KB). Sampled by the console's one-second
 * timer (gateway/console.c) from ess_metrics; rendered as JSON columns
 * for GET /admin/series and as the latest point for the live feed.
 * Event-loop thread only.
 */
#ifndef ESS_METRICS_SERIES_H
#define ESS_METRICS_SERIES_H

#include <stdint.h>

#include "util/buf.h"

#define ESS_SERIES_SECONDS 900

/* Close codes with a series of their own; the rest count as "other". */
#define ESS_SERIES_CODES 7

/** Take one sample of the counters at wall-clock time now_ms. */
void ess_series_sample(int64_t now_ms);

/**
 * Append the last `seconds` samples (at most ESS_SERIES_SECONDS) as
 * {"step":1,"end":ms,"in":[...],"out":[...],"bytes_out":[...],
 *  "connections":[...],"enrich_errors":[...],"closes":{"1000":[...],...,"other":[...]}},
 * oldest first; in/out/bytes/errors/closes are per second.
 */
void ess_series_json(ess_buf_t *out, int seconds);

/** Append the latest sample as a JSON object (the live feed's "tick" event). */
void ess_series_latest_json(ess_buf_t *out);

/** Forget every sample (tests). */
void ess_series_reset(void);

#endif
