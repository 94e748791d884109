/* Unit tests for util/utf8. */
#include "ess_test.h"
#include "util/utf8.h"

#define V(s) ess_utf8_valid((const uint8_t *)(s), sizeof(s) - 1)

static void test_valid(void)
{
    CHECK(V(""));
    CHECK(V("plain ascii that is longer than eight bytes"));
    CHECK(V("caf\xc3\xa9"));
    CHECK(V("\xe2\x82\xac euro"));
    CHECK(V("\xf0\x9f\x98\x80 emoji"));
    CHECK(V("\xf4\x8f\xbf\xbf"));
    CHECK(V("\x00 nul is valid UTF-8"));
}

static void test_invalid(void)
{
    CHECK(!V("\x80"));
    CHECK(!V("\xc3"));             /* truncated */
    CHECK(!V("abcdefgh\xc3"));     /* truncated after the fast path */
    CHECK(!V("\xc0\xaf"));         /* overlong */
    CHECK(!V("\xe0\x80\xaf"));     /* overlong */
    CHECK(!V("\xed\xa0\x80"));     /* surrogate */
    CHECK(!V("\xf4\x90\x80\x80")); /* > U+10FFFF */
    CHECK(!V("\xf5\x80\x80\x80"));
    CHECK(!V("\xe2\x82"));
    CHECK(!V("\xe2\x28\xa1"));
    CHECK(!V("\xff"));
}

ESS_TEST_MAIN(ESS_TEST(test_valid), ESS_TEST(test_invalid))
