/*
 * A small blocking AMQP 0-9-1 client on librabbitmq-c, for the tools and
 * for a worker thread of essd (never the event-loop thread: every call
 * here may block up to its timeout). One connection, one channel:
 * declare the event-streams exchange and stream queues, publish with
 * optional publisher confirms, delete queues. Errors come back as ESS_E*
 * codes with a human-readable message from ess_amqp091_error.
 */
#ifndef ESS_MQ_AMQP091_H
#define ESS_MQ_AMQP091_H

#include <stddef.h>
#include <stdint.h>

typedef struct ess_amqp091_s ess_amqp091_t;

typedef enum {
    ESS_AMQP091_HDR_STRING = 0,
    ESS_AMQP091_HDR_INT,
    ESS_AMQP091_HDR_BOOL,
} ess_amqp091_header_kind_t;

/** One message header (a field of the 0-9-1 headers table). Borrowed. */
typedef struct {
    const char *key;
    ess_amqp091_header_kind_t kind;
    const char *s; /* STRING */
    int64_t i;     /* INT, BOOL (0 or 1) */
} ess_amqp091_header_t;

/**
 * Connect and log in from an amqp:// URL (see mq/url.h; amqps:// is
 * refused with ESS_EINVAL), and open a channel. timeout_ms bounds the TCP
 * connect and every later wait (0 = the library default, no bound on
 * reads). On success *out is a new connection the caller releases with
 * ess_amqp091_close. On failure *out is NULL and, when err is not NULL, a
 * message is written to err (errlen bytes, NUL-terminated). Errors:
 * ESS_EINVAL (bad URL), ESS_ECONN (cannot reach host:port), ESS_EAUTH
 * (login or vhost refused), ESS_EPROTO (other handshake failure).
 */
int ess_amqp091_connect(const char *url, int timeout_ms, ess_amqp091_t **out, char *err,
                        size_t errlen);

/** Close the connection politely and free it. NULL is a no-op. */
void ess_amqp091_close(ess_amqp091_t *c);

/** The message of the last failed call on c; borrowed until the next call. Never NULL. */
const char *ess_amqp091_error(const ess_amqp091_t *c);

/**
 * Declare a durable direct exchange (idempotent). Errors: ESS_ESTATE (it
 * exists with other attributes), ESS_EAUTH, ESS_ECONN, ESS_EPROTO.
 */
int ess_amqp091_declare_exchange(ess_amqp091_t *c, const char *exchange);

/**
 * Declare a durable stream queue (x-queue-type: stream) named queue and,
 * when exchange is not NULL, bind it to exchange with routing_key.
 * Idempotent. Errors: ESS_ESTATE (a queue of that name exists with another
 * type), ESS_ENOTFOUND (no such exchange), ESS_EAUTH, ESS_ECONN, ESS_EPROTO.
 */
int ess_amqp091_declare_stream(ess_amqp091_t *c, const char *queue, const char *exchange,
                               const char *routing_key);

/**
 * Delete a queue (whatever its type, even when not empty). A queue that
 * does not exist is not an error. Errors: ESS_EAUTH, ESS_ECONN, ESS_EPROTO.
 */
int ess_amqp091_delete_queue(ess_amqp091_t *c, const char *queue);

/**
 * Put the channel in confirm mode. Afterwards ess_amqp091_publish keeps at
 * most window messages unconfirmed (it waits for acks beyond that) and
 * ess_amqp091_wait_confirms waits for all of them. window >= 1.
 */
int ess_amqp091_enable_confirms(ess_amqp091_t *c, unsigned window);

/**
 * Publish one persistent message. content_type may be NULL; headers may be
 * NULL when n_headers is 0. Returns ESS_OK once the message is written
 * (and, in confirm mode, when the window allows). Errors: ESS_ENOTFOUND
 * (no such exchange: the broker closed the channel), ESS_EPROTO (a nack),
 * ESS_ECONN, ESS_EAUTH.
 */
int ess_amqp091_publish(ess_amqp091_t *c, const char *exchange, const char *routing_key,
                        const void *body, size_t len, const char *content_type,
                        const ess_amqp091_header_t *headers, size_t n_headers);

/**
 * In confirm mode, wait until every published message is confirmed.
 * Returns ESS_OK, ESS_EPROTO if any was nacked, ESS_ECONN on timeout or a
 * lost connection, ESS_ENOTFOUND if the channel was closed for a missing
 * exchange. A no-op without confirm mode.
 */
int ess_amqp091_wait_confirms(ess_amqp091_t *c);

/** Messages published and confirmed so far (confirm mode). */
uint64_t ess_amqp091_confirmed(const ess_amqp091_t *c);

#endif
