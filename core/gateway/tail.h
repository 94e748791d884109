/*
 * The console's Tail of one live session: the last ESS_TAIL_ENTRIES
 * enriched frames exactly as the client receives them, beside the raw
 * bodies they came from. A ring allocated only while an operator watches
 * (gateway/console.c owns the watch and its expiry); the session holds the
 * pointer and checks it once per message, so an unwatched session pays one
 * NULL test. Each text is cut at ESS_TAIL_TEXT bytes (flagged).
 */
#ifndef ESS_GATEWAY_TAIL_H
#define ESS_GATEWAY_TAIL_H

#include <stddef.h>
#include <stdint.h>

#include "script/hooks.h"
#include "util/buf.h"

#define ESS_TAIL_ENTRIES 50
#define ESS_TAIL_TEXT 2048

typedef struct ess_tail_s ess_tail_t;

/** A new, empty ring (the watch starts). */
ess_tail_t *ess_tail_new(void);

/** Free the ring; NULL is allowed. */
void ess_tail_free(ess_tail_t *t);

/**
 * Run the enrich hook like ess_hooks_enrich, recording the raw body and the
 * emitted frame (or that the hook skipped the message) in t.
 */
int ess_tail_enrich(ess_tail_t *t, ess_vm_t *vm, ess_hook_es_t *es, const ess_hook_msg_t *msg,
                    ess_hook_emit_fn emit, void *emit_ud);

/** Append the entries after sequence number `after` as a JSON array, oldest first. */
void ess_tail_json(const ess_tail_t *t, uint64_t after, ess_buf_t *out);

/** Number of messages recorded since the ring was made (the last sequence number). */
uint64_t ess_tail_seq(const ess_tail_t *t);

/** Append s (len bytes) to out as a JSON string; invalid UTF-8 bytes become U+FFFD. */
void ess_tail_json_str(ess_buf_t *out, const char *s, size_t len);

#endif
