/*
 * The delivery step (gateway/delivery.h): a record becomes frame bytes in
 * a session's output blocks. Owns the output blocks and their free list;
 * knows the WebSocket frame header (RFC 6455 5.2), POISON, AMQP body
 * joining, protobuf rendering and the enrich hook's contract (one string,
 * or nil to skip), and nothing of sockets, brokers or Lua. Also owns the
 * shared logs of fan-out (reference-counted blocks read through cursors).
 */
#include "gateway/delivery.h"
#include "http/deflate.h"
#include "ess.h"
#include "proto/protobuf.h"
#include "util/buf.h"
#include "util/utf8.h"

#include <stdlib.h>
#include <string.h>

/* Freed standard blocks are kept for reuse (LIFO, so cache-warm), at most
 * FREE_MAX of them (4 MiB); larger ones go back to malloc. */
#define FREE_MAX 64
static ess_out_block_t *free_blocks;
static int free_count;

static ess_out_block_t *block_new(size_t need)
{
    ess_out_block_t *b;
    if (need <= ESS_OUT_BLOCK && free_blocks != NULL) {
        b = free_blocks;
        free_blocks = b->next;
        free_count--;
    } else {
        size_t cap = need <= ESS_OUT_BLOCK ? ESS_OUT_BLOCK : need;
        b = ess_xmalloc(sizeof *b + ESS_OUT_HEADROOM + cap);
        b->cap = cap;
    }
    b->next = NULL;
    b->refs = 0;
    b->used = 0;
    b->payload = 0;
    b->frames = 0;
    b->has_offset = 0;
    b->last_offset = 0;
    return b;
}

void ess_out_block_free(ess_out_block_t *b)
{
    if (b->cap != ESS_OUT_BLOCK || free_count >= FREE_MAX) {
        free(b);
        return;
    }
    b->next = free_blocks;
    free_blocks = b;
    free_count++;
}

/* The header length of an unmasked final frame of len payload bytes. */
static size_t header_len(size_t len)
{
    return len < 126 ? 2 : len < 65536 ? 4 : 10;
}

static void put_len(uint8_t *h, size_t len)
{
    if (len < 126) {
        h[1] = (uint8_t)len;
    } else if (len < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
}

static void put_header(uint8_t *h, int binary, size_t len)
{
    h[0] = binary ? 0x82 : 0x81;
    put_len(h, len);
}

/* Copy len bytes and tell whether they were all ASCII, in one pass. */
static int copy_ascii(uint8_t *dst, const uint8_t *src, size_t len)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        memcpy(dst + i, &w, 8);
        acc |= w;
    }
    uint8_t tail = 0;
    for (; i < len; i++) {
        dst[i] = src[i];
        tail |= src[i];
    }
    return ((acc & 0x8080808080808080ull) | (tail & 0x80)) == 0;
}

/* Reserve room for a frame of len payload bytes: the block and where its
 * header starts. */
static ess_out_block_t *room_for(ess_outq_t *q, size_t framed)
{
    ess_out_block_t *b = q->tail;
    if (b == NULL || b->cap - b->used < framed) {
        b = block_new(framed);
        if (q->tail)
            q->tail->next = b;
        else
            q->head = b;
        q->tail = b;
    }
    return b;
}

static void block_unref(ess_out_block_t *b)
{
    while (b != NULL && --b->refs == 0) {
        ess_out_block_t *next = b->next;
        ess_out_block_free(b);
        b = next; /* b held a link to next */
    }
}

/* Room in a log's tail: a full tail is succeeded by a new block, which
 * the old one's link and the log hold; the log lets go of the old one. */
static ess_out_block_t *log_room(ess_outlog_t *log, size_t framed)
{
    ess_out_block_t *t = log->tail;
    if (t->cap - t->used >= framed)
        return t;
    ess_out_block_t *b = block_new(framed);
    b->refs = 2;
    t->next = b;
    log->tail = b;
    block_unref(t);
    return b;
}

/* Where frames go: a session's queue or a shared log. */
typedef struct {
    ess_outq_t *q;
    ess_outlog_t *log;
} sink_t;

/* Room for a frame of framed bytes in the sink's current block. */
static ess_out_block_t *sink_room(const sink_t *k, size_t framed)
{
    return k->q ? room_for(k->q, framed) : log_room(k->log, framed);
}

/* Count a frame of hl + plen bytes just written at the end of b. */
static void sink_commit(const sink_t *k, ess_out_block_t *b, size_t hl, size_t plen, int has_offset,
                        uint64_t offset)
{
    b->used += hl + plen;
    b->payload += plen;
    b->frames++;
    if (has_offset) {
        b->has_offset = 1;
        b->last_offset = offset;
    }
    if (k->q) {
        k->q->payload += plen;
    } else {
        k->log->bytes += hl + plen;
        k->log->payload += plen;
    }
}

