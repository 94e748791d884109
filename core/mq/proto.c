/*
 * Stream protocol codec. Owns the wire format of every frame the client
 * sends and every frame the broker sends it: size prefix, key/version
 * header, strings (int16 length), bytes (int32 length) and arrays (int32
 * count). It does not own the Osiris chunk layout (mq/chunk.c) nor any
 * socket or state machine (mq/stream_client.c). Every read is bounds
 * checked through the small reader below, so any byte sequence either
 * decodes or yields an error code.
 */
#include "mq/proto.h"

#include <string.h>

#include "ess.h"

/* ---- output buffer ---- */

void ess_proto_buf_free(ess_proto_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void ess_proto_buf_consume(ess_proto_buf_t *b, size_t n)
{
    ESS_ASSERT(n <= b->len);
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static void reserve(ess_proto_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    b->data = ess_xrealloc(b->data, cap);
    b->cap = cap;
}

void ess_proto_buf_append(ess_proto_buf_t *b, const void *p, size_t n)
{
    reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u8(ess_proto_buf_t *b, uint8_t v)
{
    ess_proto_buf_append(b, &v, 1);
}

static void put_u16(ess_proto_buf_t *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    ess_proto_buf_append(b, x, 2);
}

static void put_u32(ess_proto_buf_t *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    ess_proto_buf_append(b, x, 4);
}

static void put_u64(ess_proto_buf_t *b, uint64_t v)
{
    put_u32(b, (uint32_t)(v >> 32));
    put_u32(b, (uint32_t)v);
}

static int str_ok(const char *s)
{
    return s != NULL && strlen(s) <= INT16_MAX;
}

static void put_str(ess_proto_buf_t *b, const char *s)
{
    if (s == NULL) {
        put_u16(b, 0xffff);
        return;
    }
    size_t n = strlen(s);
    put_u16(b, (uint16_t)n);
    ess_proto_buf_append(b, s, n);
}

/* Starts a frame: reserves the size prefix and writes key and version. */
static size_t begin(ess_proto_buf_t *b, uint16_t key, uint16_t version)
{
    size_t at = b->len;
    put_u32(b, 0);
    put_u16(b, key);
    put_u16(b, version);
    return at;
}

static int finish(ess_proto_buf_t *b, size_t at)
{
    size_t n = b->len - at - 4;
    if (n > UINT32_MAX) {
        b->len = at;
        return ESS_ETOOBIG;
    }
    uint8_t *p = b->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    return ESS_OK;
}

static int kvs_ok(const ess_proto_kv_t *kv, size_t n)
{
    if (n > INT32_MAX || (n && kv == NULL))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!str_ok(kv[i].key) || !str_ok(kv[i].value))
            return 0;
    return 1;
}

static void put_kvs(ess_proto_buf_t *b, const ess_proto_kv_t *kv, size_t n)
{
    put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_str(b, kv[i].key);
        put_str(b, kv[i].value);
    }
}

int ess_proto_enc_peer_properties(ess_proto_buf_t *b, uint32_t corr, const ess_proto_kv_t *props,
                                  size_t n)
{
    if (!kvs_ok(props, n))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_PEER_PROPERTIES, 1);
    put_u32(b, corr);
    put_kvs(b, props, n);
    return finish(b, at);
}

int ess_proto_enc_sasl_handshake(ess_proto_buf_t *b, uint32_t corr)
{
    size_t at = begin(b, ESS_PROTO_SASL_HANDSHAKE, 1);
    put_u32(b, corr);
    return finish(b, at);
}

int ess_proto_enc_sasl_plain(ess_proto_buf_t *b, uint32_t corr, const char *user, const char *pass)
{
    if (user == NULL || pass == NULL)
        return ESS_EINVAL;
    size_t ul = strlen(user), pl = strlen(pass);
    if (ul > 65535 || pl > 65535)
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_SASL_AUTHENTICATE, 1);
    put_u32(b, corr);
    put_str(b, "PLAIN");
    put_u32(b, (uint32_t)(ul + pl + 2));
    put_u8(b, 0);
    ess_proto_buf_append(b, user, ul);
    put_u8(b, 0);
    ess_proto_buf_append(b, pass, pl);
    return finish(b, at);
}

int ess_proto_enc_tune(ess_proto_buf_t *b, uint32_t frame_max, uint32_t heartbeat_s)
{
    size_t at = begin(b, ESS_PROTO_TUNE, 1);
    put_u32(b, frame_max);
    put_u32(b, heartbeat_s);
    return finish(b, at);
}

