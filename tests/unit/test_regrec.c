/*
 * Unit tests for the shared registry's record codec (store/regrec.c):
 * every record type round-trips, a snapshot's rows are walked in order,
 * and malformed input (every truncation of valid records, a wrong magic
 * or version, an unknown type, trailing bytes, an invalid uuid, routing
 * key or id, a bad snapshot part) is refused with a reason, never read
 * past its end.
 */
#include "ess_test.h"
#include "ess.h"
#include "store/regrec.h"

#include <stdlib.h>
#include <string.h>

static const char REF[] = "essd-registry-0123456789abcdef";

static ess_es_row_t row_of(int64_t id, const char *uuid, const char *rk, int64_t ms)
{
    ess_es_row_t r = {.id = id, .routing_key = rk, .routing_key_len = strlen(rk), .created_ms = ms};
    snprintf(r.uuid, sizeof r.uuid, "%s", uuid);
    return r;
}

static void test_created_round_trip(void)
{
    ess_buf_t b = {0};
    ess_es_row_t row = row_of(0, "ruGozuqmYLSPq-Jin1XndQ", "orders.eu", 1764400000123);
    ess_regrec_created(&b, REF, &row);
    ess_regrec_t rec;
    const char *why = NULL;
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_OK);
    CHECK_EQ_INT(rec.type, ESS_REGREC_CREATED);
    CHECK(rec.ref_len == strlen(REF) && memcmp(rec.ref, REF, rec.ref_len) == 0);
    CHECK_EQ_STR(rec.row.uuid, "ruGozuqmYLSPq-Jin1XndQ");
    CHECK(rec.row.routing_key_len == 9 && memcmp(rec.row.routing_key, "orders.eu", 9) == 0);
    CHECK(rec.row.created_ms == 1764400000123);
    ess_buf_free(&b);
}

static void test_deleted_claim_barrier_round_trip(void)
{
    ess_buf_t b = {0};
    ess_regrec_t rec;
    ess_regrec_deleted(&b, REF, 42, 0xfedcba9876543210ull);
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, NULL), ESS_OK);
    CHECK(rec.type == ESS_REGREC_DELETED && rec.id == 42 && rec.nonce == 0xfedcba9876543210ull);
    ess_buf_reset(&b);
    ess_regrec_claim(&b, REF, INT64_MAX, 7);
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, NULL), ESS_OK);
    CHECK(rec.type == ESS_REGREC_CLAIM && rec.id == INT64_MAX && rec.nonce == 7);
    ess_buf_reset(&b);
    ess_regrec_barrier(&b, REF, 9);
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, NULL), ESS_OK);
    CHECK(rec.type == ESS_REGREC_BARRIER && rec.nonce == 9);
    ess_buf_free(&b);
}

typedef struct {
    int n;
    int64_t ids[8];
    char keys[8][32];
} seen_t;

static int collect(void *ud, const ess_es_row_t *row)
{
    seen_t *s = ud;
    s->ids[s->n] = row->id;
    snprintf(s->keys[s->n], sizeof s->keys[0], "%.*s", (int)row->routing_key_len, row->routing_key);
    s->n++;
    return 0;
}

static void build_snapshot(ess_buf_t *b)
{
    ess_regrec_snapshot(b, REF, 1234, 1, 3, 3);
    ess_es_row_t r1 = row_of(5, "AAAAAAAAAAAAAAAAAAAAAA", "a", 1);
    ess_es_row_t r2 = row_of(9, "BBBBBBBBBBBBBBBBBBBBBB", "bb", 2);
    ess_es_row_t r3 = row_of(1000, "CCCCCCCCCCCCCCCCCCCCCC", "ccc", 3);
    ess_regrec_snapshot_row(b, &r1);
    ess_regrec_snapshot_row(b, &r2);
    ess_regrec_snapshot_row(b, &r3);
}

