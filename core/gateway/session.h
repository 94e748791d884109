/*
 * One public WebSocket connection of an event stream: its start selector,
 * its broker subscription, its outbound queue and budget, and its close.
 * ws.c drives it from the lws callbacks; gateway.c indexes it by event
 * stream so a newer connection or a DELETE can close it.
 */
#ifndef ESS_SESSION_H
#define ESS_SESSION_H

#include <stdint.h>

#include "app.h"

struct lws;
typedef struct ess_session_s ess_session_t;

/** The WebSocket is established: validate, look up, subscribe (or start closing). */
ess_session_t *ess_session_open(ess_app_t *app, struct lws *wsi);

/** WRITEABLE: send one queued frame, or the pending close. -1 tells lws to close. */
int ess_session_writeable(ess_session_t *s);

/** The connection is gone: unsubscribe and free. s is invalid afterwards. */
void ess_session_closed(ess_session_t *s);

/**
 * Start closing with code and reason (<= 123 bytes). With flush, frames
 * already queued are sent first (POISON); without, they are dropped.
 */
void ess_session_close(ess_session_t *s, int code, const char *reason, int flush);

/** Close the session if it has made no progress for too long (called every second). */
void ess_session_check_stall(ess_session_t *s, uint64_t now_ms);

/** The event stream id (gateway.c indexes sessions by it). */
int64_t ess_session_es_id(const ess_session_t *s);

#endif