int ess_proto_enc_open(ess_proto_buf_t *b, uint32_t corr, const char *vhost)
{
    if (!str_ok(vhost))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_OPEN, 1);
    put_u32(b, corr);
    put_str(b, vhost);
    return finish(b, at);
}

int ess_proto_enc_heartbeat(ess_proto_buf_t *b)
{
    size_t at = begin(b, ESS_PROTO_HEARTBEAT, 1);
    return finish(b, at);
}

int ess_proto_enc_close(ess_proto_buf_t *b, uint32_t corr, uint16_t code, const char *reason)
{
    if (!str_ok(reason))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_CLOSE, 1);
    put_u32(b, corr);
    put_u16(b, code);
    put_str(b, reason);
    return finish(b, at);
}

int ess_proto_enc_close_response(ess_proto_buf_t *b, uint32_t corr, uint16_t code)
{
    size_t at = begin(b, ESS_PROTO_CLOSE | ESS_PROTO_RESPONSE, 1);
    put_u32(b, corr);
    put_u16(b, code);
    return finish(b, at);
}

int ess_proto_enc_metadata(ess_proto_buf_t *b, uint32_t corr, const char *const *streams, size_t n)
{
    if (n > INT32_MAX || (n && streams == NULL))
        return ESS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!str_ok(streams[i]))
            return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_METADATA, 1);
    put_u32(b, corr);
    put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        put_str(b, streams[i]);
    return finish(b, at);
}

int ess_proto_enc_create(ess_proto_buf_t *b, uint32_t corr, const char *stream,
                         const ess_proto_kv_t *args, size_t n)
{
    if (!str_ok(stream) || !kvs_ok(args, n))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_CREATE, 1);
    put_u32(b, corr);
    put_str(b, stream);
    put_kvs(b, args, n);
    return finish(b, at);
}

int ess_proto_enc_delete(ess_proto_buf_t *b, uint32_t corr, const char *stream)
{
    if (!str_ok(stream))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_DELETE, 1);
    put_u32(b, corr);
    put_str(b, stream);
    return finish(b, at);
}

int ess_proto_enc_stream_stats(ess_proto_buf_t *b, uint32_t corr, const char *stream)
{
    if (!str_ok(stream))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_STREAM_STATS, 1);
    put_u32(b, corr);
    put_str(b, stream);
    return finish(b, at);
}

int ess_proto_enc_subscribe(ess_proto_buf_t *b, uint32_t corr, uint8_t sub_id, const char *stream,
                            const ess_proto_offset_t *off, uint16_t credit,
                            const ess_proto_kv_t *props, size_t n)
{
    if (!str_ok(stream) || off == NULL || !kvs_ok(props, n))
        return ESS_EINVAL;
    if (off->type < ESS_PROTO_OFFSET_FIRST || off->type > ESS_PROTO_OFFSET_TIMESTAMP)
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_SUBSCRIBE, 1);
    put_u32(b, corr);
    put_u8(b, sub_id);
    put_str(b, stream);
    put_u16(b, off->type);
    if (off->type == ESS_PROTO_OFFSET_OFFSET)
        put_u64(b, off->offset);
    else if (off->type == ESS_PROTO_OFFSET_TIMESTAMP)
        put_u64(b, (uint64_t)off->timestamp_ms);
    put_u16(b, credit);
    /* An empty property list is left out entirely, as the reference client does. */
    if (n)
        put_kvs(b, props, n);
    return finish(b, at);
}

int ess_proto_enc_credit(ess_proto_buf_t *b, uint8_t sub_id, uint16_t credit)
{
    size_t at = begin(b, ESS_PROTO_CREDIT, 1);
    put_u8(b, sub_id);
    put_u16(b, credit);
    return finish(b, at);
}

int ess_proto_enc_unsubscribe(ess_proto_buf_t *b, uint32_t corr, uint8_t sub_id)
{
    size_t at = begin(b, ESS_PROTO_UNSUBSCRIBE, 1);
    put_u32(b, corr);
    put_u8(b, sub_id);
    return finish(b, at);
}

int ess_proto_enc_query_offset(ess_proto_buf_t *b, uint32_t corr, const char *ref,
                               const char *stream)
{
    if (!str_ok(ref) || !str_ok(stream))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_QUERY_OFFSET, 1);
    put_u32(b, corr);
    put_str(b, ref);
    put_str(b, stream);
    return finish(b, at);
}

