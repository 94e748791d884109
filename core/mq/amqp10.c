/*
 * AMQP 1.0 bare-message decoder for stream records: walks the described
 * sections, picks the body, a few properties and the application-properties
 * map, and decodes primitive values. It owns no memory (except the copy
 * ess_amqp10_body_copy returns) and does no I/O; it does not validate
 * UTF-8 nor decode compound values beyond measuring their size. Every size
 * read from the input is checked against the bytes that remain.
 */
#include "mq/amqp10.h"

#include <string.h>

#include "ess.h"

#define MAX_DEPTH 32 /* nesting of described types, so hostile input cannot recurse deeply */

/* Section descriptors (amqp:*:list / map / binary ...). */
enum {
    SEC_HEADER = 0x70,
    SEC_DELIVERY_ANN = 0x71,
    SEC_MESSAGE_ANN = 0x72,
    SEC_PROPERTIES = 0x73,
    SEC_APP_PROPS = 0x74,
    SEC_DATA = 0x75,
    SEC_SEQUENCE = 0x76,
    SEC_VALUE = 0x77,
    SEC_FOOTER = 0x78,
};

static const char *const sec_symbols[] = {
    "amqp:header:list",
    "amqp:delivery-annotations:map",
    "amqp:message-annotations:map",
    "amqp:properties:list",
    "amqp:application-properties:map",
    "amqp:data:binary",
    "amqp:amqp-sequence:list",
    "amqp:amqp-value:*",
    "amqp:footer:map",
};

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* Encoded size of the value at p, or ESS_EPROTO when it does not fit in len. */
static int value_size(const uint8_t *p, size_t len, int depth, size_t *size)
{
    if (len < 1 || depth > MAX_DEPTH)
        return ESS_EPROTO;
    if (p[0] == 0x00) {
        size_t d, v;
        if (value_size(p + 1, len - 1, depth + 1, &d) != ESS_OK)
            return ESS_EPROTO;
        if (value_size(p + 1 + d, len - 1 - d, depth + 1, &v) != ESS_OK)
            return ESS_EPROTO;
        *size = 1 + d + v;
        return ESS_OK;
    }
    static const uint8_t fixed[] = {0, 0, 0, 0, 0, 1, 2, 4, 8, 16};
    unsigned cat = p[0] >> 4;
    size_t n;
    if (cat >= 4 && cat <= 9) {
        n = 1 + (size_t)fixed[cat];
    } else if (cat == 0xa || cat == 0xc || cat == 0xe) {
        if (len < 2)
            return ESS_EPROTO;
        n = 2 + (size_t)p[1];
    } else if (cat == 0xb || cat == 0xd || cat == 0xf) {
        if (len < 5)
            return ESS_EPROTO;
        uint32_t sz = rd32(p + 1);
        if (sz > len - 5)
            return ESS_EPROTO;
        n = 5 + (size_t)sz;
    } else {
        return ESS_EPROTO;
    }
    if (n > len)
        return ESS_EPROTO;
    *size = n;
    return ESS_OK;
}

