/*
 * libwebsockets on the foreign libuv loop: one context, two vhosts (the
 * public WebSocket service and the internal REST API).
 */
#ifndef ESS_SERVER_H
#define ESS_SERVER_H

#include "app.h"

/** Create the lws context and both listeners. ESS_OK, or ESS_EIO with err. */
/* The highest open-file limit essd runs with: lws 4.1 takes a limit above
 * 10,000,000 (or none) for a mistake and assumes 2,560 descriptors, and
 * sizes its connection table by the limit (server.c). main.c lowers a
 * higher soft limit to this. */
#define ESS_FD_LIMIT_MAX 1048576

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
