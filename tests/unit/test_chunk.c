/*
 * Tests for the Osiris chunk codec: chunks captured from the local RabbitMQ
 * 3.10.8 (simple entries, an uncompressed and a gzip sub-entry batch
 * published over the stream protocol, and a message published over AMQP
 * 0-9-1), plus hand-built chunks for every error path and every truncation.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ess.h"
#include "ess_test.h"
#include "mq/chunk.h"

/* Captured Deliver payloads (after the subscription id), as hex. */
static const char *const CAP_SIMPLE = /* "hello" "world" {"a":1} at offsets 0..2 */
    "5000000300000003000001a21fda1bbc00000000000000010000000000000000eb1040380000001d"
    "00000000000000000000000568656c6c6f00000005776f726c64000000077b2261223a317d";
static const char *const CAP_BATCH = /* one uncompressed sub-batch: b1 b22 b333, offsets 3..5 */
    "5000000100000003000001a21fda1d2800000000000000010000000000000003d566288a00000020"
    "00000000000000008000030000001500000015000000026231000000036232320000000462333333";
static const char *const CAP_GZIP = /* one gzip sub-batch: g1 g22 g333 g4444, offsets 6..9 */
    "5000000100000004000001a21fda1e9500000000000000010000000000000006f668a99600000038"
    "00000000000000009000040000001e0000002d1f8b0800be330a6b02ff636060604a37646060604e"
    "373202522ce9c6c6c6409a35dd040800cff1c2071e000000";
static const char *const CAP_AMQP091 = /* published by ess-publish (AMQP 0-9-1), trailer 43 */
    "5000000100000001000001a21fdd982700000000000000010000000000000000c2e36b8c0000012c"
    "0000002b0000000000000128005372c14c06a30d782d726f7574696e672d6b6579a106645f636170"
    "32a30a782d65786368616e6765a10d6576656e742d73747265616d73a315782d62617369632d6465"
    "6c69766572792d6d6f64655002005373c01f0d404040404040a3106170706c69636174696f6e2f6a"
    "736f6e404040404040005374c13004a10c6d6573736167655f74797065a1184d65726368616e7450"
    "726f63657373696e67436861726765a1037365715500005375a0797b226d6573736167655f747970"
    "65223a224d65726368616e7450726f63657373696e67436861726765222c22736571223a302c2274"
    "696d657374616d70223a22323032362d31312d32385430313a35353a34352e3832395a222c226d65"
    "726368616e745f6b696e64223a22444154415f4d414e41474552227d";

static uint8_t *unhex(const char *h, size_t *len)
{
    size_t n = strlen(h) / 2;
    uint8_t *b = ess_xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (uint8_t)v;
    }
    *len = n;
    return b;
}

/* Records collected by the callback, concatenated as "offset:body;". */
typedef struct {
    char out[4096];
    size_t used;
    int calls;
    int stop_after; /* return 42 after this many calls; 0 = never */
} sink_t;

static int collect(void *ud, uint64_t offset, const uint8_t *data, size_t len)
{
    sink_t *s = ud;
    s->calls++;
    int n = snprintf(s->out + s->used, sizeof s->out - s->used, "%llu:%.*s;",
                     (unsigned long long)offset, (int)len, (const char *)data);
    if (n > 0 && (size_t)n < sizeof s->out - s->used)
        s->used += (size_t)n;
    return s->stop_after && s->calls >= s->stop_after ? 42 : 0;
}

static int walk(const uint8_t *p, size_t len, sink_t *s)
{
    memset(s, 0, sizeof *s);
    return ess_chunk_each_record(p, len, collect, s);
}

/* A chunk builder: header fields plus a data section assembled by hand. */
typedef struct {
    uint8_t b[1 << 16];
    size_t len;
} buf_t;

static void put8(buf_t *b, uint8_t v)
{
    b->b[b->len++] = v;
}
static void put16(buf_t *b, uint16_t v)
{
    put8(b, (uint8_t)(v >> 8));
    put8(b, (uint8_t)v);
}
static void put32(buf_t *b, uint32_t v)
{
    put16(b, (uint16_t)(v >> 16));
    put16(b, (uint16_t)v);
}
static void put64(buf_t *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}
static void putn(buf_t *b, const void *p, size_t n)
{
    memcpy(b->b + b->len, p, n);
    b->len += n;
}