int ess_amqp10_value_decode(const uint8_t *p, size_t len, ess_amqp10_value_t *v, size_t *used)
{
    size_t n;
    if (p == NULL || value_size(p, len, 0, &n) != ESS_OK)
        return ESS_EPROTO;
    memset(v, 0, sizeof *v);
    *used = n;
    const uint8_t *q = p + 1;
    switch (p[0]) {
    case 0x40: v->type = ESS_AMQP10_NULL; break;
    case 0x41:
        v->type = ESS_AMQP10_BOOL;
        v->b = 1;
        break;
    case 0x42:
        v->type = ESS_AMQP10_BOOL;
        v->b = 0;
        break;
    case 0x56:
        if (q[0] > 1)
            return ESS_EPROTO;
        v->type = ESS_AMQP10_BOOL;
        v->b = q[0];
        break;
    case 0x43:
    case 0x44:
        v->type = ESS_AMQP10_UINT;
        v->u = 0;
        break;
    case 0x50:
    case 0x52:
    case 0x53:
        v->type = ESS_AMQP10_UINT;
        v->u = q[0];
        break;
    case 0x60:
        v->type = ESS_AMQP10_UINT;
        v->u = (uint64_t)q[0] << 8 | q[1];
        break;
    case 0x70:
    case 0x73:
        v->type = ESS_AMQP10_UINT;
        v->u = rd32(q);
        break;
    case 0x80:
        v->type = ESS_AMQP10_UINT;
        v->u = rd64(q);
        break;
    case 0x51:
    case 0x54:
    case 0x55:
        v->type = ESS_AMQP10_INT;
        v->i = (int8_t)q[0];
        break;
    case 0x61:
        v->type = ESS_AMQP10_INT;
        v->i = (int16_t)((uint16_t)q[0] << 8 | q[1]);
        break;
    case 0x71:
        v->type = ESS_AMQP10_INT;
        v->i = (int32_t)rd32(q);
        break;
    case 0x81:
        v->type = ESS_AMQP10_INT;
        v->i = (int64_t)rd64(q);
        break;
    case 0x83:
        v->type = ESS_AMQP10_TIMESTAMP;
        v->i = (int64_t)rd64(q);
        break;
    case 0x72: {
        uint32_t bits = rd32(q);
        float f;
        memcpy(&f, &bits, sizeof f);
        v->type = ESS_AMQP10_DOUBLE;
        v->d = f;
        break;
    }
    case 0x82: {
        uint64_t bits = rd64(q);
        memcpy(&v->d, &bits, sizeof v->d);
        v->type = ESS_AMQP10_DOUBLE;
        break;
    }
    case 0x98:
        v->type = ESS_AMQP10_UUID;
        v->s = q;
        v->len = 16;
        break;
    case 0xa0:
        v->type = ESS_AMQP10_BINARY;
        v->s = p + 2;
        v->len = n - 2;
        break;
    case 0xa1:
        v->type = ESS_AMQP10_STRING;
        v->s = p + 2;
        v->len = n - 2;
        break;
    case 0xa3:
        v->type = ESS_AMQP10_SYMBOL;
        v->s = p + 2;
        v->len = n - 2;
        break;
    case 0xb0:
        v->type = ESS_AMQP10_BINARY;
        v->s = p + 5;
        v->len = n - 5;
        break;
    case 0xb1:
        v->type = ESS_AMQP10_STRING;
        v->s = p + 5;
        v->len = n - 5;
        break;
    case 0xb3:
        v->type = ESS_AMQP10_SYMBOL;
        v->s = p + 5;
        v->len = n - 5;
        break;
    default:
        v->type = ESS_AMQP10_OTHER;
        v->s = p;
        v->len = n;
        break;
    }
    return ESS_OK;
}

/*
 * Open a list or map encoding at p (exactly len bytes): set *items to its
 * first element, *end to its end and *count to its element count.
 */
static int compound_open(const uint8_t *p, size_t len, int want_map, const uint8_t **items,
                         const uint8_t **end, uint32_t *count)
{
    if (len < 1)
        return ESS_EPROTO;
    switch (p[0]) {
    case 0x45: /* list0 */
        if (want_map)
            return ESS_EPROTO;
        *items = *end = p + 1;
        *count = 0;
        return len == 1 ? ESS_OK : ESS_EPROTO;
    case 0xc0:
    case 0xc1:
        if ((p[0] == 0xc1) != want_map || len < 3 || p[1] < 1 || (size_t)p[1] + 2 != len)
            return ESS_EPROTO;
        *count = p[2];
        *items = p + 3;
        break;
    case 0xd0:
    case 0xd1:
        if ((p[0] == 0xd1) != want_map || len < 9 || rd32(p + 1) < 4 ||
            (size_t)rd32(p + 1) != len - 5)
            return ESS_EPROTO;
        *count = rd32(p + 5);
        *items = p + 9;
        break;
    default: return ESS_EPROTO;
    }
    *end = p + len;
    if (want_map && (*count & 1))
        return ESS_EPROTO;
    return ESS_OK;
}

/* A string or symbol (the only types the fields we read use), else absent. */
static void text_field(const ess_amqp10_value_t *v, const char **s, size_t *len)
{
    if (v->type == ESS_AMQP10_STRING || v->type == ESS_AMQP10_SYMBOL) {
        *s = (const char *)v->s;
        *len = v->len;
    }
}

static int parse_properties(const uint8_t *p, size_t len, ess_amqp10_msg_t *m)
{
    const uint8_t *it, *end;
    uint32_t count;
    if (compound_open(p, len, 0, &it, &end, &count) != ESS_OK)
        return ESS_EPROTO;
    for (uint32_t i = 0; i < count; i++) {
        ess_amqp10_value_t v;
        size_t used;
        if (ess_amqp10_value_decode(it, (size_t)(end - it), &v, &used) != ESS_OK)
            return ESS_EPROTO;
        it += used;
        if (v.type == ESS_AMQP10_NULL)
            continue;
        switch (i) {
        case 0:
            m->has_message_id = 1;
            m->message_id = v;
            break;
        case 3: text_field(&v, &m->subject, &m->subject_len); break;
        case 6: text_field(&v, &m->content_type, &m->content_type_len); break;
        case 7: text_field(&v, &m->content_encoding, &m->content_encoding_len); break;
        case 9:
            if (v.type == ESS_AMQP10_TIMESTAMP)
                m->creation_time = v.i;
            break;
        default: break;
        }
    }
    return it == end ? ESS_OK : ESS_EPROTO;
}

