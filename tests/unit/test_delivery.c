/* Unit tests for gateway/delivery: records in, WebSocket frame bytes out,
 * with a stub enrich hook (no lws, no broker, no Lua). */
#include "ess_test.h"
#include "gateway/delivery.h"

#include <stdlib.h>

/* The stub hook: records what it saw and answers per mode. */
static struct {
    int calls;
    int is_text;
    uint64_t offset;
    int mode; /* 0: append "|o", 1: return nil, 2: return the body unchanged */
} hook;

static int stub_enrich(void *ctx, const ess_hook_msg_t *m, ess_hook_emit_fn emit, void *ud)
{
    (void)ctx;
    hook.calls++;
    hook.is_text = m->is_text;
    hook.offset = m->offset;
    if (hook.mode == 1)
        return 0;
    if (hook.mode == 2) {
        emit(ud, m, m->body, m->len);
        return 0;
    }
    uint8_t *out = malloc(m->len + 2);
    memcpy(out, m->body, m->len);
    memcpy(out + m->len, "|o", 2);
    emit(ud, m, out, m->len + 2);
    free(out);
    return 0;
}

static ess_source_msg_t rec(const char *body, size_t len, int has_offset, uint64_t offset)
{
    ess_source_msg_t m = {.body = (const uint8_t *)body,
                          .len = len,
                          .has_offset = has_offset,
                          .offset = offset,
                          .timestamp_ms = 1000};
    return m;
}

/* The first frame of q's head block: opcode, payload and its length. */
static const uint8_t *first_frame(const ess_outq_t *q, int *opcode, size_t *len)
{
    const uint8_t *p = ess_out_block_bytes(q->head);
    *opcode = p[0];
    size_t n = p[1] & 0x7f, h = 2;
    if (n == 126) {
        n = ((size_t)p[2] << 8) | p[3];
        h = 4;
    } else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | p[2 + i];
        h = 10;
    }
    *len = n;
    return p + h;
}

static void test_poison(void)
{
    ess_outq_t q = {0};
    hook.calls = 0;
    ess_source_msg_t r = rec("POISON", 6, 1, 7);
    CHECK_EQ_INT(ess_delivery_run(&r, stub_enrich, NULL, &q), ESS_DELIVERY_POISON);
    CHECK(q.head == NULL);
    CHECK_EQ_INT(hook.calls, 0);
    r = rec("POISON", 6, 0, 0); /* classic too */
    CHECK_EQ_INT(ess_delivery_run(&r, stub_enrich, NULL, &q), ESS_DELIVERY_POISON);
    r = rec("POISONED", 8, 0, 0);
    CHECK_EQ_INT(ess_delivery_run(&r, stub_enrich, NULL, &q), ESS_DELIVERY_QUEUED);
    ess_outq_clear(&q);
}

static void test_classic_raw(void)
{
    ess_outq_t q = {0};
    hook.calls = 0;
    hook.mode = 0;
    ess_source_msg_t r = rec("{\"a\":1}", 7, 0, 0);
    CHECK_EQ_INT(ess_delivery_run(&r, stub_enrich, NULL, &q), ESS_DELIVERY_QUEUED);
    CHECK_EQ_INT(hook.calls, 0); /* no hook without offsets */
    int op;
    size_t n;
    const uint8_t *p = first_frame(&q, &op, &n);
    CHECK_EQ_INT(op, 0x81);
    CHECK_EQ_INT(n, 7);
    CHECK(memcmp(p, "{\"a\":1}", 7) == 0);
    CHECK_EQ_INT(q.head->has_offset, 0);
    CHECK_EQ_INT(q.payload, 7);
    ess_outq_clear(&q);

    r = rec("\xff\xfe", 2, 0, 0); /* not UTF-8: binary */
    ess_delivery_run(&r, stub_enrich, NULL, &q);
    first_frame(&q, &op, &n);
    CHECK_EQ_INT(op, 0x82);
    ess_outq_clear(&q);

    r = rec("caf\xc3\xa9", 5, 0, 0); /* UTF-8, not ASCII: text */
    ess_delivery_run(&r, stub_enrich, NULL, &q);
    first_frame(&q, &op, &n);
    CHECK_EQ_INT(op, 0x81);
    ess_outq_clear(&q);
    CHECK_EQ_INT(q.payload, 0);
}

