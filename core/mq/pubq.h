/*
 * The resend queue of a stream publisher: a copy of every message
 * published and not yet confirmed (nor refused), in publishing-id order, so
 * that after a lost connection the publisher can send them again with the
 * same ids (the broker drops the ones it already stored for a named
 * publisher) and report each id to its user exactly once. Pure: no I/O.
 *
 * The queue owns its copies. Ids must be pushed in increasing order;
 * take() removes one id whatever its position (confirms may come out of
 * order), leaving a hole that is dropped once everything before it is gone.
 */
#ifndef ESS_MQ_PUBQ_H
#define ESS_MQ_PUBQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t id;
    uint8_t *data; /* owned; NULL once taken */
    size_t len;
    int taken;
} ess_pubq_item_t;

typedef struct {
    ess_pubq_item_t *v;
    size_t head, n, cap; /* live slots are v[head .. n) */
    size_t pending;      /* slots not taken */
    size_t bytes;        /* payload bytes not taken */
} ess_pubq_t;

void ess_pubq_init(ess_pubq_t *q);
void ess_pubq_free(ess_pubq_t *q);
/** Copy a message with publishing id `id`; ESS_EINVAL unless id > every id pushed before. */
int ess_pubq_push(ess_pubq_t *q, uint64_t id, const uint8_t *data, size_t len);
/** Remove id: 1 if it was pending (report it now), 0 if unknown or taken already. */
int ess_pubq_take(ess_pubq_t *q, uint64_t id);
/** Number of pending messages. */
size_t ess_pubq_pending(const ess_pubq_t *q);
/** The i-th slot from the oldest (0 .. ess_pubq_slots()-1); skip taken ones. */
size_t ess_pubq_slots(const ess_pubq_t *q);
const ess_pubq_item_t *ess_pubq_at(const ess_pubq_t *q, size_t i);

#endif