/* Check that a map encoding is well formed (every element fits). */
static int check_map(const uint8_t *p, size_t len)
{
    const uint8_t *it, *end;
    uint32_t count;
    if (p[0] == 0x40)
        return ESS_OK; /* a null section value is allowed and means empty */
    if (compound_open(p, len, 1, &it, &end, &count) != ESS_OK)
        return ESS_EPROTO;
    for (uint32_t i = 0; i < count; i++) {
        size_t used;
        if (value_size(it, (size_t)(end - it), 0, &used) != ESS_OK)
            return ESS_EPROTO;
        it += used;
    }
    return it == end ? ESS_OK : ESS_EPROTO;
}

/* The section code of the descriptor at p (ulong or symbol), or -1. */
static int section_code(const uint8_t *p, size_t len, size_t *used)
{
    ess_amqp10_value_t d;
    if (ess_amqp10_value_decode(p, len, &d, used) != ESS_OK)
        return -1;
    if ((p[0] == 0x53 || p[0] == 0x80) && d.u >= SEC_HEADER && d.u <= SEC_FOOTER)
        return (int)d.u;
    if (d.type == ESS_AMQP10_SYMBOL) {
        for (size_t i = 0; i < ESS_ARRAY_SIZE(sec_symbols); i++)
            if (strlen(sec_symbols[i]) == d.len && memcmp(sec_symbols[i], d.s, d.len) == 0)
                return SEC_HEADER + (int)i;
    }
    return -1;
}

static int set_value_body(const uint8_t *p, size_t len, ess_amqp10_msg_t *m)
{
    ess_amqp10_value_t v;
    size_t used;
    if (ess_amqp10_value_decode(p, len, &v, &used) != ESS_OK || used != len)
        return ESS_EPROTO;
    switch (v.type) {
    case ESS_AMQP10_STRING: m->body_kind = ESS_AMQP10_BODY_VALUE_STRING; break;
    case ESS_AMQP10_BINARY: m->body_kind = ESS_AMQP10_BODY_VALUE_BINARY; break;
    case ESS_AMQP10_SYMBOL: m->body_kind = ESS_AMQP10_BODY_VALUE_SYMBOL; break;
    default:
        m->body_kind = ESS_AMQP10_BODY_VALUE_OTHER;
        v.s = p;
        v.len = len;
        break;
    }
    m->body = v.s;
    m->body_len = v.len;
    return ESS_OK;
}

/* Parse p as a sequence of sections; ESS_EPROTO when it is not one. */
static int parse_sections(const uint8_t *p, size_t len, ess_amqp10_msg_t *m)
{
    size_t pos = 0;
    int last = 0;
    while (pos < len) {
        size_t dlen, vlen;
        if (p[pos] != 0x00)
            return ESS_EPROTO;
        pos++;
        int code = section_code(p + pos, len - pos, &dlen);
        if (code < 0)
            return ESS_EPROTO;
        pos += dlen;
        /* Sections come in the order of their codes; only data and
         * amqp-sequence may repeat; the body is of one kind only. */
        if (code < last || (code == last && code != SEC_DATA && code != SEC_SEQUENCE))
            return ESS_EPROTO;
        if (code >= SEC_DATA && code <= SEC_VALUE && last >= SEC_DATA && last <= SEC_VALUE &&
            code != last)
            return ESS_EPROTO;
        last = code;
        if (value_size(p + pos, len - pos, 0, &vlen) != ESS_OK)
            return ESS_EPROTO;
        const uint8_t *v = p + pos;
        pos += vlen;
        switch (code) {
        case SEC_HEADER:
            if (v[0] != 0x45 && v[0] != 0xc0 && v[0] != 0xd0)
                return ESS_EPROTO;
            break;
        case SEC_DELIVERY_ANN:
        case SEC_FOOTER:
            if (check_map(v, vlen) != ESS_OK)
                return ESS_EPROTO;
            break;
        case SEC_MESSAGE_ANN:
            if (check_map(v, vlen) != ESS_OK)
                return ESS_EPROTO;
            if (v[0] != 0x40) {
                m->msg_annotations = v;
                m->msg_annotations_len = vlen;
            }
            break;
        case SEC_PROPERTIES:
            if (parse_properties(v, vlen, m) != ESS_OK)
                return ESS_EPROTO;
            break;
        case SEC_APP_PROPS:
            if (check_map(v, vlen) != ESS_OK)
                return ESS_EPROTO;
            if (v[0] != 0x40) {
                m->app_props = v;
                m->app_props_len = vlen;
            }
            break;
        case SEC_DATA:
            if (v[0] != 0xa0 && v[0] != 0xb0)
                return ESS_EPROTO;
            if (m->n_data++ == 0) {
                m->body_kind = ESS_AMQP10_BODY_DATA;
                m->body = v + (v[0] == 0xa0 ? 2 : 5);
                m->body_len = vlen - (v[0] == 0xa0 ? 2 : 5);
            }
            break;
        case SEC_SEQUENCE:
            if (v[0] != 0x45 && v[0] != 0xc0 && v[0] != 0xd0)
                return ESS_EPROTO;
            if (m->body_kind != ESS_AMQP10_BODY_SEQUENCE) {
                m->body_kind = ESS_AMQP10_BODY_SEQUENCE;
                m->body = v;
                m->body_len = vlen;
            }
            break;
        case SEC_VALUE:
            if (set_value_body(v, vlen, m) != ESS_OK)
                return ESS_EPROTO;
            break;
        default: return ESS_EPROTO;
        }
    }
    return last != 0 ? ESS_OK : ESS_EPROTO;
}