/* The loop thread's compressor: no context takeover resets it for every
 * message, so one serves every session and group. */
static ess_deflate_t zs;
static uint8_t *zbuf;
static size_t zcap;

/* Frame data compressed (RSV1 set), as permessage-deflate sends it; 0 when
 * it could not be compressed (the caller frames it plain). */
static int frame_deflated(const sink_t *k, const uint8_t *data, size_t len, int known_text,
                          int has_offset, uint64_t offset)
{
    if (!zs.ready && ess_deflate_init(&zs, 1) != 0)
        return 0;
    size_t bound = ess_deflate_bound(&zs, len);
    if (bound > zcap) {
        zbuf = ess_xrealloc(zbuf, bound);
        zcap = bound;
    }
    size_t clen = ess_deflate_message(&zs, data, len, zbuf);
    if (clen == 0)
        return 0;
    int text = known_text >= 0 ? known_text : ess_utf8_valid(data, len);
    size_t hl = header_len(clen);
    ess_out_block_t *b = sink_room(k, hl + clen);
    uint8_t *h = b->data + ESS_OUT_HEADROOM + b->used;
    memcpy(h + hl, zbuf, clen);
    h[0] = (uint8_t)((text ? 0x81 : 0x82) | 0x40); /* RSV1: compressed */
    put_len(h, clen);
    sink_commit(k, b, hl, clen, has_offset, offset);
    return 1;
}

/* Frame data; known_text is 1 or 0 when the caller already knows whether
 * data is valid UTF-8, -1 when not. */
static void frame(const sink_t *k, const uint8_t *data, size_t len, int known_text, int has_offset,
                  uint64_t offset)
{
    if ((k->q ? k->q->deflate : k->log->deflate) && len >= ESS_DEFLATE_MIN &&
        frame_deflated(k, data, len, known_text, has_offset, offset))
        return;
    size_t hl = header_len(len);
    ess_out_block_t *b = sink_room(k, hl + len);
    uint8_t *h = b->data + ESS_OUT_HEADROOM + b->used;
    int text = copy_ascii(h + hl, data, len);
    if (!text)
        text = known_text >= 0 ? known_text : ess_utf8_valid(h + hl, len);
    put_header(h, !text, len);
    sink_commit(k, b, hl, len, has_offset, offset);
}

ess_out_block_t *ess_outq_pop(ess_outq_t *q)
{
    ess_out_block_t *b = q->head;
    if (b == NULL)
        return NULL;
    q->head = b->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->payload -= b->payload;
    b->next = NULL;
    return b;
}

void ess_outq_clear(ess_outq_t *q)
{
    ess_out_block_t *b;
    while ((b = ess_outq_pop(q)) != NULL)
        ess_out_block_free(b);
    q->payload = 0;
}

typedef struct {
    sink_t k;
    int emitted;
} emit_ctx_t;

/* The hook's result: framed at once, with the offset the message carries.
 * A result identical to the hook's input reuses the input's UTF-8 check. */
static void emit(void *ud, const ess_hook_msg_t *m, const uint8_t *data, size_t len)
{
    emit_ctx_t *ec = ud;
    int known =
        len == m->len && (data == m->body || memcmp(data, m->body, len) == 0) ? m->is_text : -1;
    frame(&ec->k, data, len, known, 1, m->offset);
    ec->emitted = 1;
}

static ess_delivery_result_t run(const ess_source_msg_t *rec, ess_delivery_enrich_fn enrich,
                                 void *ctx, const sink_t *k)
{
    if (rec->len == 6 && memcmp(rec->body, "POISON", 6) == 0)
        return ESS_DELIVERY_POISON;
    if (!rec->has_offset || enrich == NULL) {
        /* Classic queues: raw, no offsets, no hook (SPEC.md, issue 4). */
        frame(k, rec->body, rec->len, -1, rec->has_offset, rec->offset);
        return ESS_DELIVERY_QUEUED;
    }
    const uint8_t *body = rec->body;
    size_t len = rec->len;
    uint8_t *joined = NULL;
    ess_buf_t pb = {0};
    const char *pt = NULL;
    size_t ptl = 0;
    if (rec->amqp && rec->amqp->n_data > 1) {
        /* Several data sections make one body: nothing is dropped. */
        joined = ess_amqp10_body_copy(rec->record, rec->record_len, rec->amqp, &len);
        if (joined)
            body = joined;
        else
            len = rec->len;
    }
    const uint8_t *raw = body;
    size_t raw_len = len;
    /* Binary protobuf of a known type becomes its one-line text form. */
    if (rec->amqp && ess_protobuf_type_of(rec->amqp, &pt, &ptl) == ESS_OK &&
        ess_protobuf_to_text(pt, ptl, body, len, &pb) == ESS_OK) {
        body = (const uint8_t *)pb.data;
        len = pb.len;
    } else {
        pt = NULL;
    }
    ess_hook_msg_t hm = {
        .body = body,
        .len = len,
        .offset = rec->offset,
        .timestamp_ms = rec->timestamp_ms,
        .is_text = ess_utf8_valid(body, len),
        .app_props = rec->amqp ? rec->amqp->app_props : NULL,
        .app_props_len = rec->amqp ? rec->amqp->app_props_len : 0,
        .raw = pt ? raw : NULL,
        .raw_len = pt ? raw_len : 0,
        .protobuf_type = pt,
        .protobuf_type_len = ptl,
    };
    emit_ctx_t ec = {*k, 0};
    enrich(ctx, &hm, emit, &ec);
    ess_buf_free(&pb);
    free(joined);
    return ec.emitted ? ESS_DELIVERY_QUEUED : ESS_DELIVERY_SKIPPED;
}

