/* Unit tests for http/deflate: permessage-deflate (issue 15 item 4). */
#include "ess_test.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "http/deflate.h"

/* Inflate with zlib directly, as a client does (RFC 7692 7.2.2). */
static size_t zinflate(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    uint8_t *buf = malloc(n + 4);
    memcpy(buf, in, n);
    memcpy(buf + n, "\x00\x00\xff\xff", 4);
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(inflateInit2(&z, -15) == Z_OK);
    z.next_in = buf;
    z.avail_in = (uInt)(n + 4);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_SYNC_FLUSH);
    CHECK(rc == Z_OK || rc == Z_STREAM_END);
    CHECK_EQ_INT((int)z.avail_in, 0);
    size_t got = cap - z.avail_out;
    inflateEnd(&z);
    free(buf);
    return got;
}

static void test_round_trip(void)
{
    ess_deflate_t d;
    CHECK_EQ_INT(ess_deflate_init(&d, 1), 0);
    static uint8_t msg[70000], out[80000], back[80000];
    size_t sizes[] = {0, 1, 64, 300, 4096, sizeof msg};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        for (size_t i = 0; i < n; i++)
            msg[i] = i % 7 == 0 ? (uint8_t)('a' + (i * 131 % 26)) : (uint8_t) "{\"k\":1}"[i % 7];
        CHECK(ess_deflate_bound(&d, n) <= sizeof out);
        size_t c = ess_deflate_message(&d, msg, n, out);
        CHECK(c > 0);
        /* Each message alone: the same input gives the same bytes twice. */
        static uint8_t again[80000];
        CHECK_EQ_INT((int)ess_deflate_message(&d, msg, n, again), (int)c);
        CHECK(memcmp(out, again, c) == 0);
        /* The 00 00 ff ff is stripped: a sync flush ends with it, so the
         * output with it put back is what zlib would have written. */
        {
            z_stream z;
            memset(&z, 0, sizeof z);
            CHECK(deflateInit2(&z, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
            z.next_in = msg;
            z.avail_in = (uInt)n;
            z.next_out = again;
            z.avail_out = sizeof again;
            CHECK(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
            size_t full = sizeof again - z.avail_out;
            deflateEnd(&z);
            CHECK_EQ_INT((int)full, (int)c + 4);
            CHECK(memcmp(again, out, c) == 0);
            CHECK(memcmp(again + c, "\x00\x00\xff\xff", 4) == 0);
        }
        CHECK_EQ_INT((int)zinflate(out, c, back, sizeof back), (int)n);
        CHECK(memcmp(back, msg, n) == 0);
        CHECK_EQ_INT((int)ess_inflate_message(out, c, back, n), (int)n);
        CHECK(memcmp(back, msg, n) == 0);
        if (n > 0)
            CHECK_EQ_INT((int)ess_inflate_message(out, c, back, n - 1), -1);
        if (n >= 300)
            CHECK(c < n / 2);
    }
    ess_deflate_free(&d);
}

static void test_inflate_bad(void)
{
    uint8_t out[64];
    /* 0xff: a reserved block type (BTYPE 11). */
    CHECK_EQ_INT((int)ess_inflate_message((const uint8_t *)"\xff\xff\xff", 3, out, 64), -1);
    /* Empty input: the empty message. */
    CHECK_EQ_INT((int)ess_inflate_message(NULL, 0, out, 64), 0);
}

static void test_offer(void)
{
    CHECK(!ess_deflate_offer_ok(NULL));
    CHECK(!ess_deflate_offer_ok(""));
    CHECK(ess_deflate_offer_ok("permessage-deflate"));
    CHECK(ess_deflate_offer_ok("permessage-deflate; client_max_window_bits"));
    CHECK(ess_deflate_offer_ok("Permessage-Deflate ;client_no_context_takeover"));
    CHECK(ess_deflate_offer_ok(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"));
    CHECK(ess_deflate_offer_ok("permessage-deflate; server_max_window_bits=15"));
    CHECK(ess_deflate_offer_ok("permessage-deflate; server_max_window_bits=\"15\""));
    CHECK(ess_deflate_offer_ok("permessage-deflate; client_max_window_bits=10"));
    CHECK(ess_deflate_offer_ok("x-webkit-deflate-frame, permessage-deflate"));
    /* The first offer asks what essd cannot do; the fallback is fine. */
    CHECK(
        ess_deflate_offer_ok("permessage-deflate; server_max_window_bits=10, permessage-deflate"));
    CHECK(!ess_deflate_offer_ok("permessage-deflate; server_max_window_bits=10"));
    CHECK(!ess_deflate_offer_ok("permessage-deflate; server_max_window_bits"));
    CHECK(!ess_deflate_offer_ok("permessage-deflate; client_max_window_bits=7"));
    CHECK(!ess_deflate_offer_ok("permessage-deflate; client_max_window_bits=16"));
    CHECK(!ess_deflate_offer_ok("permessage-deflate; unknown_param"));
    CHECK(!ess_deflate_offer_ok("permessage-deflate; server_no_context_takeover=1"));
    CHECK(!ess_deflate_offer_ok(
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover"));
    CHECK(!ess_deflate_offer_ok("permessage-deflatex"));
    CHECK(!ess_deflate_offer_ok("x-webkit-deflate-frame"));
}

ESS_TEST_MAIN(ESS_TEST(test_round_trip), ESS_TEST(test_inflate_bad), ESS_TEST(test_offer))
