/*
 * The publisher's resend queue (see mq/pubq.h): a growable array of
 * message copies sorted by publishing id, searched by bisection on
 * confirm, compacted from the front as the oldest ids are confirmed.
 */
#include <string.h>

#include "ess.h"
#include "mq/pubq.h"

void ess_pubq_init(ess_pubq_t *q)
{
    memset(q, 0, sizeof *q);
}

void ess_pubq_free(ess_pubq_t *q)
{
    for (size_t i = q->head; i < q->n; i++)
        free(q->v[i].data);
    free(q->v);
    ess_pubq_init(q);
}

int ess_pubq_push(ess_pubq_t *q, uint64_t id, const uint8_t *data, size_t len)
{
    if ((len && data == NULL) || (q->n > q->head && id <= q->v[q->n - 1].id))
        return ESS_EINVAL;
    if (q->n == q->cap) {
        if (q->head > 0 && q->head >= q->n / 2) { /* slide down before growing */
            memmove(q->v, q->v + q->head, (q->n - q->head) * sizeof *q->v);
            q->n -= q->head;
            q->head = 0;
        } else {
            q->cap = q->cap ? q->cap * 2 : 64;
            q->v = ess_xrealloc(q->v, q->cap * sizeof *q->v);
        }
    }
    ess_pubq_item_t *it = &q->v[q->n++];
    it->id = id;
    it->len = len;
    it->taken = 0;
    it->data = ess_xmalloc(len ? len : 1);
    if (len)
        memcpy(it->data, data, len);
    q->pending++;
    q->bytes += len;
    return ESS_OK;
}

int ess_pubq_take(ess_pubq_t *q, uint64_t id)
{
    size_t lo = q->head, hi = q->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (q->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == q->n || q->v[lo].id != id || q->v[lo].taken)
        return 0;
    ess_pubq_item_t *it = &q->v[lo];
    it->taken = 1;
    free(it->data);
    it->data = NULL;
    q->pending--;
    q->bytes -= it->len;
    while (q->head < q->n && q->v[q->head].taken)
        q->head++;
    if (q->head == q->n)
        q->head = q->n = 0;
    return 1;
}

size_t ess_pubq_pending(const ess_pubq_t *q)
{
    return q->pending;
}

size_t ess_pubq_slots(const ess_pubq_t *q)
{
    return q->n - q->head;
}

const ess_pubq_item_t *ess_pubq_at(const ess_pubq_t *q, size_t i)
{
    return &q->v[q->head + i];
}
