/*
 * libwebsockets on the foreign libuv loop: one context, two vhosts (the
 * public WebSocket service and the internal REST API).
 */
#ifndef ESS_SERVER_H
#define ESS_SERVER_H

#include "app.h"

/** Create the lws context and both listeners. ESS_OK, or ESS_EIO with err. */
int ess_server_start(ess_app_t *app, char *err, size_t errlen);

/**
 * Stop accepting (listen sockets close at once), let live connections
 * finish, then destroy the context; done(app) runs when nothing of lws is
 * left on the loop. Idempotent.
 */
void ess_server_drain(ess_app_t *app, void (*done)(ess_app_t *app));

/** Destroy the context now (after a drain, or on a start-up failure). */
void ess_server_destroy(ess_app_t *app);

#endif
