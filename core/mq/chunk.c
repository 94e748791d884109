/*
 * Osiris chunk codec: header parsing, CRC check and the record walk over
 * simple entries and sub-entry batches (none or gzip). It owns only the
 * transient decompression buffer of one call; it does no I/O and does not
 * interpret record bytes (AMQP 1.0 decoding is amqp10.c's job). Every
 * length read from the input is checked against the bytes that remain
 * before it is used, with arithmetic that cannot overflow.
 */
#include "mq/chunk.h"

#include <string.h>
#include <zlib.h>

#include "ess.h"

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

int ess_chunk_parse_header(const uint8_t *p, size_t len, ess_chunk_header_t *out)
{
    if (p == NULL || len < ESS_CHUNK_HEADER_SIZE)
        return ESS_ETRUNC;
    /* Only the magic nibble is checked: osiris has written version 0 and
     * its documentation names 1; both share this layout. */
    if ((p[0] >> 4) != 0x5 || (p[0] & 0x0f) > 1)
        return ESS_EPROTO;
    out->magic_version = p[0];
    out->chunk_type = p[1];
    out->num_entries = rd16(p + 2);
    out->num_records = rd32(p + 4);
    out->timestamp_ms = (int64_t)rd64(p + 8);
    out->epoch = rd64(p + 16);
    out->first_offset = rd64(p + 24);
    out->crc = rd32(p + 32);
    out->data_length = rd32(p + 36);
    out->trailer_length = rd32(p + 40);
    out->bloom_size = p[44];
    return ESS_OK;
}

int ess_chunk_total_size(const uint8_t *p, size_t len, uint64_t *total)
{
    ess_chunk_header_t h;
    int rc = ess_chunk_parse_header(p, len, &h);
    if (rc != ESS_OK)
        return rc;
    /* Each term fits in 32 bits, so the 64-bit sum cannot overflow. */
    *total = (uint64_t)ESS_CHUNK_HEADER_SIZE + h.bloom_size + h.data_length;
    return ESS_OK;
}

/* Locate the data section; fails unless header, bloom filter and data are present.
 * The trailer is not needed (and a Deliver frame does not carry it). */
static int data_section(const uint8_t *p, size_t len, ess_chunk_header_t *h, const uint8_t **data)
{
    uint64_t total;
    int rc = ess_chunk_parse_header(p, len, h);
    if (rc != ESS_OK)
        return rc;
    total = (uint64_t)ESS_CHUNK_HEADER_SIZE + h->bloom_size + h->data_length;
    if ((uint64_t)len < total)
        return ESS_ETRUNC;
    *data = p + ESS_CHUNK_HEADER_SIZE + h->bloom_size;
    return ESS_OK;
}

int ess_chunk_verify_crc(const uint8_t *p, size_t len)
{
    ess_chunk_header_t h;
    const uint8_t *data;
    int rc = data_section(p, len, &h, &data);
    if (rc != ESS_OK)
        return rc;
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, data, (uInt)h.data_length);
    return (uint32_t)crc == h.crc ? ESS_OK : ESS_ECORRUPT;
}

/* One entry of the data section, as framed (before any decompression). */
typedef struct {
    int sub_batch;
    int compression;
    uint32_t num_records;
    uint32_t uncompressed_len;
    const uint8_t *body;
    uint32_t body_len;
    size_t size; /* bytes the entry occupies in the data section */
} entry_t;

static int read_entry(const uint8_t *p, size_t avail, entry_t *e)
{
    if (avail < 1)
        return ESS_EPROTO;
    if ((p[0] & 0x80) == 0) {
        if (avail < 4)
            return ESS_EPROTO;
        e->sub_batch = 0;
        e->compression = ESS_CHUNK_COMPRESSION_NONE;
        e->num_records = 1;
        e->body_len = rd32(p) & 0x7fffffffu;
        e->uncompressed_len = e->body_len;
        if (e->body_len > avail - 4)
            return ESS_EPROTO;
        e->body = p + 4;
        e->size = 4 + (size_t)e->body_len;
        return ESS_OK;
    }
    if (avail < 11)
        return ESS_EPROTO;
    e->sub_batch = 1;
    e->compression = (p[0] >> 4) & 0x07;
    e->num_records = rd16(p + 1);
    e->uncompressed_len = rd32(p + 3);
    e->body_len = rd32(p + 7);
    if (e->body_len > avail - 11)
        return ESS_EPROTO;
    e->body = p + 11;
    e->size = 11 + (size_t)e->body_len;
    if (e->compression != ESS_CHUNK_COMPRESSION_NONE &&
        e->compression != ESS_CHUNK_COMPRESSION_GZIP)
        return ESS_EPROTO;
    if (e->compression == ESS_CHUNK_COMPRESSION_NONE && e->uncompressed_len != e->body_len)
        return ESS_EPROTO;
    if (e->uncompressed_len > ESS_CHUNK_MAX_UNCOMPRESSED)
        return ESS_ETOOBIG;
    return ESS_OK;
}

