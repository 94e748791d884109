/*
 * The gateway: live WebSocket connections of event streams and their
 * broker subscriptions. The HTTP layer and the API bridge reach it only
 * through these functions.
 */
#ifndef ESS_GATEWAY_H
#define ESS_GATEWAY_H

#include <stdint.h>

#include "app.h"

/** Start the broker side (stream client, reachability). ESS_OK or an error. */
int ess_gateway_start(ess_app_t *app, char *err, size_t errlen);

/** Close every live connection with 1001 and stop the broker side; done() when released. */
void ess_gateway_stop(ess_app_t *app, void (*done)(ess_app_t *app));

/** The event stream id (uuid) was deleted: close its live connection at once. */
void ess_gateway_stream_deleted(ess_app_t *app, int64_t id, const char *uuid);

/** 1 when the broker answered the most recent check. */
int ess_gateway_broker_ready(ess_app_t *app);

#endif
