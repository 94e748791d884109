/*
 * The delivery step: one broker record in, WebSocket frame bytes out,
 * appended to a session's output queue. Pure: no lws, no broker, no Lua
 * (the enrich hook is a function pointer), so it is unit-tested alone
 * (tests/unit/test_delivery.c).
 *
 * The output queue is a list of blocks (Redis's reply blocks): frames,
 * header and payload, are appended back to back into blocks of
 * ESS_OUT_BLOCK bytes with ESS_OUT_HEADROOM bytes free in front, so the
 * transport hands a whole block to the socket with no further copy.
 * Owns the blocks (and a small free list of them); the caller owns the queue.
 */
#ifndef ESS_DELIVERY_H
#define ESS_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "mq/source.h"
#include "script/hooks.h"

/* Bytes free before a block's data: at least lws's LWS_PRE (checked in http/ws.c). */
#define ESS_OUT_HEADROOM 16
/* A block's usual room; a larger frame gets a block of its own size. */
#define ESS_OUT_BLOCK (64 * 1024)

typedef struct ess_out_block_s {
    struct ess_out_block_s *next;
    uint32_t refs;  /* shared log blocks only: holders (see ess_outlog_t); 0 in a queue */
    size_t cap;     /* room after the headroom */
    size_t used;    /* framed bytes (headers and payloads) */
    size_t payload; /* payload bytes: what the budget counts */
    uint32_t frames;
    int has_offset;       /* last_offset is set */
    uint64_t last_offset; /* offset of the last frame that has one */
    uint8_t data[];       /* ESS_OUT_HEADROOM bytes, then the frames */
} ess_out_block_t;

typedef struct {
    ess_out_block_t *head, *tail;
    size_t payload; /* payload bytes queued (compressed size when deflate) */
    int deflate;    /* frames permessage-deflate compressed (http/deflate.h) */
} ess_outq_t;

/** The frames of b, ready for the socket. */
static inline const uint8_t *ess_out_block_bytes(const ess_out_block_t *b)
{
    return b->data + ESS_OUT_HEADROOM;
}

/** Detach the head block (the caller frees it with ess_out_block_free). NULL when empty. */
ess_out_block_t *ess_outq_pop(ess_outq_t *q);

/** Return a block (to the free list, or to malloc). */
void ess_out_block_free(ess_out_block_t *b);

/** Drop everything queued. */
void ess_outq_clear(ess_outq_t *q);

/*
 * A shared output log (fan-out): the frames of one broker subscription,
 * appended once and read by many sessions, each through its own cursor.
 * Blocks are reference-counted: a block is held by the log while it is the
 * tail, by its predecessor's link while that one lives, and by each cursor
 * positioned in it; the last release frees it and releases its successor.
 * So a block lives exactly as long as some reader can still reach it, and
 * a frame's bytes exist once whatever the number of readers. The log
 * writes only past a block's `used`, and readers hand on only bytes before
 * it, so nothing a reader holds ever changes.
 */
typedef struct {
    ess_out_block_t *tail; /* frames are appended here; never NULL while open */
    uint64_t bytes;        /* framed bytes appended, in total */
    uint64_t payload;      /* payload bytes appended, in total */
    int deflate;           /* frames permessage-deflate compressed; set after init */
} ess_outlog_t;

/** One reader of a log: what it has handed on so far. */
typedef struct {
    ess_out_block_t *b;   /* the block it reads (held), or NULL: closed */
    size_t pos;           /* bytes of b handed on */
    size_t payload;       /* payload bytes of b handed on */
    uint32_t frames;      /* frames of b handed on */
    uint64_t bytes_abs;   /* the log's bytes total at pos */
    uint64_t payload_abs; /* the log's payload total at pos */
} ess_outcur_t;

/** Open an empty log. */
void ess_outlog_init(ess_outlog_t *log);

/** Drop the log's own hold: cursors keep what they can still read. */
void ess_outlog_release(ess_outlog_t *log);

/** Open c at the log's end: it reads what is appended from now on. */
void ess_outcur_open(ess_outcur_t *c, ess_outlog_t *log);

/** Release c's hold (no-op when closed). */
void ess_outcur_close(ess_outcur_t *c);

/** 1 when c has bytes to hand on. */
int ess_outcur_pending(const ess_outcur_t *c);

/**
 * The next bytes to hand on (whole frames, at most one block's worth):
 * 1 with *data and *len, or 0 when nothing is pending. Stays pending
 * until ess_outcur_advance.
 */
int ess_outcur_peek(ess_outcur_t *c, const uint8_t **data, size_t *len);

/**
 * The bytes of the last peek were handed on: count them. Fills the frames
 * and payload bytes they held and, when *has_offset, the last offset.
 */
void ess_outcur_advance(ess_outcur_t *c, uint32_t *frames, size_t *payload, int *has_offset,
                        uint64_t *last_offset);

/** Copy what c has not handed on to the end of q (a reader that must
 * flush, then stop following the log); c is closed afterwards. */
void ess_outcur_copy_rest(ess_outcur_t *c, ess_outq_t *q);

/** The enrich hook as the delivery step sees it (ess_hooks_enrich in essd). */
typedef int (*ess_delivery_enrich_fn)(void *ctx, const ess_hook_msg_t *msg, ess_hook_emit_fn emit,
                                      void *emit_ud);

typedef enum {
    ESS_DELIVERY_QUEUED = 0, /* one frame appended */
    ESS_DELIVERY_SKIPPED,    /* the hook returned nil */
    ESS_DELIVERY_POISON,     /* the body is exactly POISON: close, send nothing */
} ess_delivery_result_t;

/**
 * Turn one record into a frame on q. POISON is recognised first. A record
 * without an offset (classic queue) is framed unchanged. Otherwise several
 * AMQP data sections are joined, binary protobuf of a known type becomes
 * its text form (the original bytes go to the hook as msg.raw), and the
 * enrich hook's result is framed: text when it is valid UTF-8, binary
 * otherwise. The frame is written into the block in one copy that also
 * checks for ASCII, so an ASCII result is not scanned again.
 */
ess_delivery_result_t ess_delivery_run(const ess_source_msg_t *rec, ess_delivery_enrich_fn enrich,
                                       void *ctx, ess_outq_t *q);

/** As ess_delivery_run, appending the frame to a shared log instead. */
ess_delivery_result_t ess_delivery_run_log(const ess_source_msg_t *rec,
                                           ess_delivery_enrich_fn enrich, void *ctx,
                                           ess_outlog_t *log);

#endif