static void test_snapshot_round_trip(void)
{
    ess_buf_t b = {0};
    build_snapshot(&b);
    ess_regrec_t rec;
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, NULL), ESS_OK);
    CHECK(rec.type == ESS_REGREC_SNAPSHOT && rec.at == 1234 && rec.part == 1 && rec.parts == 3 &&
          rec.nrows == 3);
    seen_t s = {0};
    CHECK_EQ_INT(ess_regrec_rows(&rec, collect, &s), ESS_OK);
    CHECK_EQ_INT(s.n, 3);
    CHECK(s.ids[0] == 5 && s.ids[1] == 9 && s.ids[2] == 1000);
    CHECK_EQ_STR(s.keys[2], "ccc");
    /* An empty snapshot (no live rows) is one part with no rows. */
    ess_buf_reset(&b);
    ess_regrec_snapshot(&b, REF, -1, 0, 1, 0);
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, NULL), ESS_OK);
    CHECK(rec.nrows == 0 && rec.at == -1);
    ess_buf_free(&b);
}

/* Every proper prefix of a valid record is refused, from a heap copy of
 * exactly that size (so a read past it would be caught by ASan). */
static void check_truncations(const ess_buf_t *b)
{
    for (size_t n = 0; n < b->len; n++) {
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, b->data, n);
        ess_regrec_t rec;
        const char *why = NULL;
        CHECK_EQ_INT(ess_regrec_decode(p, n, &rec, &why), ESS_EPROTO);
        CHECK(why != NULL);
        free(p);
    }
}

static void test_malformed(void)
{
    ess_buf_t b = {0};
    ess_regrec_t rec;
    const char *why;
    ess_es_row_t row = row_of(0, "ruGozuqmYLSPq-Jin1XndQ", "k", 1);
    ess_regrec_created(&b, REF, &row);
    check_truncations(&b);
    /* trailing byte */
    ess_buf_append(&b, "x", 1);
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "trailing bytes");
    b.len--;
    /* wrong magic, version, type */
    b.data[0] = 'X';
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    b.data[0] = 'E';
    b.data[2] = 2;
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "unknown record version");
    b.data[2] = 1;
    b.data[3] = 99;
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "unknown record type");
    b.data[3] = ESS_REGREC_CREATED;
    /* a uuid character outside base64url */
    size_t uuid_at = 5 + strlen(REF);
    b.data[uuid_at] = '/';
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "invalid uuid");
    b.data[uuid_at] = 'r';
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_OK);
    /* a control character in the routing key */
    b.data[b.len - 1] = '\n';
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "invalid routing key");

    ess_buf_reset(&b);
    ess_regrec_deleted(&b, REF, 0, 1);
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "invalid id");
    ess_buf_reset(&b);
    ess_regrec_deleted(&b, REF, 3, 1);
    check_truncations(&b);

    ess_buf_reset(&b);
    build_snapshot(&b);
    check_truncations(&b);
    ess_buf_reset(&b);
    ess_regrec_snapshot(&b, REF, 5, 3, 3, 0); /* part not below parts */
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "invalid snapshot part");
    ess_buf_reset(&b);
    ess_regrec_snapshot(&b, REF, 5, 0, 1, 2); /* says 2 rows, has none */
    CHECK_EQ_INT(ess_regrec_decode((const uint8_t *)b.data, b.len, &rec, &why), ESS_EPROTO);
    ess_buf_free(&b);

    /* an empty writer reference */
    uint8_t empty_ref[] = {'E', 'R', 1, ESS_REGREC_BARRIER, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    CHECK_EQ_INT(ess_regrec_decode(empty_ref, sizeof empty_ref, &rec, &why), ESS_EPROTO);
    CHECK_EQ_STR(why, "empty writer reference");
}

ESS_TEST_MAIN(ESS_TEST(test_created_round_trip), ESS_TEST(test_deleted_claim_barrier_round_trip),
              ESS_TEST(test_snapshot_round_trip), ESS_TEST(test_malformed))