static void test_enrich_result_and_offset(void)
{
    ess_outq_t q = {0};
    hook.calls = 0;
    hook.mode = 0;
    ess_source_msg_t r = rec("hello", 5, 1, 42);
    CHECK_EQ_INT(ess_delivery_run(&r, stub_enrich, NULL, &q), ESS_DELIVERY_QUEUED);
    CHECK_EQ_INT(hook.calls, 1);
    CHECK_EQ_INT(hook.is_text, 1);
    CHECK_EQ_INT(hook.offset, 42);
    int op;
    size_t n;
    const uint8_t *p = first_frame(&q, &op, &n);
    CHECK_EQ_INT(op, 0x81);
    CHECK_EQ_INT(n, 7);
    CHECK(memcmp(p, "hello|o", 7) == 0);
    CHECK_EQ_INT(q.head->has_offset, 1);
    CHECK_EQ_INT(q.head->last_offset, 42);
    CHECK_EQ_INT(q.head->frames, 1);
    CHECK_EQ_INT(q.head->payload, 7);
    /* A second message: same block, the block's last offset moves on. */
    r = rec("x", 1, 1, 43);
    ess_delivery_run(&r, stub_enrich, NULL, &q);
    CHECK(q.head == q.tail);
    CHECK_EQ_INT(q.head->frames, 2);
    CHECK_EQ_INT(q.head->last_offset, 43);
    CHECK_EQ_INT(q.head->used, 2 + 7 + 2 + 3);
    CHECK(memcmp(ess_out_block_bytes(q.head) + 9, "\x81\x03x|o", 5) == 0);
    ess_outq_clear(&q);

    /* The hook says nil: nothing queued. */
    hook.mode = 1;
    r = rec("skip me", 7, 1, 44);
    CHECK_EQ_INT(ess_delivery_run(&r, stub_enrich, NULL, &q), ESS_DELIVERY_SKIPPED);
    CHECK(q.head == NULL);

    /* The body returned unchanged keeps its UTF-8 verdict: binary stays binary. */
    hook.mode = 2;
    r = rec("\x80\x81", 2, 1, 45);
    ess_delivery_run(&r, stub_enrich, NULL, &q);
    CHECK_EQ_INT(hook.is_text, 0);
    first_frame(&q, &op, &n);
    CHECK_EQ_INT(op, 0x82);
    ess_outq_clear(&q);
    /* An enrichment that breaks UTF-8 makes a binary frame. */
    hook.mode = 0;
    r = rec("ab\xc3", 3, 1, 46);
    ess_delivery_run(&r, stub_enrich, NULL, &q);
    first_frame(&q, &op, &n);
    CHECK_EQ_INT(op, 0x82);
    ess_outq_clear(&q);
}

static void test_header_lengths(void)
{
    static const size_t sizes[] = {0, 125, 126, 65535, 65536, 200000};
    static const size_t heads[] = {2, 2, 4, 4, 10, 10};
    char *big = malloc(200000);
    memset(big, 'a', 200000);
    hook.mode = 2;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ess_outq_t q = {0};
        ess_source_msg_t r = rec(big, sizes[i], 1, i);
        ess_delivery_run(&r, stub_enrich, NULL, &q);
        int op;
        size_t n;
        const uint8_t *p = first_frame(&q, &op, &n);
        CHECK_EQ_INT(n, sizes[i]);
        CHECK_EQ_INT(p - ess_out_block_bytes(q.head), heads[i]);
        CHECK_EQ_INT(q.head->used, heads[i] + sizes[i]);
        CHECK(q.head == q.tail);
        ess_outq_clear(&q);
    }
    free(big);
}

static void test_blocks(void)
{
    ess_outq_t q = {0};
    char body[1000];
    memset(body, 'b', sizeof body);
    hook.mode = 2;
    for (int i = 0; i < 200; i++) {
        ess_source_msg_t r = rec(body, sizeof body, 1, (uint64_t)i);
        ess_delivery_run(&r, stub_enrich, NULL, &q);
    }
    CHECK_EQ_INT(q.payload, 200 * 1000);
    int blocks = 0, frames = 0;
    uint64_t last = 0;
    ess_out_block_t *b;
    while ((b = ess_outq_pop(&q)) != NULL) {
        CHECK(b->used <= ESS_OUT_BLOCK);
        CHECK_EQ_INT(b->used, b->frames * (4 + 1000));
        frames += (int)b->frames;
        last = b->last_offset;
        blocks++;
        ess_out_block_free(b);
    }
    CHECK_EQ_INT(frames, 200);
    CHECK_EQ_INT(last, 199);
    CHECK_EQ_INT(blocks, (200 + 64) / 65); /* 65 frames of 1004 bytes fit in 64 KiB */
    CHECK_EQ_INT(q.payload, 0);
    CHECK(q.head == NULL && q.tail == NULL);
}

