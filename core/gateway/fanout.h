/*
 * Shared subscriptions (fan-out, issue 15): sessions that read the same
 * broker stream live share one broker subscription. Its messages are
 * enriched once (the enrich hook declared `per_stream = false`) and framed
 * once into a shared log (gateway/delivery.h); each member session reads
 * the log through its own cursor, so every member hands the same frame
 * bytes to its socket. A member that falls a budget behind leaves: it
 * continues on its own subscription from the offset after the last frame
 * it handed on, and rejoins once its own subscription reaches the group's
 * position. The only member of a group holds nobody back: for it the
 * group's source pauses, as its own would. Owns the groups (one per stream name, on the loop
 * thread) and their sources; sessions own their member state.
 */
#ifndef ESS_FANOUT_H
#define ESS_FANOUT_H

#include <stdint.h>

#include "app.h"
#include "gateway/delivery.h"

typedef struct ess_fanout_s ess_fanout_t;
typedef struct ess_session_s ess_session_t;

/** A session's state towards the groups, embedded in the session. */
typedef struct {
    ess_fanout_t *group;   /* the group it is a member of, or NULL */
    size_t index;          /* its place in the group's members */
    ess_outcur_t cur;      /* its cursor in the group's log (open while a member) */
    int next_known;        /* next_offset is set */
    uint64_t next_offset;  /* the first offset it has not handed on from the log */
    uint64_t msgs;         /* messages the group received while it was a member */
    int slow;              /* marked to leave after the current message */
    ess_fanout_t *waiting; /* a solo session waiting to rejoin this group, or NULL */
    size_t windex;         /* its place in that group's waiting list */
    uint64_t woffset;      /* the last offset its own subscription received */
} ess_fan_member_t;

/** 1 when a session with this route and start may share (stream mode, live, shared hook). */
int ess_fanout_eligible(ess_app_t *app, const char *stream);

/**
 * Make s a member of the group of `stream` (created, with its broker
 * subscription from "next", when it is the first). es is the session's
 * event stream, which the group's hook calls see when it creates the
 * group. ESS_OK, or the subscription's error (s is then not a member).
 */
int ess_fanout_join(ess_app_t *app, const char *stream, const ess_hook_es_t *es, ess_session_t *s);

/** Leave the group (cursor closed) and any waiting list; no-op when in neither. */
void ess_fanout_leave(ess_session_t *s);

/**
 * A solo session's own subscription received `offset` of `stream`: join
 * the stream's group when it is exactly there (1: the caller drops its own
 * source), or wait for the group to get there. 0 otherwise.
 */
int ess_fanout_try_rejoin(ess_app_t *app, const char *stream, ess_session_t *s, uint64_t offset);

/**
 * A member handed bytes on (queued: its own queue's payload): a group
 * paused for its only member resumes below half the budget.
 */
void ess_fanout_drained(ess_session_t *s, size_t queued);

/** Live groups (broker subscriptions shared by sessions). */
int64_t ess_fanout_groups(void);

#endif