int ess_amqp10_decode(const uint8_t *p, size_t len, ess_amqp10_msg_t *out)
{
    if (out == NULL || (p == NULL && len > 0))
        return ESS_EINVAL;
    memset(out, 0, sizeof *out);
    out->body_kind = ESS_AMQP10_BODY_NONE;
    out->body = p; /* an empty body still points somewhere valid */
    if (len > 0 && parse_sections(p, len, out) == ESS_OK) {
        out->is_amqp = 1;
        if (out->body_kind == ESS_AMQP10_BODY_NONE)
            out->body_len = 0;
        return ESS_OK;
    }
    memset(out, 0, sizeof *out);
    out->body_kind = ESS_AMQP10_BODY_RAW;
    out->body = p;
    out->body_len = len;
    return ESS_OK;
}

uint8_t *ess_amqp10_body_copy(const uint8_t *p, size_t len, const ess_amqp10_msg_t *msg,
                              size_t *out_len)
{
    if (msg->body_kind != ESS_AMQP10_BODY_DATA || msg->n_data < 2) {
        uint8_t *copy = ess_xmalloc(msg->body_len ? msg->body_len : 1);
        if (msg->body_len)
            memcpy(copy, msg->body, msg->body_len);
        *out_len = msg->body_len;
        return copy;
    }
    /* Several data sections: the message was validated by decode, so each
     * step below re-walks known-good framing; sizes are still checked. */
    size_t total = 0, pos = 0;
    uint8_t *buf = NULL;
    for (int pass = 0; pass < 2; pass++) {
        size_t w = 0;
        pos = 0;
        while (pos < len) {
            size_t dlen, vlen;
            if (p[pos] != 0x00)
                break;
            int code = section_code(p + pos + 1, len - pos - 1, &dlen);
            pos += 1 + dlen;
            if (code < 0 || value_size(p + pos, len - pos, 0, &vlen) != ESS_OK)
                break;
            if (code == SEC_DATA) {
                size_t hdr = p[pos] == 0xa0 ? 2 : 5;
                if (pass == 1)
                    memcpy(buf + w, p + pos + hdr, vlen - hdr);
                w += vlen - hdr;
            }
            pos += vlen;
        }
        if (pass == 0) {
            total = w;
            buf = ess_xmalloc(total ? total : 1);
        }
    }
    *out_len = total;
    return buf;
}

int ess_amqp10_props_each(const uint8_t *app_props, size_t len, ess_amqp10_prop_cb cb, void *ud)
{
    const uint8_t *it, *end;
    uint32_t count;
    if (app_props == NULL || len == 0)
        return ESS_OK;
    if (app_props[0] == 0x40 && len == 1)
        return ESS_OK;
    if (compound_open(app_props, len, 1, &it, &end, &count) != ESS_OK)
        return ESS_EPROTO;
    for (uint32_t i = 0; i < count; i += 2) {
        ess_amqp10_value_t k, v;
        size_t used;
        if (ess_amqp10_value_decode(it, (size_t)(end - it), &k, &used) != ESS_OK)
            return ESS_EPROTO;
        if (k.type != ESS_AMQP10_STRING && k.type != ESS_AMQP10_SYMBOL)
            return ESS_EPROTO;
        it += used;
        if (ess_amqp10_value_decode(it, (size_t)(end - it), &v, &used) != ESS_OK)
            return ESS_EPROTO;
        it += used;
        int rc = cb(ud, (const char *)k.s, k.len, &v);
        if (rc != 0)
            return rc;
    }
    return it == end ? ESS_OK : ESS_EPROTO;
}