ess_delivery_result_t ess_delivery_run(const ess_source_msg_t *rec, ess_delivery_enrich_fn enrich,
                                       void *ctx, ess_outq_t *q)
{
    sink_t k = {q, NULL};
    return run(rec, enrich, ctx, &k);
}

ess_delivery_result_t ess_delivery_run_log(const ess_source_msg_t *rec,
                                           ess_delivery_enrich_fn enrich, void *ctx,
                                           ess_outlog_t *log)
{
    sink_t k = {NULL, log};
    return run(rec, enrich, ctx, &k);
}

/* ---- Shared logs and their cursors ---- */

void ess_outlog_init(ess_outlog_t *log)
{
    log->tail = block_new(ESS_OUT_BLOCK);
    log->tail->refs = 1;
    log->bytes = 0;
    log->payload = 0;
    log->deflate = 0;
}

void ess_outlog_release(ess_outlog_t *log)
{
    block_unref(log->tail);
    log->tail = NULL;
}

void ess_outcur_open(ess_outcur_t *c, ess_outlog_t *log)
{
    c->b = log->tail;
    c->b->refs++;
    c->pos = c->b->used;
    c->payload = c->b->payload;
    c->frames = c->b->frames;
    c->bytes_abs = log->bytes;
    c->payload_abs = log->payload;
}

void ess_outcur_close(ess_outcur_t *c)
{
    block_unref(c->b);
    c->b = NULL;
}

int ess_outcur_pending(const ess_outcur_t *c)
{
    return c->b != NULL && (c->pos < c->b->used || c->b->next != NULL);
}

/* Move c past a block it has read whole onto the next one. */
static void cur_step(ess_outcur_t *c)
{
    while (c->pos == c->b->used && c->b->next != NULL) {
        ess_out_block_t *old = c->b;
        c->b = old->next;
        c->b->refs++;
        c->pos = 0;
        c->payload = 0;
        c->frames = 0;
        block_unref(old);
    }
}

int ess_outcur_peek(ess_outcur_t *c, const uint8_t **data, size_t *len)
{
    if (c->b == NULL)
        return 0;
    cur_step(c);
    if (c->pos == c->b->used)
        return 0;
    *data = ess_out_block_bytes(c->b) + c->pos;
    *len = c->b->used - c->pos;
    return 1;
}

void ess_outcur_advance(ess_outcur_t *c, uint32_t *frames, size_t *payload, int *has_offset,
                        uint64_t *last_offset)
{
    ess_out_block_t *b = c->b;
    *frames = b->frames - c->frames;
    *payload = b->payload - c->payload;
    *has_offset = b->has_offset;
    *last_offset = b->last_offset;
    c->bytes_abs += b->used - c->pos;
    c->payload_abs += *payload;
    c->pos = b->used;
    c->payload = b->payload;
    c->frames = b->frames;
}

void ess_outcur_copy_rest(ess_outcur_t *c, ess_outq_t *q)
{
    const uint8_t *data;
    size_t len;
    while (ess_outcur_peek(c, &data, &len)) {
        ess_out_block_t *b = room_for(q, len);
        memcpy(b->data + ESS_OUT_HEADROOM + b->used, data, len);
        b->used += len;
        uint32_t frames;
        size_t payload;
        int has_offset;
        uint64_t last;
        ess_outcur_advance(c, &frames, &payload, &has_offset, &last);
        b->frames += frames;
        b->payload += payload;
        if (has_offset) {
            b->has_offset = 1;
            b->last_offset = last;
        }
        q->payload += payload;
    }
    ess_outcur_close(c);
}
