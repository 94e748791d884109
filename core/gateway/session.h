/*
 * One public WebSocket session of an event stream: its start selector, its
 * message source, its output queue and budget, its counters and its close.
 * Knows nothing of lws: http/ws.c parses the upgrade into an
 * ess_session_request_t, drives the session from the lws callbacks, and
 * writes the output blocks the session queues; gateway.c indexes sessions
 * by event stream so a newer connection or a deletion can close them.
 */
#ifndef ESS_SESSION_H
#define ESS_SESSION_H

#include <stdint.h>

#include "app.h"
#include "gateway/delivery.h"
#include "gateway/selector.h"

typedef struct ess_session_s ess_session_t;

/** What the upgrade request asked for, parsed by the transport. */
typedef struct {
    const char *path; /* the request path ("/event-stream/<uuid>") */
    /* Each of ess_selector_names, or NULL when absent (the first one given). */
    const char *selector[ESS_SEL_SOURCES];
    /* How many times each was given (a repeated query parameter is several). */
    unsigned count[ESS_SEL_SOURCES];
} ess_session_request_t;

/** The transport's side: how a session asks to be written. */
typedef struct {
    void (*want_write)(void *conn); /* request a write callback (output or close pending) */
} ess_session_transport_t;

/** The WebSocket is established: validate, look up, subscribe (or start closing). */
ess_session_t *ess_session_open(ess_app_t *app, const ess_session_request_t *req,
                                const ess_session_transport_t *transport, void *conn);

/** The next output block to write, or NULL. Still queued until ess_session_sent. */
const ess_out_block_t *ess_session_next_block(const ess_session_t *s);

/** The transport has handed the next block to the socket: count it and free it. */
void ess_session_sent(ess_session_t *s);

/**
 * After a write callback that sent n blocks: resume the source below half
 * the budget. 1 when another write callback is wanted (output left, or a
 * close pending).
 */
int ess_session_after_write(ess_session_t *s, int n);

/** 1 when the close frame is due (closing and nothing left to send); fills code and reason. */
int ess_session_close_due(const ess_session_t *s, int *code, const char **reason);

/** The connection is gone: unsubscribe and free. s is invalid afterwards. */
void ess_session_closed(ess_session_t *s);

/**
 * Start closing with code and reason (<= 123 bytes). With flush, frames
 * already queued are sent first (POISON); without, they are dropped.
 */
void ess_session_close(ess_session_t *s, int code, const char *reason, int flush);

/**
 * Close without flushing, with a reason that carries the resume offset:
 * "<what>; last delivered offset N (resume with stream_from_ordinal=N+1)",
 * "<what>; nothing delivered" before the first frame, "<what>" in Version 1
 * (no offsets). N is the last offset handed to the socket, so frames the
 * client received end exactly there. The 1008 stall and the 1001 shutdown.
 */
void ess_session_close_resumable(ess_session_t *s, int code, const char *what);

/** Close the session if it has made no progress for too long (called every second). */
void ess_session_check_stall(ess_session_t *s, uint64_t now_ms);

/** The event stream id (gateway.c indexes sessions by it). */
int64_t ess_session_es_id(const ess_session_t *s);

#endif