static void simple(buf_t *d, const char *s)
{
    put32(d, (uint32_t)strlen(s));
    putn(d, s, strlen(s));
}

/* A sub-batch entry of the given records, compressed with gzip when gz. */
static void batch(buf_t *d, int gz, const char *const *recs, int n)
{
    buf_t raw = {.len = 0};
    for (int i = 0; i < n; i++)
        simple(&raw, recs[i]);
    put8(d, (uint8_t)(0x80 | (gz ? 0x10 : 0)));
    put16(d, (uint16_t)n);
    put32(d, (uint32_t)raw.len);
    if (!gz) {
        put32(d, (uint32_t)raw.len);
        putn(d, raw.b, raw.len);
        return;
    }
    uint8_t out[4096];
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ESS_ASSERT(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = raw.b;
    zs.avail_in = (uInt)raw.len;
    zs.next_out = out;
    zs.avail_out = sizeof out;
    ESS_ASSERT(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    put32(d, (uint32_t)zs.total_out);
    putn(d, out, zs.total_out);
    deflateEnd(&zs);
}

static void chunk(buf_t *c, uint8_t type, uint16_t entries, uint32_t records, uint64_t first,
                  uint8_t bloom, const buf_t *data)
{
    c->len = 0;
    put8(c, 0x50);
    put8(c, type);
    put16(c, entries);
    put32(c, records);
    put64(c, 1700000000123ull);
    put64(c, 7);
    put64(c, first);
    put32(c, (uint32_t)crc32(0L, data->b, (uInt)data->len));
    put32(c, (uint32_t)data->len);
    put32(c, 0);
    put32(c, (uint32_t)bloom << 24);
    for (int i = 0; i < bloom; i++)
        put8(c, 0xee);
    putn(c, data->b, data->len);
}

static void test_header_captured(void)
{
    size_t len;
    uint8_t *p = unhex(CAP_GZIP, &len);
    ess_chunk_header_t h;
    CHECK_EQ_INT(ess_chunk_parse_header(p, len, &h), ESS_OK);
    CHECK_EQ_INT(h.magic_version, 0x50);
    CHECK_EQ_INT(h.chunk_type, ESS_CHUNK_TYPE_USER);
    CHECK_EQ_INT(h.num_entries, 1);
    CHECK_EQ_INT(h.num_records, 4);
    CHECK_EQ_INT(h.timestamp_ms, 1795830718101LL);
    CHECK_EQ_INT(h.epoch, 1);
    CHECK_EQ_INT(h.first_offset, 6);
    CHECK_EQ_INT(h.crc, 0xf668a996u);
    CHECK_EQ_INT(h.data_length, 0x38);
    CHECK_EQ_INT(h.trailer_length, 0);
    CHECK_EQ_INT(h.bloom_size, 0);
    uint64_t total;
    CHECK_EQ_INT(ess_chunk_total_size(p, len, &total), ESS_OK);
    CHECK_EQ_INT(total, len);
    CHECK_EQ_INT(ess_chunk_parse_header(p, ESS_CHUNK_HEADER_SIZE - 1, &h), ESS_ETRUNC);
    CHECK_EQ_INT(ess_chunk_parse_header(NULL, 0, &h), ESS_ETRUNC);
    p[0] = 0x40;
    CHECK_EQ_INT(ess_chunk_parse_header(p, len, &h), ESS_EPROTO);
    CHECK_EQ_INT(ess_chunk_each_record(p, len, collect, NULL), ESS_EPROTO);
    free(p);
}

static void test_captured_records(void)
{
    static const struct {
        const char *hex;
        const char *want;
    } cases[] = {
        {CAP_SIMPLE, "0:hello;1:world;2:{\"a\":1};"},
        {CAP_BATCH, "3:b1;4:b22;5:b333;"},
        {CAP_GZIP, "6:g1;7:g22;8:g333;9:g4444;"},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(cases); i++) {
        size_t len;
        uint8_t *p = unhex(cases[i].hex, &len);
        sink_t s;
        CHECK_EQ_INT(walk(p, len, &s), ESS_OK);
        CHECK_EQ_STR(s.out, cases[i].want);
        CHECK_EQ_INT(ess_chunk_verify_crc(p, len), ESS_OK);
        p[len - 1] ^= 1;
        CHECK_EQ_INT(ess_chunk_verify_crc(p, len), ESS_ECORRUPT);
        free(p);
    }
}

static void test_captured_amqp091(void)
{
    size_t len;
    uint8_t *p = unhex(CAP_AMQP091, &len);
    ess_chunk_header_t h;
    sink_t s;
    CHECK_EQ_INT(ess_chunk_parse_header(p, len, &h), ESS_OK);
    /* The broker announces a 43-byte trailer but does not deliver it. */
    CHECK_EQ_INT(h.trailer_length, 43);
    CHECK_EQ_INT(len, ESS_CHUNK_HEADER_SIZE + h.data_length);
    CHECK_EQ_INT(walk(p, len, &s), ESS_OK);
    CHECK_EQ_INT(s.calls, 1);
    CHECK(strncmp(s.out, "0:", 2) == 0);
    CHECK_EQ_INT(ess_chunk_verify_crc(p, len), ESS_OK);
    free(p);
}

/* Every proper prefix of every captured chunk is an error and delivers nothing. */
static void test_every_truncation(void)
{
    const char *const caps[] = {CAP_SIMPLE, CAP_BATCH, CAP_GZIP, CAP_AMQP091};
    for (size_t i = 0; i < ESS_ARRAY_SIZE(caps); i++) {
        size_t len;
        uint8_t *p = unhex(caps[i], &len);
        int bad = 0;
        for (size_t cut = 0; cut < len; cut++) {
            /* A copy of exactly cut bytes, so ASan sees any read past it. */
            uint8_t *q = ess_xmalloc(cut ? cut : 1);
            memcpy(q, p, cut);
            sink_t s;
            int rc = walk(q, cut, &s);
            if (rc != ESS_ETRUNC || s.calls != 0)
                bad++;
            if (ess_chunk_verify_crc(q, cut) != ESS_ETRUNC)
                bad++;
            free(q);
        }
        CHECK_EQ_INT(bad, 0);
        free(p);
    }
}

static void test_built_mixed(void)
{
    static buf_t d, c;
    static const char *const plain[] = {"p1", "p22"};
    static const char *const gz[] = {"z1", "", "z333"};
    d.len = 0;
    simple(&d, "s0");
    batch(&d, 0, plain, 2);
    batch(&d, 1, gz, 3);
    simple(&d, "");
    chunk(&c, ESS_CHUNK_TYPE_USER, 4, 7, 1000, 0, &d);
    sink_t s;
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_OK);
    CHECK_EQ_STR(s.out, "1000:s0;1001:p1;1002:p22;1003:z1;1004:;1005:z333;1006:;");
    CHECK_EQ_INT(ess_chunk_verify_crc(c.b, c.len), ESS_OK);

    /* Bytes after the data (a trailer) are ignored. */
    c.b[c.len] = 0xff;
    CHECK_EQ_INT(walk(c.b, c.len + 1, &s), ESS_OK);
    CHECK_EQ_INT(s.calls, 7);

    /* The callback can stop the walk with its own value. */
    memset(&s, 0, sizeof s);
    s.stop_after = 4;
    CHECK_EQ_INT(ess_chunk_each_record(c.b, c.len, collect, &s), 42);
    CHECK_EQ_INT(s.calls, 4);
}

static void test_built_bloom_and_empty(void)
{
    static buf_t d, c;
    d.len = 0;
    simple(&d, "after-bloom");
    chunk(&c, ESS_CHUNK_TYPE_USER, 1, 1, 5, 16, &d);
    sink_t s;
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_OK);
    CHECK_EQ_STR(s.out, "5:after-bloom;");
    uint64_t total;
    CHECK_EQ_INT(ess_chunk_total_size(c.b, c.len, &total), ESS_OK);
    CHECK_EQ_INT(total, ESS_CHUNK_HEADER_SIZE + 16 + d.len);
    CHECK_EQ_INT(walk(c.b, c.len - 1, &s), ESS_ETRUNC);

    d.len = 0;
    chunk(&c, ESS_CHUNK_TYPE_USER, 0, 0, 5, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_OK);
    CHECK_EQ_INT(s.calls, 0);

    /* Empty sub-batches, plain and gzip, are valid and hold no records. */
    d.len = 0;
    batch(&d, 0, NULL, 0);
    batch(&d, 1, NULL, 0);
    simple(&d, "last");
    chunk(&c, ESS_CHUNK_TYPE_USER, 3, 1, 8, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_OK);
    CHECK_EQ_STR(s.out, "8:last;");
}

