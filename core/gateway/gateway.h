/*
 * The gateway: live WebSocket sessions of event streams, its own index of
 * them, and the broker clients behind them. Only the HTTP transport
 * (http/ws.c, through sessions) and main.c call in; the layers below reach
 * it through what it registers (registry events, app->broker_ready).
 */
#ifndef ESS_GATEWAY_H
#define ESS_GATEWAY_H

#include <stdint.h>

#include "app.h"
#include "gateway/session.h"
#include "mq/source.h"
#include "script/hooks.h"

/**
 * Start the broker side (stream client), listen to registry deletions
 * (closing the deleted stream's session) and register app->broker_ready.
 * ESS_OK or ESS_EINVAL with err.
 */
int ess_gateway_start(ess_app_t *app, char *err, size_t errlen);

/** Close every live session with 1001, then the broker side; done() once released. */
void ess_gateway_stop(ess_app_t *app, void (*done)(ess_app_t *app));

/**
 * Subscribe a session's source for route (stream mode from `from`, or a
 * classic queue), through the broker client the gateway owns. ESS_OK and
 * *out, or an error when the broker side is down or stopping.
 */
int ess_gateway_subscribe(ess_app_t *app, const ess_route_t *route, ess_offset_spec_t from,
                          const ess_source_cbs_t *cbs, void *ud, ess_source_t **out);

/**
 * Make s the one live session of its event stream, closing the previous
 * one (1000, replaced). Called once s has its event stream.
 */
void ess_gateway_attach(ess_app_t *app, ess_session_t *s);

/** Remove s from the index (when it closes). */
void ess_gateway_detach(ess_app_t *app, ess_session_t *s);

/**
 * Call fn for every indexed session (the console's state and sampling);
 * fn must not close or detach sessions. Returns how many.
 */
size_t ess_gateway_foreach(ess_app_t *app, void (*fn)(void *ud, ess_session_t *s), void *ud);

/** The live session of event stream id, or NULL. */
ess_session_t *ess_gateway_find(ess_app_t *app, int64_t id);

/** The stream client (for the console's tail-offset poll), or NULL when stopped. */
ess_stream_client_t *ess_gateway_stream_client(ess_app_t *app);

#endif
