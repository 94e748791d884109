/* Unit tests for http/wsguard: the client frame check (issue 12 case 14). */
#include "ess_test.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "http/wsguard.h"

/* A client frame: masked with a fixed key unless mask is 0. */
static size_t frame(uint8_t *out, int opcode, int fin, int mask, const char *p, size_t n)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t o = 0;
    out[o++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (n < 126) {
        out[o++] = (uint8_t)(m | n);
    } else {
        out[o++] = m | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    }
    if (mask) {
        memcpy(out + o, key, 4);
        o += 4;
    }
    for (size_t i = 0; i < n; i++)
        out[o + i] = (uint8_t)p[i] ^ (mask ? key[i & 3] : 0);
    return o + n;
}

/* Feed buf whole, then byte by byte: both give the same verdict. */
static int verdict_in(const uint8_t *in, size_t n, size_t *stop, int deflate, uint8_t *out)
{
    uint8_t *buf = malloc(n ? n : 1), *one = malloc(n ? n : 1);
    memcpy(buf, in, n);
    memcpy(one, in, n);
    ess_wsguard_t g;
    ess_wsguard_init(&g);
    g.deflate = (uint8_t)deflate;
    *stop = ess_wsguard_feed(&g, buf, n);
    int code = g.code;
    ess_wsguard_init(&g);
    g.deflate = (uint8_t)deflate;
    for (size_t i = 0; i < n && !g.code; i++)
        ess_wsguard_feed(&g, one + i, 1);
    CHECK_EQ_INT(g.code, code);
    if (!code)
        CHECK(memcmp(buf, one, n) == 0);
    if (out)
        memcpy(out, buf, n);
    free(buf);
    free(one);
    return code;
}

static int verdict(const uint8_t *buf, size_t n, size_t *stop)
{
    return verdict_in(buf, n, stop, 0, NULL);
}

static void test_valid(void)
{
    uint8_t b[1024];
    size_t n = 0, stop;
    n += frame(b + n, 1, 1, 1, "caf\xc3\xa9", 5);
    n += frame(b + n, 1, 0, 1, "\xe2\x82", 2); /* a euro sign split across fragments */
    n += frame(b + n, 9, 1, 1, "mid", 3);      /* a ping between them */
    n += frame(b + n, 0, 1, 1, "\xac!", 2);
    n += frame(b + n, 2, 1, 1, "\xff\xfe", 2); /* binary: not UTF-8 checked */
    n += frame(b + n, 10, 1, 1, "", 0);
    char big[300];
    memset(big, 'a', sizeof big);
    n += frame(b + n, 1, 1, 1, big, sizeof big); /* 16-bit length */
    n += frame(b + n, 8, 1, 1,
               "\x03\xe8"
               "bye \xc3\xa9",
               8);
    CHECK_EQ_INT(verdict(b, n, &stop), 0);
    CHECK_EQ_INT((int)stop, (int)n);
}

static void expect(const uint8_t *b, size_t n, size_t first_bad_frame, int code)
{
    size_t stop;
    CHECK_EQ_INT(verdict(b, n, &stop), code);
    CHECK_EQ_INT((int)stop, (int)first_bad_frame);
}

static void test_violations(void)
{
    uint8_t b[1024];
    size_t ok = frame(b, 1, 1, 1, "ok", 2), n;
    char p200[200];
    memset(p200, 'p', sizeof p200);
    n = ok + frame(b + ok, 1, 1, 0, "unmasked", 8);
    expect(b, n, ok, 1002);
    n = ok + frame(b + ok, 9, 1, 1, p200, sizeof p200);
    expect(b, n, ok, 1002);
    n = ok + frame(b + ok, 9, 0, 1, "p", 1);
    expect(b, n, ok, 1002);
    n = ok + frame(b + ok, 3, 1, 1, "x", 1);
    expect(b, n, ok, 1002);
    n = ok + frame(b + ok, 0, 1, 1, "x", 1);
    expect(b, n, ok, 1002);
    n = ok + frame(b + ok, 1, 0, 1, "a", 1);
    size_t second = n;
    n += frame(b + n, 1, 1, 1, "b", 1);
    expect(b, n, second, 1002);
    n = ok + frame(b + ok, 8, 1, 1, "\x03", 1);
    expect(b, n, ok, 1002);
    b[ok] = 0x80 | 0x40 | 2; /* RSV1 on a binary frame */
    b[ok + 1] = 0x80;
    memset(b + ok + 2, 0, 4);
    expect(b, ok + 6, ok, 1002);
    n = ok + frame(b + ok, 1, 1, 1, "\xff\xfe\xc0\xaf", 4);
    expect(b, n, ok, 1007);
    n = ok + frame(b + ok, 1, 1, 1, "ok \xe2\x82", 5); /* cut at the message end */
    expect(b, n, ok, 1007);
    n = ok + frame(b + ok, 1, 1, 1, "\xed\xa0\x80", 3); /* a surrogate */
    expect(b, n, ok, 1007);
    n = ok + frame(b + ok, 8, 1, 1, "\x03\xe8\xff", 3);
    expect(b, n, ok, 1007);
}

