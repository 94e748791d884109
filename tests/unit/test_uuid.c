/* Unit tests for util/uuid: shape, alphabet, encoding, uniqueness. */
#include "ess_test.h"
#include "ess.h"
#include "util/uuid.h"

#include <stdlib.h>

static void test_encode_known(void)
{
    unsigned char zero[16] = {0}, ones[16];
    memset(ones, 0xff, sizeof ones);
    char out[ESS_UUID_LEN + 1];
    ess_uuid_encode(zero, out);
    CHECK_EQ_STR(out, "AAAAAAAAAAAAAAAAAAAAAA");
    ess_uuid_encode(ones, out);
    CHECK_EQ_STR(out, "_____________________w");
}

static void test_new_shape(void)
{
    char out[ESS_UUID_LEN + 1];
    CHECK_EQ_INT(ess_uuid_new(out), ESS_OK);
    CHECK_EQ_INT(strlen(out), ESS_UUID_LEN);
    CHECK(ess_uuid_valid(out, strlen(out)));
}

static int cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_unique_and_spread(void)
{
    enum { N = 20000 };
    char(*ids)[ESS_UUID_LEN + 1] = malloc(N * sizeof *ids);
    int seen[256] = {0};
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(ess_uuid_new(ids[i]), ESS_OK);
        seen[(unsigned char)ids[i][0]] = 1;
    }
    qsort(ids, N, sizeof *ids, cmp);
    int dups = 0;
    for (int i = 1; i < N; i++)
        dups += strcmp(ids[i - 1], ids[i]) == 0;
    CHECK_EQ_INT(dups, 0);
    int distinct = 0;
    for (int i = 0; i < 256; i++)
        distinct += seen[i];
    CHECK_EQ_INT(distinct, 64); /* the first character covers the whole alphabet */
    free(ids);
}

static void test_valid(void)
{
    CHECK(ess_uuid_valid("abcdefghijklmnopqrstu-", 22));
    CHECK(!ess_uuid_valid("abcdefghijklmnopqrstu", 21));
    CHECK(!ess_uuid_valid("abcdefghijklmnopqrstu/", 22));
    CHECK(!ess_uuid_valid("abcdefghijklmnopqrstu=", 22));
}

ESS_TEST_MAIN(ESS_TEST(test_encode_known), ESS_TEST(test_new_shape),
              ESS_TEST(test_unique_and_spread), ESS_TEST(test_valid))