/* Read everything c has pending into out (appending); frames and last offset counted. */
static size_t drain(ess_outcur_t *c, uint8_t *out, size_t at, int *frames, uint64_t *last)
{
    const uint8_t *d;
    size_t len;
    while (ess_outcur_peek(c, &d, &len)) {
        memcpy(out + at, d, len);
        at += len;
        uint32_t fr;
        size_t pl;
        int ho;
        uint64_t lo;
        ess_outcur_advance(c, &fr, &pl, &ho, &lo);
        *frames += (int)fr;
        if (ho)
            *last = lo;
    }
    return at;
}

/* The shared log: frames appended once, read by cursors opened at
 * different times and reading at different paces, each seeing exactly the
 * bytes appended after it opened; a cursor that must flush copies the rest
 * into a queue. Blocks are freed when the last reader and the log let go
 * (checked under the sanitizers' leak check). */
static void test_shared_log(void)
{
    enum { N = 300, FRAME = 4 + 1000 };
    ess_outlog_t log;
    ess_outlog_init(&log);
    ess_outcur_t a, b, c, d;
    ess_outcur_open(&a, &log);
    ess_outcur_open(&b, &log);
    CHECK(!ess_outcur_pending(&a));
    static uint8_t ra[N * FRAME], rb[N * FRAME], rc[N * FRAME];
    size_t na = 0, nb = 0, nc = 0;
    int fa = 0, fb = 0, fc = 0;
    uint64_t la = 0, lb = 0, lc = 0;
    char body[1000];
    hook.mode = 2;
    for (int i = 0; i < N; i++) {
        memset(body, 'a' + i % 26, sizeof body);
        ess_source_msg_t r = rec(body, sizeof body, 1, (uint64_t)i);
        CHECK_EQ_INT(ess_delivery_run_log(&r, stub_enrich, NULL, &log), ESS_DELIVERY_QUEUED);
        if (i == 99) {
            ess_outcur_open(&c, &log); /* reads from frame 100 on */
            ess_outcur_open(&d, &log);
        }
        if (i % 7 == 0)
            na = drain(&a, ra, na, &fa, &la); /* a keeps up, b reads nothing yet */
    }
    CHECK_EQ_INT(log.bytes, (uint64_t)N * FRAME);
    CHECK_EQ_INT(log.payload, (uint64_t)N * 1000);
    CHECK(ess_outcur_pending(&b));
    na = drain(&a, ra, na, &fa, &la);
    nb = drain(&b, rb, nb, &fb, &lb);
    nc = drain(&c, rc, nc, &fc, &lc);
    CHECK_EQ_INT(na, (size_t)N * FRAME);
    CHECK_EQ_INT(nb, (size_t)N * FRAME);
    CHECK(memcmp(ra, rb, na) == 0);
    CHECK_EQ_INT(fa, N);
    CHECK_EQ_INT(fb, N);
    CHECK_EQ_INT(la, N - 1);
    CHECK_EQ_INT(lb, N - 1);
    CHECK_EQ_INT(nc, (size_t)(N - 100) * FRAME);
    CHECK(memcmp(rc, ra + 100 * FRAME, nc) == 0);
    CHECK_EQ_INT(fc, N - 100);
    CHECK_EQ_INT(a.payload_abs, log.payload);
    CHECK(rb[0] == 0x81 && rb[4] == 'a' && rb[FRAME + 4] == 'b');
    /* d flushes what it has not sent into its own queue. */
    ess_outq_t q = {0};
    ess_outcur_copy_rest(&d, &q);
    CHECK(d.b == NULL);
    CHECK_EQ_INT(q.payload, (size_t)(N - 100) * 1000);
    size_t nq = 0;
    int fq = 0;
    uint64_t lq = 0;
    ess_out_block_t *blk;
    while ((blk = ess_outq_pop(&q)) != NULL) {
        CHECK(memcmp(ess_out_block_bytes(blk), rc + nq, blk->used) == 0);
        nq += blk->used;
        fq += (int)blk->frames;
        lq = blk->last_offset;
        ess_out_block_free(blk);
    }
    CHECK_EQ_INT(nq, nc);
    CHECK_EQ_INT(fq, N - 100);
    CHECK_EQ_INT(lq, N - 1);
    /* The log lets go first, the readers after: all blocks are freed. */
    ess_outlog_release(&log);
    ess_outcur_close(&a);
    ess_outcur_close(&b);
    ess_outcur_close(&c);
    ess_outcur_close(&d); /* already closed: no-op */
}

ESS_TEST_MAIN(ESS_TEST(test_poison), ESS_TEST(test_classic_raw),
              ESS_TEST(test_enrich_result_and_offset), ESS_TEST(test_header_lengths),
              ESS_TEST(test_blocks), ESS_TEST(test_shared_log))
