/*
 * Unit tests of the publisher's resend queue (mq/pubq.c): ids in order,
 * confirms in any order reported once, the pending set a reconnect
 * resends, and compaction over many pushes.
 */
#include <string.h>

#include "ess.h"
#include "ess_test.h"
#include "mq/pubq.h"

/* The pending ids, oldest first, as a reconnect would resend them. */
static size_t pending_ids(const ess_pubq_t *q, uint64_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < ess_pubq_slots(q) && n < max; i++) {
        const ess_pubq_item_t *it = ess_pubq_at(q, i);
        if (!it->taken)
            out[n++] = it->id;
    }
    return n;
}

static void test_order_and_once(void)
{
    ess_pubq_t q;
    ess_pubq_init(&q);
    const uint8_t m[] = "hello";
    for (uint64_t id = 1; id <= 5; id++)
        CHECK_EQ_INT(ess_pubq_push(&q, id, m, 5), ESS_OK);
    CHECK_EQ_INT(ess_pubq_push(&q, 5, m, 5), ESS_EINVAL); /* not increasing */
    CHECK_EQ_INT(ess_pubq_push(&q, 3, m, 5), ESS_EINVAL);
    CHECK_EQ_INT(ess_pubq_pending(&q), 5);
    CHECK_EQ_INT(q.bytes, 25);
    CHECK_EQ_INT(ess_pubq_take(&q, 3), 1); /* out of order */
    CHECK_EQ_INT(ess_pubq_take(&q, 3), 0); /* a second confirm of 3 is not reported */
    CHECK_EQ_INT(ess_pubq_take(&q, 9), 0); /* never published */
    CHECK_EQ_INT(ess_pubq_take(&q, 1), 1);
    uint64_t ids[8];
    size_t n = pending_ids(&q, ids, 8);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(ids[0], 2);
    CHECK_EQ_INT(ids[1], 4);
    CHECK_EQ_INT(ids[2], 5);
    const ess_pubq_item_t *it = ess_pubq_at(&q, 0);
    CHECK_EQ_INT(it->len, 5);
    CHECK(memcmp(it->data, "hello", 5) == 0);
    CHECK_EQ_INT(ess_pubq_take(&q, 2), 1);
    CHECK_EQ_INT(ess_pubq_take(&q, 5), 1);
    CHECK_EQ_INT(ess_pubq_take(&q, 4), 1);
    CHECK_EQ_INT(ess_pubq_pending(&q), 0);
    CHECK_EQ_INT(ess_pubq_slots(&q), 0);
    CHECK_EQ_INT(q.bytes, 0);
    /* ids keep increasing after the queue drained; empty bodies are fine */
    CHECK_EQ_INT(ess_pubq_push(&q, 6, NULL, 0), ESS_OK);
    CHECK_EQ_INT(ess_pubq_push(&q, 7, NULL, 3), ESS_EINVAL);
    CHECK_EQ_INT(ess_pubq_take(&q, 6), 1);
    ess_pubq_free(&q);
}

/* A window of 100 unconfirmed over 100,000 messages: memory stays bounded
 * by the window (slots are reused) and every id is reported exactly once. */
static void test_sliding_window(void)
{
    ess_pubq_t q;
    ess_pubq_init(&q);
    uint8_t b[8];
    size_t reported = 0;
    for (uint64_t id = 1; id <= 100000; id++) {
        memcpy(b, &id, sizeof b);
        CHECK_EQ_INT(ess_pubq_push(&q, id, b, sizeof b), ESS_OK);
        if (id > 100) {
            /* confirm pairs out of order: id-99 before id-100 */
            if (id % 2 == 1) {
                reported += (size_t)ess_pubq_take(&q, id - 99);
                reported += (size_t)ess_pubq_take(&q, id - 100);
            }
        }
    }
    CHECK(q.cap <= 256);
    for (size_t i = 0; i < ess_pubq_slots(&q); i++) {
        const ess_pubq_item_t *it = ess_pubq_at(&q, i);
        uint64_t v;
        if (it->taken)
            continue;
        memcpy(&v, it->data, sizeof v);
        CHECK_EQ_INT(v, it->id);
    }
    for (uint64_t id = 1; id <= 100000; id++)
        reported += (size_t)ess_pubq_take(&q, id);
    CHECK_EQ_INT(reported, 100000);
    CHECK_EQ_INT(ess_pubq_pending(&q), 0);
    ess_pubq_free(&q);
}

ESS_TEST_MAIN(ESS_TEST(test_order_and_once), ESS_TEST(test_sliding_window))
