/*
 * The operator console's view of the gateway (docs/console.md): the state
 * of event streams and their live sessions for GET /admin/state, the
 * per-second sampling (metrics/series.c and each session's rates), the
 * bounded poll of the streams' tail offsets (lag, ess_stream_lag_messages)
 * and the Tail watches. Started and stopped with the gateway; it provides
 * the data to script/console.c through ess_script_console_provide.
 */
#ifndef ESS_GATEWAY_CONSOLE_H
#define ESS_GATEWAY_CONSOLE_H

#include "app.h"

/* Seconds between two polls of the streams' tail offsets. */
#define ESS_CONSOLE_LAG_EVERY_S 5
/* Most tail-offset requests in flight (streams polled per round). */
#define ESS_CONSOLE_LAG_POLLS 64
/* Most sessions watched by Tail at once. */
#define ESS_CONSOLE_TAILS 4
/* Broker nodes listed in the state (the stream client knows at most 32). */
#define ESS_CONSOLE_NODES 32
/* A watch with no read for this long ends (the ring is freed). */
#define ESS_CONSOLE_TAIL_IDLE_S 15

/** Start the one-second timer and provide the console's data. */
void ess_console_start(ess_app_t *app);

/** Stop the timer and withdraw the provider (the gateway is stopping). */
void ess_console_stop(ess_app_t *app);

#endif
