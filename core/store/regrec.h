/*
 * The records of the shared registry log (registry.backend: stream): a
 * compact binary encoding, pure and allocation-free on decode, so that the
 * bytes read from the broker (untrusted: anyone with access to the stream
 * can write to it) are checked field by field before anything is applied.
 *
 * Layout (integers big-endian), after the AMQP 1.0 data section that wraps
 * each record in the stream:
 *
 *     'E' 'R' version(1) type(1) ref_len(1) ref(ref_len)   the writer's reference
 *     created:  uuid(22) created_ms(i64) rk_len(1) rk(rk_len)
 *     deleted:  id(i64) nonce(u64)
 *     snapshot: at(i64) part(u16) parts(u16) nrows(u16) then nrows rows:
 *               id(i64) uuid(22) created_ms(i64) rk_len(1) rk(rk_len)
 *     claim:    es_id(i64) token(u64)
 *     barrier:  nonce(u64)
 *
 * Nothing may follow the last field. A uuid must have the registry's shape
 * (ess_uuid_valid), a routing key be valid (ess_routing_key_valid), ids >= 1.
 */
#ifndef ESS_STORE_REGREC_H
#define ESS_STORE_REGREC_H

#include <stddef.h>
#include <stdint.h>

#include "store/registry.h"
#include "util/buf.h"

#define ESS_REGREC_VERSION 1
#define ESS_REGREC_REF_MAX 255
/* Rows per snapshot part: a part stays far below a frame (255-byte keys: 64 KiB). */
#define ESS_REGREC_SNAPSHOT_ROWS 200

typedef enum {
    ESS_REGREC_CREATED = 1,
    ESS_REGREC_DELETED = 2,
    ESS_REGREC_SNAPSHOT = 3,
    ESS_REGREC_CLAIM = 4,
    ESS_REGREC_BARRIER = 5,
} ess_regrec_type_t;

/** A decoded record; every pointer borrows the input bytes. */
typedef struct {
    ess_regrec_type_t type;
    const char *ref; /* the writer's reference (not NUL-terminated) */
    size_t ref_len;
    ess_es_row_t row; /* created: uuid, created_ms, routing key (id 0) */
    int64_t id;       /* deleted: the row; claim: the event stream */
    uint64_t nonce;   /* deleted, barrier: the writer's nonce; claim: the session token */
    int64_t at;       /* snapshot: the writer's applied offset */
    uint16_t part, parts, nrows;
    const uint8_t *rows; /* snapshot: the encoded rows, walked by ess_regrec_rows */
    size_t rows_len;
} ess_regrec_t;

/** Decode p[0..len). ESS_OK, or ESS_EPROTO with a static reason in *why. */
int ess_regrec_decode(const uint8_t *p, size_t len, ess_regrec_t *out, const char **why);

/** Call cb for each row of a decoded snapshot (already checked by decode). Non-zero stops. */
int ess_regrec_rows(const ess_regrec_t *rec, ess_registry_row_cb cb, void *ud);

/* Encoders append one record to out. */
void ess_regrec_created(ess_buf_t *out, const char *ref, const ess_es_row_t *row);
void ess_regrec_deleted(ess_buf_t *out, const char *ref, int64_t id, uint64_t nonce);
void ess_regrec_claim(ess_buf_t *out, const char *ref, int64_t es_id, uint64_t token);
void ess_regrec_barrier(ess_buf_t *out, const char *ref, uint64_t nonce);
/** A snapshot part header; append its nrows rows with ess_regrec_snapshot_row. */
void ess_regrec_snapshot(ess_buf_t *out, const char *ref, int64_t at, uint16_t part, uint16_t parts,
                         uint16_t nrows);
void ess_regrec_snapshot_row(ess_buf_t *out, const ess_es_row_t *row);

#endif
