/*
 * Internals shared by the two halves of the classic-queue client, and by
 * nothing else: include this only from core/mq/classic*.c. The public API
 * is mq/classic.h.
 *
 *   classic.c         the loop side: the public calls, the subscription
 *                     table, dispatching events to callbacks, acks
 *   classic_worker.c  the worker thread: the librabbitmq-c connection,
 *                     channels, queues, consuming, reconnects
 *
 * The two sides share only the command queue (loop -> worker) and the
 * event queue (worker -> loop), both under ess_classic_t.mu; each field of
 * ess_classic_t below says which side may touch it.
 */
#ifndef ESS_MQ_CLASSIC_INTERNAL_H
#define ESS_MQ_CLASSIC_INTERNAL_H

#include "mq/rabbitmq_c.h"
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mq/classic.h"

#define SUB_BUCKETS 1024

enum { CMD_SUB, CMD_UNSUB, CMD_ACK, CMD_CLOSE };
enum { EV_SUBSCRIBED, EV_MESSAGE, EV_ENDED, EV_EXIT };

/* A command from the loop to the worker; the worker frees it. */
typedef struct ess__classic_cmd_s {
    struct ess__classic_cmd_s *next;
    int kind;
    uint64_t id;
    uint32_t gen;
    uint64_t tag;
    char *exchange, *routing_key; /* CMD_SUB; owned by the command, then the worker */
} ess__classic_cmd_t;

/* An event from the worker to the loop; the loop frees it (one malloc). */
typedef struct ess__classic_event_s {
    struct ess__classic_event_s *next;
    int kind;
    uint64_t id;
    int status;
    uint32_t gen;
    uint64_t tag;
    int redelivered;
    int has_ctype;
    size_t len;
    char *ctype;    /* points into data, after the body */
    uint8_t data[]; /* body, then the NUL-terminated content type */
} ess__classic_event_t;

struct ess_classic_s {
    uv_loop_t *loop;
    uv_async_t async;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;

    /* Under mu. */
    ess__classic_cmd_t *cmd_head, *cmd_tail;
    ess__classic_event_t *ev_head, *ev_tail;
    int connected;

    /* Options (read-only after create). */
    char *url, *name;
    int heartbeat_s, prefetch, min_ms, max_ms;

    /* Loop thread only. */
    ess_classic_sub_t *subs[SUB_BUCKETS];
    uint64_t next_id;
    int closing;
    void (*done)(void *ud);
    void *done_ud;
    uint64_t *dirty;
    size_t ndirty, dirty_cap;

    /* Worker thread only. */
    amqp_connection_state_t conn; /* NULL while disconnected */
    int dead;                     /* conn failed: drop it at the next check */
    int quit;
    struct ess__classic_wsub_s *wsubs[SUB_BUCKETS];
    struct ess__classic_wsub_s **by_chan; /* indexed by channel number, chan_max + 1 slots */
    int chan_max;
    amqp_channel_t next_chan;
    uint64_t connected_at_ms;
    int attempt;
    unsigned rng;
};

/* classic.c: frees a command and the strings it still owns (either side). */
void ess__classic_cmd_free(ess__classic_cmd_t *cmd);

/* classic_worker.c: the worker thread's body (arg is the ess_classic_t). It
 * posts EV_EXIT as its last act; the loop then joins it. */
void ess__classic_worker(void *arg);

#endif
