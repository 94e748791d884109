/*
 * A source of messages for one consumer: the one interface the gateway
 * sees, whatever broker protocol is behind it. Implemented by adapters over
 * the public APIs of the stream client (stream_source.c) and the classic
 * client (classic_source.c). Each subscription owns its adapter; the
 * adapter frees itself after on_ended or ess_source_unsubscribe.
 */
#ifndef ESS_SOURCE_H
#define ESS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "mq/amqp10.h"
#include "mq/stream_client.h"

struct ess_classic_s;
typedef struct ess_source_s ess_source_t;

/** One delivered message, borrowed: valid during on_message only. */
typedef struct {
    const uint8_t *body; /* the body (first AMQP data section, or the classic body) */
    size_t len;
    int has_offset; /* the record has a stream offset and timestamp */
    uint64_t offset;
    int64_t timestamp_ms;
    const ess_amqp10_msg_t *amqp; /* parsed AMQP 1.0 sections, or NULL */
    const uint8_t *record;        /* the whole stored record (for ess_amqp10_body_copy) */
    size_t record_len;
} ess_source_msg_t;

typedef struct {
    void (*on_message)(void *ud, const ess_source_msg_t *msg);
    /**
     * The subscription is over and the source freed when this returns.
     * established is 0 when it never started (status says why:
     * ESS_ENOTFOUND for an unknown stream, ESS_ECONN, ...), 1 when it ended
     * later (ESS_ENOTFOUND: the stream was deleted; other: lost for good).
     */
    void (*on_ended)(void *ud, int status, int established);
} ess_source_cbs_t;

typedef struct {
    void (*pause)(ess_source_t *src);
    void (*resume)(ess_source_t *src);
    void (*unsubscribe)(ess_source_t *src);
} ess_source_ops_t;

/** The part every adapter shares; adapters embed it first. */
struct ess_source_s {
    const ess_source_ops_t *ops;
    ess_source_cbs_t cbs;
    void *ud;
    int has_offsets; /* its messages carry offsets (stream) or not (classic) */
};

/** Withhold flow from the broker (credit or acks): the broker keeps the data. */
static inline void ess_source_pause(ess_source_t *src)
{
    src->ops->pause(src);
}

/** Let flow resume after ess_source_pause. */
static inline void ess_source_resume(ess_source_t *src)
{
    src->ops->resume(src);
}

/** Stop and free src; no callback runs for it afterwards (safe in its callbacks). */
static inline void ess_source_unsubscribe(ess_source_t *src)
{
    src->ops->unsubscribe(src);
}

/**
 * Subscribe to a RabbitMQ stream from `from` (stream_source.c). The outcome
 * arrives through the callbacks, never synchronously. ESS_OK and *out, or
 * the stream client's error.
 */
int ess_stream_source_subscribe(ess_stream_client_t *client, const char *stream,
                                ess_offset_spec_t from, const ess_source_cbs_t *cbs, void *ud,
                                ess_source_t **out);

/**
 * Subscribe through a classic queue bound to exchange with routing_key
 * (classic_source.c). Messages have no offsets. As above.
 */
int ess_classic_source_subscribe(struct ess_classic_s *client, const char *exchange,
                                 const char *routing_key, const ess_source_cbs_t *cbs, void *ud,
                                 ess_source_t **out);

#endif