/* Framing pass: every entry fits, counts agree with the header. */
static int validate(const ess_chunk_header_t *h, const uint8_t *data)
{
    size_t pos = 0;
    uint64_t records = 0;
    for (uint32_t i = 0; i < h->num_entries; i++) {
        entry_t e;
        int rc = read_entry(data + pos, h->data_length - pos, &e);
        if (rc != ESS_OK)
            return rc;
        pos += e.size;
        records += e.num_records;
    }
    if (pos != h->data_length || records != h->num_records)
        return ESS_EPROTO;
    return ESS_OK;
}

/* Records of a sub-batch body: each is a uint32 size and that many bytes. */
static int walk_batch(const uint8_t *b, size_t len, uint32_t n, uint64_t *offset,
                      ess_chunk_record_cb cb, void *ud)
{
    size_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - pos < 4)
            return ESS_EPROTO;
        uint32_t sz = rd32(b + pos);
        pos += 4;
        if (sz > len - pos)
            return ESS_EPROTO;
        int rc = cb(ud, (*offset)++, b + pos, sz);
        if (rc != 0)
            return rc;
        pos += sz;
    }
    return pos == len ? ESS_OK : ESS_EPROTO;
}

/* Inflate a gzip member into out, which must end up exactly out_len long. */
static int gunzip(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
    z_stream zs;
    uint8_t none;
    if (out == NULL)
        out = &none; /* an empty batch: zlib refuses a NULL output pointer */
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return ESS_EPROTO;
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)in_len;
    zs.next_out = out;
    zs.avail_out = (uInt)out_len;
    int zrc = inflate(&zs, Z_FINISH);
    int rc = (zrc == Z_STREAM_END && zs.total_out == out_len) ? ESS_OK : ESS_EPROTO;
    inflateEnd(&zs);
    return rc;
}

int ess_chunk_each_record(const uint8_t *p, size_t len, ess_chunk_record_cb cb, void *ud)
{
    ess_chunk_header_t h;
    const uint8_t *data;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = data_section(p, len, &h, &data);
    if (rc != ESS_OK)
        return rc;
    if (h.chunk_type != ESS_CHUNK_TYPE_USER)
        return ESS_OK;
    rc = validate(&h, data);
    if (rc != ESS_OK)
        return rc;

    uint64_t offset = h.first_offset;
    size_t pos = 0;
    for (uint32_t i = 0; i < h.num_entries; i++) {
        entry_t e;
        rc = read_entry(data + pos, h.data_length - pos, &e);
        if (rc != ESS_OK)
            goto fail;
        pos += e.size;
        if (!e.sub_batch) {
            rc = cb(ud, offset++, e.body, e.body_len);
        } else if (e.compression == ESS_CHUNK_COMPRESSION_NONE) {
            rc = walk_batch(e.body, e.body_len, e.num_records, &offset, cb, ud);
        } else {
            if (e.uncompressed_len > buf_cap) {
                free(buf);
                buf = ess_xmalloc(e.uncompressed_len);
                buf_cap = e.uncompressed_len;
            }
            rc = gunzip(e.body, e.body_len, buf, e.uncompressed_len);
            if (rc == ESS_OK)
                rc = walk_batch(buf, e.uncompressed_len, e.num_records, &offset, cb, ud);
        }
        if (rc != 0)
            goto fail;
    }
    rc = ESS_OK;
fail:
    free(buf);
    return rc;
}