int ess_proto_enc_query_publisher_seq(ess_proto_buf_t *b, uint32_t corr, const char *ref,
                                      const char *stream)
{
    if (!str_ok(ref) || !str_ok(stream))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_QUERY_PUBLISHER_SEQ, 1);
    put_u32(b, corr);
    put_str(b, ref);
    put_str(b, stream);
    return finish(b, at);
}

int ess_proto_enc_store_offset(ess_proto_buf_t *b, const char *ref, const char *stream,
                               uint64_t offset)
{
    if (!str_ok(ref) || !str_ok(stream))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_STORE_OFFSET, 1);
    put_str(b, ref);
    put_str(b, stream);
    put_u64(b, offset);
    return finish(b, at);
}

int ess_proto_enc_declare_publisher(ess_proto_buf_t *b, uint32_t corr, uint8_t pub_id,
                                    const char *ref, const char *stream)
{
    if ((ref != NULL && !str_ok(ref)) || !str_ok(stream))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_DECLARE_PUBLISHER, 1);
    put_u32(b, corr);
    put_u8(b, pub_id);
    put_str(b, ref ? ref : ""); /* the broker rejects a null reference */
    put_str(b, stream);
    return finish(b, at);
}

int ess_proto_enc_delete_publisher(ess_proto_buf_t *b, uint32_t corr, uint8_t pub_id)
{
    size_t at = begin(b, ESS_PROTO_DELETE_PUBLISHER, 1);
    put_u32(b, corr);
    put_u8(b, pub_id);
    return finish(b, at);
}

size_t ess_proto_publish_size(size_t n, size_t total)
{
    return 4 + 2 + 2 + 1 + 4 + n * (8 + 4) + total;
}

int ess_proto_enc_publish(ess_proto_buf_t *b, uint8_t pub_id, uint64_t first_id,
                          const uint8_t *const *msgs, const size_t *lens, size_t n)
{
    if (n == 0 || n > INT32_MAX || msgs == NULL || lens == NULL)
        return ESS_EINVAL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > INT32_MAX || (lens[i] && msgs[i] == NULL))
            return ESS_EINVAL;
        total += lens[i];
    }
    reserve(b, ess_proto_publish_size(n, total));
    size_t at = begin(b, ESS_PROTO_PUBLISH, 1);
    put_u8(b, pub_id);
    put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_u64(b, first_id + i);
        put_u32(b, (uint32_t)lens[i]);
        ess_proto_buf_append(b, msgs[i], lens[i]);
    }
    return finish(b, at);
}

int ess_proto_enc_exchange_versions(ess_proto_buf_t *b, uint32_t corr, const uint16_t *triples,
                                    size_t n)
{
    if (n > 1000 || (n && triples == NULL))
        return ESS_EINVAL;
    size_t at = begin(b, ESS_PROTO_EXCHANGE_VERSIONS, 1);
    put_u32(b, corr);
    put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < 3 * n; i++)
        put_u16(b, triples[i]);
    return finish(b, at);
}

/* ---- decoding ---- */

