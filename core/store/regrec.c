/*
 * The registry log's record codec (see regrec.h for the layout). Decoding
 * reads bytes from the broker, which are untrusted: every length is
 * checked against what is left, every uuid, routing key and id against
 * what the registry accepts, and trailing bytes are refused. Pure: no
 * allocation, no I/O; unit-tested and fuzzed.
 */
#include "store/regrec.h"
#include "ess.h"

#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t left;
} rd_t;

static int rd_bytes(rd_t *r, size_t n, const uint8_t **out)
{
    if (r->left < n)
        return -1;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

static int rd_u8(rd_t *r, uint8_t *v)
{
    const uint8_t *b;
    if (rd_bytes(r, 1, &b))
        return -1;
    *v = b[0];
    return 0;
}

static int rd_u16(rd_t *r, uint16_t *v)
{
    const uint8_t *b;
    if (rd_bytes(r, 2, &b))
        return -1;
    *v = (uint16_t)(b[0] << 8 | b[1]);
    return 0;
}

static int rd_u64(rd_t *r, uint64_t *v)
{
    const uint8_t *b;
    if (rd_bytes(r, 8, &b))
        return -1;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | b[i];
    *v = x;
    return 0;
}

static int rd_i64(rd_t *r, int64_t *v)
{
    uint64_t u;
    if (rd_u64(r, &u))
        return -1;
    *v = (int64_t)u;
    return 0;
}

/* A short string: length byte, then the bytes. */
static int rd_str(rd_t *r, const char **s, size_t *len)
{
    uint8_t n;
    const uint8_t *b;
    if (rd_u8(r, &n) || rd_bytes(r, n, &b))
        return -1;
    *s = (const char *)b;
    *len = n;
    return 0;
}

/* One row body (created: without id; snapshot rows: with it, read by the caller). */
static int rd_row(rd_t *r, ess_es_row_t *row, const char **why)
{
    const uint8_t *u;
    if (rd_bytes(r, ESS_UUID_LEN, &u) || rd_i64(r, &row->created_ms) ||
        rd_str(r, &row->routing_key, &row->routing_key_len)) {
        *why = "truncated row";
        return -1;
    }
    if (!ess_uuid_valid((const char *)u, ESS_UUID_LEN)) {
        *why = "invalid uuid";
        return -1;
    }
    memcpy(row->uuid, u, ESS_UUID_LEN);
    row->uuid[ESS_UUID_LEN] = '\0';
    if (!ess_routing_key_valid(row->routing_key, row->routing_key_len)) {
        *why = "invalid routing key";
        return -1;
    }
    return 0;
}

int ess_regrec_decode(const uint8_t *p, size_t len, ess_regrec_t *out, const char **why)
{
    static const char *dummy;
    if (why == NULL)
        why = &dummy;
    memset(out, 0, sizeof *out);
    rd_t r = {p, len};
    const uint8_t *magic;
    uint8_t version, type;
    if (rd_bytes(&r, 2, &magic) || memcmp(magic, "ER", 2) != 0) {
        *why = "not a registry record";
        return ESS_EPROTO;
    }
    if (rd_u8(&r, &version) || version != ESS_REGREC_VERSION) {
        *why = "unknown record version";
        return ESS_EPROTO;
    }
    if (rd_u8(&r, &type) || rd_str(&r, &out->ref, &out->ref_len)) {
        *why = "truncated header";
        return ESS_EPROTO;
    }
    if (out->ref_len == 0) {
        *why = "empty writer reference";
        return ESS_EPROTO;
    }
    out->type = (ess_regrec_type_t)type;
    switch (type) {
    case ESS_REGREC_CREATED:
        if (rd_row(&r, &out->row, why))
            return ESS_EPROTO;
        break;
    case ESS_REGREC_DELETED:
    case ESS_REGREC_CLAIM:
        if (rd_i64(&r, &out->id) || rd_u64(&r, &out->nonce)) {
            *why = "truncated record";
            return ESS_EPROTO;
        }
        if (out->id < 1) {
            *why = "invalid id";
            return ESS_EPROTO;
        }
        break;
    case ESS_REGREC_BARRIER:
        if (rd_u64(&r, &out->nonce)) {
            *why = "truncated record";
            return ESS_EPROTO;
        }
        break;
    case ESS_REGREC_SNAPSHOT: {
        if (rd_i64(&r, &out->at) || rd_u16(&r, &out->part) || rd_u16(&r, &out->parts) ||
            rd_u16(&r, &out->nrows)) {
            *why = "truncated snapshot";
            return ESS_EPROTO;
        }
        if (out->at < -1 || out->parts == 0 || out->part >= out->parts) {
            *why = "invalid snapshot part";
            return ESS_EPROTO;
        }
        out->rows = r.p;
        for (uint16_t i = 0; i < out->nrows; i++) {
            ess_es_row_t row;
            if (rd_i64(&r, &row.id)) {
                *why = "truncated row";
                return ESS_EPROTO;
            }
            if (row.id < 1) {
                *why = "invalid id";
                return ESS_EPROTO;
            }
            if (rd_row(&r, &row, why))
                return ESS_EPROTO;
        }
        out->rows_len = (size_t)(r.p - out->rows);
        break;
    }
    default: *why = "unknown record type"; return ESS_EPROTO;
    }
    if (r.left != 0) {
        *why = "trailing bytes";
        return ESS_EPROTO;
    }
    return ESS_OK;
}

int ess_regrec_rows(const ess_regrec_t *rec, ess_registry_row_cb cb, void *ud)
{
    rd_t r = {rec->rows, rec->rows_len};
    const char *why;
    for (uint16_t i = 0; i < rec->nrows; i++) {
        ess_es_row_t row;
        if (rd_i64(&r, &row.id) || rd_row(&r, &row, &why))
            return ESS_EPROTO; /* not reached for a decoded record */
        int stop = cb(ud, &row);
        if (stop)
            return stop;
    }
    return ESS_OK;
}

static void put_u8(ess_buf_t *b, uint8_t v)
{
    ess_buf_append(b, &v, 1);
}

static void put_u16(ess_buf_t *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    ess_buf_append(b, x, 2);
}

static void put_u64(ess_buf_t *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        x[i] = (uint8_t)v;
    ess_buf_append(b, x, 8);
}

static void put_str(ess_buf_t *b, const char *s, size_t len)
{
    if (len > 255)
        len = 255;
    put_u8(b, (uint8_t)len);
    ess_buf_append(b, s, len);
}

static void header(ess_buf_t *b, const char *ref, ess_regrec_type_t type)
{
    ess_buf_append(b, "ER", 2);
    put_u8(b, ESS_REGREC_VERSION);
    put_u8(b, (uint8_t)type);
    put_str(b, ref, strlen(ref));
}

static void put_row(ess_buf_t *b, const ess_es_row_t *row)
{
    ess_buf_append(b, row->uuid, ESS_UUID_LEN);
    put_u64(b, (uint64_t)row->created_ms);
    put_str(b, row->routing_key, row->routing_key_len);
}

void ess_regrec_created(ess_buf_t *out, const char *ref, const ess_es_row_t *row)
{
    header(out, ref, ESS_REGREC_CREATED);
    put_row(out, row);
}

void ess_regrec_deleted(ess_buf_t *out, const char *ref, int64_t id, uint64_t nonce)
{
    header(out, ref, ESS_REGREC_DELETED);
    put_u64(out, (uint64_t)id);
    put_u64(out, nonce);
}

void ess_regrec_claim(ess_buf_t *out, const char *ref, int64_t es_id, uint64_t token)
{
    header(out, ref, ESS_REGREC_CLAIM);
    put_u64(out, (uint64_t)es_id);
    put_u64(out, token);
}

void ess_regrec_barrier(ess_buf_t *out, const char *ref, uint64_t nonce)
{
    header(out, ref, ESS_REGREC_BARRIER);
    put_u64(out, nonce);
}

void ess_regrec_snapshot(ess_buf_t *out, const char *ref, int64_t at, uint16_t part, uint16_t parts,
                         uint16_t nrows)
{
    header(out, ref, ESS_REGREC_SNAPSHOT);
    put_u64(out, (uint64_t)at);
    put_u16(out, part);
    put_u16(out, parts);
    put_u16(out, nrows);
}

void ess_regrec_snapshot_row(ess_buf_t *out, const ess_es_row_t *row)
{
    put_u64(out, (uint64_t)row->id);
    put_row(out, row);
}