static void test_after_violation(void)
{
    uint8_t b[64];
    size_t n = frame(b, 1, 1, 0, "x", 1);
    ess_wsguard_t g;
    ess_wsguard_init(&g);
    CHECK_EQ_INT((int)ess_wsguard_feed(&g, b, n), 0);
    CHECK_EQ_INT(g.code, 1002);
    CHECK(strstr(g.reason, "unmasked") != NULL);
    n = frame(b, 1, 1, 1, "x", 1);
    CHECK_EQ_INT((int)ess_wsguard_feed(&g, b, n), 0);
}

/* permessage-deflate negotiated: RSV1 on a data message's first frame
 * passes, cleared for lws; anywhere else it is still 1002. Compressed text
 * is not UTF-8 checked (its bytes are deflate data). */
static void test_deflate(void)
{
    uint8_t b[256], out[256];
    size_t n = 0, stop;
    n += frame(b + n, 1, 0, 1, "\xff\xfe", 2); /* compressed text: not UTF-8 */
    size_t first = 0;
    b[first] |= 0x40;
    size_t cont = n;
    n += frame(b + n, 0, 1, 1, "\x80", 1);
    size_t bin = n;
    n += frame(b + n, 2, 1, 1, "zz", 2);
    b[bin] |= 0x40;
    n += frame(b + n, 1, 1, 1, "plain", 5); /* uncompressed text: still checked */
    CHECK_EQ_INT(verdict_in(b, n, &stop, 1, out), 0);
    CHECK_EQ_INT((int)stop, (int)n);
    CHECK_EQ_INT(out[first], 0x01);
    CHECK_EQ_INT(out[bin], 0x82);
    CHECK(memcmp(out + 1, b + 1, bin - 1) == 0);
    /* Without deflate the same bytes are 1002. */
    CHECK_EQ_INT(verdict(b, n, &stop), 1002);
    CHECK_EQ_INT((int)stop, 0);
    /* RSV1 on a continuation, on a control frame, RSV2: 1002 even so. */
    uint8_t c[64];
    size_t m = frame(c, 1, 0, 1, "a", 1);
    size_t k = m;
    m += frame(c + m, 0, 1, 1, "b", 1);
    c[k] |= 0x40;
    CHECK_EQ_INT(verdict_in(c, m, &stop, 1, NULL), 1002);
    CHECK_EQ_INT((int)stop, (int)k);
    m = frame(c, 9, 1, 1, "p", 1);
    c[0] |= 0x40;
    CHECK_EQ_INT(verdict_in(c, m, &stop, 1, NULL), 1002);
    m = frame(c, 1, 1, 1, "a", 1);
    c[0] |= 0x60;
    CHECK_EQ_INT(verdict_in(c, m, &stop, 1, NULL), 1002);
    /* Uncompressed invalid text still closes with 1007. */
    m = frame(c, 1, 1, 1, "\xff", 1);
    CHECK_EQ_INT(verdict_in(c, m, &stop, 1, NULL), 1007);
    (void)cont;
}

ESS_TEST_MAIN(ESS_TEST(test_valid), ESS_TEST(test_violations), ESS_TEST(test_after_violation),
              ESS_TEST(test_deflate))
