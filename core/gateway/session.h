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
#include "gateway/fanout.h"
#include "gateway/selector.h"

typedef struct ess_session_s ess_session_t;

/** What the upgrade request asked for, parsed by the transport. */
typedef struct {
    const char *path; /* the request path ("/event-stream/<uuid>") */
    /* Each of ess_selector_names, or NULL when absent (the first one given). */
    const char *selector[ESS_SEL_SOURCES];
    /* How many times each was given (a repeated query parameter is several). */
    unsigned count[ESS_SEL_SOURCES];
    const char *peer;       /* the client's address (for the console), or NULL */
    const char *user_agent; /* its User-Agent header, or NULL */
    int deflate;            /* permessage-deflate was negotiated (http/deflate.h) */
} ess_session_request_t;

/** The transport's side: how a session asks to be written. */
typedef struct {
    void (*want_write)(void *conn); /* request a write callback (output or close pending) */
} ess_session_transport_t;

/** The WebSocket is established: validate, look up, subscribe (or start closing). */
ess_session_t *ess_session_open(ess_app_t *app, const ess_session_request_t *req,
                                const ess_session_transport_t *transport, void *conn);

/**
 * The next bytes to write (whole frames: an output block, or a run of a
 * shared log): 1 with *data and *len, 0 when none. Still pending until
 * ess_session_sent; never written to by anyone (shared bytes are read by
 * other sessions too), and there are ESS_OUT_HEADROOM bytes before them
 * that the transport must not write either.
 */
int ess_session_next_bytes(ess_session_t *s, const uint8_t **data, size_t *len);

/** The transport has handed the last next bytes to the socket: count them (and free them). */
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

/* ---- For gateway/fanout.c only ---- */
/** The session's member state (gateway/fanout.h). */
ess_fan_member_t *ess__session_fan(ess_session_t *s);
/** Whether the session's frames are permessage-deflate compressed. */
int ess__session_deflate(const ess_session_t *s);
/** New frames in the group's log for a member that had sent everything: ask for a write. */
void ess__session_fan_wake(ess_session_t *s);
/** A member is a budget behind (or the hook turned per_stream): leave, continue on its own. */
void ess__session_fan_slow(ess_session_t *s);
/** A solo session joined a group at its own position: drop its own source. */
void ess__session_fan_joined(ess_session_t *s);
/** The group read POISON: close with 1000 after what the member has queued. */
void ess__session_fan_poison(ess_session_t *s);
/** The group's source ended (as a session's own source's on_ended). */
void ess__session_fan_ended(ess_session_t *s, int status, int established);

/** What the operator console (gateway/console.c) shows of a session. Strings are borrowed. */
typedef struct {
    int64_t es_id;
    const char *uuid, *routing_key;
    const char *stream;     /* the broker stream, or NULL (classic route, or not subscribed) */
    const char *peer;       /* "" when unknown */
    const char *user_agent; /* "" when none */
    const char *selector;   /* "name=value" of the start selector used, "" for none */
    int64_t connected_ms;   /* wall clock */
    int has_offsets, delivered, paused, closing;
    uint64_t last_offset; /* last offset handed to the socket (when delivered) */
    uint64_t msgs_in, msgs_out, bytes_out, stalls;
    size_t queued_bytes;
    uint64_t rate_in, rate_out, rate_bytes; /* per second, over the last ess_session_sample */
    int64_t stream_tail;                    /* last committed offset; -1 empty; -2 not known */
    uint64_t stream_tail_ms;                /* loop time it was learned */
} ess_session_info_t;

/** Fill info from s (no allocation). */
void ess_session_info(const ess_session_t *s, ess_session_info_t *info);

/** Once a second (console tick): turn the counters into per-second rates. */
void ess_session_sample(ess_session_t *s);

/** The stream's last committed offset (-1: empty), learned at loop time at_ms. */
void ess_session_set_stream_tail(ess_session_t *s, int64_t last_offset, uint64_t at_ms);

/**
 * The session's tail (gateway/tail.h): NULL unless an operator watches it.
 * While set, each enriched frame and its raw body are recorded there.
 */
struct ess_tail_s **ess_session_tail_slot(ess_session_t *s);

/** A watch started on s: a member of a shared subscription leaves it and
 *  continues on its own (from the offset after its last sent frame), so
 *  that its own enrichment runs and is recorded; it rejoins once unwatched. */
void ess_session_watched(ess_session_t *s);

#endif