static void test_tracking_chunk_has_no_records(void)
{
    static buf_t d, c;
    d.len = 0;
    simple(&d, "\x01\x03"
               "abc");
    chunk(&c, ESS_CHUNK_TYPE_TRACKING_SNAPSHOT, 1, 1, 9, 0, &d);
    sink_t s;
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_OK);
    CHECK_EQ_INT(s.calls, 0);
}

static void test_bad_framing(void)
{
    static buf_t d, c;
    static const char *const two[] = {"a", "b"};
    sink_t s;

    /* Record count disagrees with the header. */
    d.len = 0;
    simple(&d, "x");
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
    CHECK_EQ_INT(s.calls, 0);

    /* More entries announced than present. */
    chunk(&c, 0, 2, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);

    /* Data left over after the announced entries. */
    simple(&d, "y");
    chunk(&c, 0, 1, 1, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);

    /* A simple entry longer than the data section. */
    d.len = 0;
    put32(&d, 100);
    putn(&d, "abc", 3);
    chunk(&c, 0, 1, 1, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);

    /* A 31-bit size with the high bits set is not a huge read. */
    d.len = 0;
    put32(&d, 0x7fffffffu);
    chunk(&c, 0, 1, 1, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);

    /* Uncompressed sub-batch whose two lengths differ. */
    d.len = 0;
    batch(&d, 0, two, 2);
    d.b[3 + 3] ^= 1; /* low byte of the uncompressed length */
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);

    /* Sub-batch whose inner record overruns it. */
    d.len = 0;
    batch(&d, 0, two, 2);
    d.b[11 + 3] = 9; /* first inner record claims 9 bytes */
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
    CHECK_EQ_INT(s.calls, 0);

    /* Sub-batch with fewer inner records than it announces. */
    d.len = 0;
    batch(&d, 0, two, 2);
    d.b[2] = 3;
    chunk(&c, 0, 1, 3, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);

    /* Snappy (2), lz4 (3), zstd (4) and reserved codes are unsupported. */
    for (uint8_t comp = 2; comp < 8; comp++) {
        d.len = 0;
        batch(&d, 0, two, 2);
        d.b[0] = (uint8_t)(0x80 | comp << 4);
        chunk(&c, 0, 1, 2, 0, 0, &d);
        CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
    }
    /* A sub-batch header cut short. */
    d.len = 0;
    put8(&d, 0x80);
    put16(&d, 1);
    chunk(&c, 0, 1, 1, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
}

