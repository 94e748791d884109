/*
 * Version 1 (classic queue) subscriptions over AMQP 0-9-1, for the
 * gateway's loop. librabbitmq-c blocks, so one worker thread owns one
 * AMQP connection and every librabbitmq call; the loop talks to it through
 * a mutex-protected command queue (subscribe, unsubscribe, ack, close) and
 * hears back through an event queue woken with uv_async_send.
 *
 * Each subscription gets its own channel and an exclusive, auto-delete,
 * server-named queue bound to a direct exchange (declared durable if
 * missing) with a routing key; consumed with manual acks and a prefetch
 * window. The loop acks (multiple = true, one ack per wake-up) only while
 * the subscription is not paused, so a slow reader leaves at most
 * `prefetch` unacked messages in flight and the rest waits in the broker.
 *
 * Classic queues have no history: on a lost connection the worker
 * reconnects with backoff and jitter and re-declares every live
 * subscription, and whatever was published while it was away is lost (the
 * queues were exclusive to the old connection). That gap is inherent to
 * Version 1.
 *
 * Callbacks run on the loop thread. Every pointer handed to a callback is
 * borrowed for the duration of that callback only.
 */
#ifndef ESS_MQ_CLASSIC_H
#define ESS_MQ_CLASSIC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ess_classic_s ess_classic_t;
typedef struct ess_classic_sub_s ess_classic_sub_t;

/** One delivered message. Borrowed: valid during on_message only. */
typedef struct {
    const uint8_t *body;
    size_t len;
    const char *content_type; /* NULL when the publisher set none */
    int redelivered;
} ess_classic_msg_t;

typedef struct {
    /** ESS_OK once the queue is declared, bound and consumed; otherwise
     *  ESS_ECONN (broker unreachable), ESS_EAUTH, ESS_ENOTFOUND, ESS_ESTATE
     *  (the exchange exists with another type), ESS_EPROTO. After a failure
     *  the sub is freed when this callback returns. Called once. */
    void (*on_subscribed)(ess_classic_sub_t *sub, int status, void *ud);
    void (*on_message)(ess_classic_sub_t *sub, const ess_classic_msg_t *msg, void *ud);
    /** Re-declaring after a lost connection or a broker-side cancel failed
     *  for good (status as above); the sub is freed when this returns. May be NULL. */
    void (*on_ended)(ess_classic_sub_t *sub, int status, void *ud);
} ess_classic_sub_cbs_t;

typedef struct {
    const char *url;             /* amqp://user:pass@host:port/vhost */
    int heartbeat_s;             /* 0 = 60 */
    int prefetch;                /* unacked messages per subscription, 0 = 500 */
    int reconnect_min_ms;        /* 0 = 100 */
    int reconnect_max_ms;        /* 0 = 5000 */
    const char *connection_name; /* shown in the management UI; NULL = "essd-classic" */
} ess_classic_opts_t;

/**
 * Create the client and start its worker thread, which connects at once.
 * opts and its strings are copied. Returns ESS_OK, ESS_EINVAL (bad or
 * amqps:// URL) or ESS_EIO (no thread). Subscriptions made before the
 * first connection attempt has finished wait for it.
 */
int ess_classic_create(uv_loop_t *loop, const ess_classic_opts_t *opts, ess_classic_t **out);

/**
 * Free every subscription (no callback runs for any of them after this
 * call), tell the worker to close the connection politely and exit, and
 * return without blocking the loop. done(ud) runs from the loop once the
 * thread is joined and everything is freed. done may be NULL.
 */
void ess_classic_close(ess_classic_t *c, void (*done)(void *ud), void *ud);

/** 1 when the worker's connection is open (for readiness). */
int ess_classic_connected(ess_classic_t *c);

/**
 * Subscribe: a new queue bound to exchange with routing_key. cbs is
 * copied, the strings too. The outcome always arrives through
 * cbs->on_subscribed, never synchronously; while the broker is down it is
 * ESS_ECONN. Returns ESS_OK and sets *out (valid until on_ended, a failed
 * on_subscribed, or ess_classic_unsubscribe), or ESS_EINVAL (a name over
 * 255 bytes) / ESS_ESTATE (client closing).
 */
int ess_classic_subscribe(ess_classic_t *c, const char *exchange, const char *routing_key,
                          const ess_classic_sub_cbs_t *cbs, void *ud, ess_classic_sub_t **out);

/**
 * Stop and free sub; its channel is closed, so the broker deletes the
 * queue. No callback runs for it after this returns; safe inside its
 * callbacks.
 */
void ess_classic_unsubscribe(ess_classic_sub_t *sub);

/** Stop acking: at most `prefetch` more messages arrive, the rest waits in the broker. */
void ess_classic_sub_pause(ess_classic_sub_t *sub);
/** Ack everything delivered so far and keep acking. */
void ess_classic_sub_resume(ess_classic_sub_t *sub);

/** Messages delivered to sub so far (for logs and tests). */
uint64_t ess_classic_sub_delivered(const ess_classic_sub_t *sub);

#endif