int ess_proto_split(const uint8_t *buf, size_t len, uint32_t frame_max, size_t *frame_len)
{
    if (len < 4) {
        *frame_len = 4 - len;
        return ESS_ETRUNC;
    }
    uint32_t size =
        (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    if (frame_max && (uint64_t)size + 4 > frame_max)
        return ESS_ETOOBIG;
    if (size < 4)
        return ESS_EPROTO;
    if (len - 4 < size) {
        *frame_len = size - (len - 4);
        return ESS_ETRUNC;
    }
    *frame_len = (size_t)size + 4;
    return ESS_OK;
}

typedef struct {
    const uint8_t *p;
    size_t left;
    int err;
} rd_t;

static const uint8_t *take(rd_t *r, size_t n)
{
    if (r->err || r->left < n) {
        if (!r->err)
            r->err = ESS_ETRUNC;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t rd_u8(rd_t *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t rd_u16(rd_t *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static uint32_t rd_u32(rd_t *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

static uint64_t rd_u64(rd_t *r)
{
    uint64_t hi = rd_u32(r);
    return hi << 32 | rd_u32(r);
}

static ess_proto_str_t rd_str(rd_t *r)
{
    ess_proto_str_t s = {NULL, 0};
    int16_t n = (int16_t)rd_u16(r);
    if (r->err)
        return s;
    if (n == -1)
        return s;
    if (n < 0) {
        r->err = ESS_EPROTO;
        return s;
    }
    const uint8_t *p = take(r, (size_t)n);
    if (p) {
        s.p = (const char *)p;
        s.len = (size_t)n;
    }
    return s;
}

static ess_proto_str_t rd_bytes(rd_t *r)
{
    ess_proto_str_t s = {NULL, 0};
    int32_t n = (int32_t)rd_u32(r);
    if (r->err || n == -1)
        return s;
    if (n < 0) {
        r->err = ESS_EPROTO;
        return s;
    }
    const uint8_t *p = take(r, (size_t)n);
    if (p) {
        s.p = (const char *)p;
        s.len = (size_t)n;
    }
    return s;
}

/* Reads an array count and checks that count elements of at least min
 * bytes each can fit, so no later loop runs away on a forged count. */
static uint32_t rd_count(rd_t *r, size_t min)
{
    int32_t n = (int32_t)rd_u32(r);
    if (r->err)
        return 0;
    if (n < 0) {
        r->err = ESS_EPROTO;
        return 0;
    }
    if ((uint64_t)(uint32_t)n * min > r->left) {
        r->err = ESS_ETRUNC;
        return 0;
    }
    return (uint32_t)n;
}

/* Validates count string pairs and returns the span they take. */
static void rd_kvs(rd_t *r, uint32_t *count, const uint8_t **p, size_t *len)
{
    *count = rd_count(r, 4);
    *p = r->p;
    for (uint32_t i = 0; i < *count && !r->err; i++) {
        rd_str(r);
        rd_str(r);
    }
    *len = (size_t)(r->p - *p);
}

static void decode_metadata(rd_t *r, ess_proto_frame_t *out)
{
    out->u.metadata.brokers = rd_count(r, 2 + 2 + 4);
    out->u.metadata.bp = r->p;
    for (uint32_t i = 0; i < out->u.metadata.brokers && !r->err; i++) {
        rd_u16(r);
        rd_str(r);
        rd_u32(r);
    }
    out->u.metadata.blen = (size_t)(r->p - out->u.metadata.bp);
    out->u.metadata.streams = rd_count(r, 2 + 2 + 2 + 4);
    out->u.metadata.sp = r->p;
    for (uint32_t i = 0; i < out->u.metadata.streams && !r->err; i++) {
        rd_str(r);
        rd_u16(r);
        rd_u16(r);
        uint32_t n = rd_count(r, 2);
        take(r, (size_t)n * 2);
    }
    out->u.metadata.slen = (size_t)(r->p - out->u.metadata.sp);
}

int ess_proto_decode(const uint8_t *frame, size_t len, ess_proto_frame_t *out)
{
    rd_t r = {frame, len, 0};
    memset(out, 0, sizeof *out);
    out->key = rd_u16(&r);
    out->version = rd_u16(&r);
    if (r.err)
        return r.err;
    int is_resp = (out->key & ESS_PROTO_RESPONSE) != 0;
    uint16_t key = out->key & (uint16_t)~ESS_PROTO_RESPONSE;

    if (is_resp && key == ESS_PROTO_CREDIT) {
        out->code = rd_u16(&r);
        out->u.credit_sub_id = rd_u8(&r);
        return r.err;
    }
    if (is_resp) {
        out->corr = rd_u32(&r);
        out->code = rd_u16(&r);
        if (r.err)
            return r.err;
        switch (key) {
        case ESS_PROTO_PEER_PROPERTIES:
        case ESS_PROTO_OPEN:
            /* Open responses to a failed open may end after the code. */
            if (r.left == 0 && out->code != ESS_PROTO_OK)
                break;
            rd_kvs(&r, &out->u.kv.count, &out->u.kv.p, &out->u.kv.len);
            break;
        case ESS_PROTO_SASL_HANDSHAKE:
            if (r.left == 0 && out->code != ESS_PROTO_OK)
                break;
            out->u.mechs.count = rd_count(&r, 2);
            out->u.mechs.p = r.p;
            for (uint32_t i = 0; i < out->u.mechs.count && !r.err; i++)
                rd_str(&r);
            out->u.mechs.len = (size_t)(r.p - out->u.mechs.p);
            break;
        case ESS_PROTO_SASL_AUTHENTICATE:
            if (r.left > 0)
                out->u.sasl_data = rd_bytes(&r);
            break;
        case ESS_PROTO_QUERY_OFFSET:
        case ESS_PROTO_QUERY_PUBLISHER_SEQ:
            if (r.left == 0 && out->code != ESS_PROTO_OK)
                break;
            out->u.offset = rd_u64(&r);
            break;
        case ESS_PROTO_METADATA:
            /* A Metadata response has no response code: rewind past corr. */
            r.p -= 2;
            r.left += 2;
            out->code = ESS_PROTO_OK;
            decode_metadata(&r, out);
            break;
        case ESS_PROTO_EXCHANGE_VERSIONS:
            if (r.left == 0 && out->code != ESS_PROTO_OK)
                break;
            out->u.versions.count = rd_count(&r, 6);
            out->u.versions.p = take(&r, (size_t)out->u.versions.count * 6);
            break;
        case ESS_PROTO_STREAM_STATS:
            /* An error answer (no such stream) may end after the code. */
            if (r.left == 0 && out->code != ESS_PROTO_OK)
                break;
            out->u.stats.count = rd_count(&r, 2 + 8);
            out->u.stats.p = r.p;
            for (uint32_t i = 0; i < out->u.stats.count && !r.err; i++) {
                rd_str(&r);
                rd_u64(&r);
            }
            out->u.stats.len = r.err ? 0 : (size_t)(r.p - out->u.stats.p);
            break;
        default: break;
        }
        return r.err;
    }

    switch (key) {
    case ESS_PROTO_TUNE:
        out->u.tune.frame_max = rd_u32(&r);
        out->u.tune.heartbeat_s = rd_u32(&r);
        break;
    case ESS_PROTO_HEARTBEAT: break;
    case ESS_PROTO_DELIVER:
        out->u.deliver.sub_id = rd_u8(&r);
        if (out->version >= 2)
            out->u.deliver.committed_offset = rd_u64(&r);
        if (!r.err) {
            out->u.deliver.chunk = r.p;
            out->u.deliver.chunk_len = r.left;
        }
        break;
    case ESS_PROTO_CLOSE:
        out->corr = rd_u32(&r);
        out->code = rd_u16(&r);
        out->u.close_reason = rd_str(&r);
        break;
    case ESS_PROTO_METADATA_UPDATE:
        out->code = rd_u16(&r);
        out->u.update_stream = rd_str(&r);
        break;
    case ESS_PROTO_PUBLISH_CONFIRM:
        out->u.pub.pub_id = rd_u8(&r);
        out->u.pub.count = rd_count(&r, 8);
        out->u.pub.p = take(&r, (size_t)out->u.pub.count * 8);
        break;
    case ESS_PROTO_PUBLISH_ERROR:
        out->u.pub.pub_id = rd_u8(&r);
        out->u.pub.count = rd_count(&r, 10);
        out->u.pub.p = take(&r, (size_t)out->u.pub.count * 10);
        break;
    default: break;
    }
    return r.err;
}

int ess_proto_kv_at(const uint8_t *p, size_t len, uint32_t i, ess_proto_str_t *key,
                    ess_proto_str_t *value)
{
    rd_t r = {p, len, 0};
    for (uint32_t k = 0; k <= i && !r.err; k++) {
        *key = rd_str(&r);
        *value = rd_str(&r);
    }
    return r.err;
}

int ess_proto_stats_get(const ess_proto_frame_t *f, const char *name, int64_t *value)
{
    if (f == NULL || name == NULL || value == NULL ||
        f->key != (ESS_PROTO_STREAM_STATS | ESS_PROTO_RESPONSE))
        return ESS_EINVAL;
    rd_t r = {f->u.stats.p, f->u.stats.len, 0};
    size_t n = strlen(name);
    for (uint32_t k = 0; k < f->u.stats.count && !r.err; k++) {
        ess_proto_str_t key = rd_str(&r);
        uint64_t v = rd_u64(&r);
        if (!r.err && key.p && key.len == n && memcmp(key.p, name, n) == 0) {
            *value = (int64_t)v;
            return ESS_OK;
        }
    }
    return r.err ? r.err : ESS_ENOTFOUND;
}

int ess_proto_mech_at(const ess_proto_frame_t *f, uint32_t i, ess_proto_str_t *mech)
{
    if (i >= f->u.mechs.count)
        return ESS_EINVAL;
    rd_t r = {f->u.mechs.p, f->u.mechs.len, 0};
    for (uint32_t k = 0; k <= i && !r.err; k++)
        *mech = rd_str(&r);
    return r.err;
}

int ess_proto_metadata_broker(const ess_proto_frame_t *f, uint32_t i, ess_proto_broker_t *out)
{
    if (i >= f->u.metadata.brokers)
        return ESS_EINVAL;
    rd_t r = {f->u.metadata.bp, f->u.metadata.blen, 0};
    for (uint32_t k = 0; k <= i && !r.err; k++) {
        out->ref = rd_u16(&r);
        out->host = rd_str(&r);
        out->port = rd_u32(&r);
    }
    return r.err;
}

int ess_proto_metadata_stream(const ess_proto_frame_t *f, uint32_t i, ess_proto_stream_meta_t *out)
{
    if (i >= f->u.metadata.streams)
        return ESS_EINVAL;
    rd_t r = {f->u.metadata.sp, f->u.metadata.slen, 0};
    for (uint32_t k = 0; k <= i && !r.err; k++) {
        out->stream = rd_str(&r);
        out->code = rd_u16(&r);
        out->leader = rd_u16(&r);
        out->replicas = rd_count(&r, 2);
        out->replica_refs = take(&r, (size_t)out->replicas * 2);
    }
    return r.err;
}

uint16_t ess_proto_replica_ref(const ess_proto_stream_meta_t *m, uint32_t i)
{
    if (i >= m->replicas)
        return 0;
    return (uint16_t)(m->replica_refs[2 * i] << 8 | m->replica_refs[2 * i + 1]);
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

uint64_t ess_proto_confirm_id(const ess_proto_frame_t *f, uint32_t i)
{
    if (i >= f->u.pub.count)
        return 0;
    return be64(f->u.pub.p + (size_t)i * 8);
}

uint64_t ess_proto_error_id(const ess_proto_frame_t *f, uint32_t i, uint16_t *code)
{
    if (i >= f->u.pub.count)
        return 0;
    const uint8_t *p = f->u.pub.p + (size_t)i * 10;
    *code = (uint16_t)(p[8] << 8 | p[9]);
    return be64(p);
}

int ess_proto_version_of(const ess_proto_frame_t *f, uint16_t key, uint16_t *min, uint16_t *max)
{
    for (uint32_t i = 0; i < f->u.versions.count; i++) {
        const uint8_t *p = f->u.versions.p + (size_t)i * 6;
        if ((uint16_t)(p[0] << 8 | p[1]) == key) {
            *min = (uint16_t)(p[2] << 8 | p[3]);
            *max = (uint16_t)(p[4] << 8 | p[5]);
            return ESS_OK;
        }
    }
    return ESS_ENOTFOUND;
}

int ess_proto_code_to_ess(uint16_t code)
{
    switch (code) {
    case ESS_PROTO_OK: return ESS_OK;
    case ESS_PROTO_STREAM_NOT_EXIST:
    case ESS_PROTO_SUB_ID_NOT_EXIST:
    case ESS_PROTO_PUBLISHER_NOT_EXIST:
    case ESS_PROTO_NO_OFFSET: return ESS_ENOTFOUND;
    case ESS_PROTO_SASL_MECH_UNSUPPORTED:
    case ESS_PROTO_AUTH_FAILURE:
    case ESS_PROTO_SASL_ERROR:
    case ESS_PROTO_SASL_LOOPBACK:
    case ESS_PROTO_VHOST_ACCESS_FAILURE:
    case ESS_PROTO_ACCESS_REFUSED: return ESS_EAUTH;
    case ESS_PROTO_STREAM_EXISTS:
    case ESS_PROTO_SUB_ID_EXISTS:
    case ESS_PROTO_PRECONDITION_FAILED: return ESS_ESTATE;
    case ESS_PROTO_STREAM_NOT_AVAILABLE: return ESS_ECONN;
    case ESS_PROTO_FRAME_TOO_LARGE: return ESS_ETOOBIG;
    default: return ESS_EPROTO;
    }
}

const char *ess_proto_code_name(uint16_t code)
{
    static const char *const names[] = {
        "unknown code",
        "ok",
        "stream does not exist",
        "subscription id already exists",
        "subscription id does not exist",
        "stream already exists",
        "stream not available",
        "SASL mechanism not supported",
        "authentication failure",
        "SASL error",
        "SASL challenge",
        "SASL authentication failure loopback",
        "virtual host access failure",
        "unknown frame",
        "frame too large",
        "internal error",
        "access refused",
        "precondition failed",
        "publisher does not exist",
        "no offset",
    };
    return code < ESS_ARRAY_SIZE(names) ? names[code] : names[0];
}