static void test_bad_gzip(void)
{
    static buf_t d, c;
    static const char *const recs[] = {"hello gzip", "second"};
    sink_t s;

    /* Declared uncompressed length above the limit. */
    d.len = 0;
    batch(&d, 1, recs, 2);
    uint32_t big = ESS_CHUNK_MAX_UNCOMPRESSED + 1;
    d.b[3] = (uint8_t)(big >> 24);
    d.b[4] = (uint8_t)(big >> 16);
    d.b[5] = (uint8_t)(big >> 8);
    d.b[6] = (uint8_t)big;
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_ETOOBIG);

    /* Declared length differs from what inflates. */
    d.len = 0;
    batch(&d, 1, recs, 2);
    d.b[6] ^= 1;
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
    CHECK_EQ_INT(s.calls, 0);

    /* Corrupt deflate data (the gzip CRC catches what inflate does not). */
    d.len = 0;
    batch(&d, 1, recs, 2);
    d.b[11 + 12] ^= 0x55;
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
    CHECK_EQ_INT(s.calls, 0);

    /* Not gzip at all. */
    d.len = 0;
    batch(&d, 0, recs, 2);
    d.b[0] = 0x90;
    chunk(&c, 0, 1, 2, 0, 0, &d);
    CHECK_EQ_INT(walk(c.b, c.len, &s), ESS_EPROTO);
}

ESS_TEST_MAIN(ESS_TEST(test_header_captured), ESS_TEST(test_captured_records),
              ESS_TEST(test_captured_amqp091), ESS_TEST(test_every_truncation),
              ESS_TEST(test_built_mixed), ESS_TEST(test_built_bloom_and_empty),
              ESS_TEST(test_tracking_chunk_has_no_records), ESS_TEST(test_bad_framing),
              ESS_TEST(test_bad_gzip))
