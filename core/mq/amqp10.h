/*
 * AMQP 1.0 message decoding for stream records. RabbitMQ stores each
 * stream message as an AMQP 1.0 bare message (a sequence of described
 * sections); a stream-protocol publisher may also store arbitrary bytes.
 * This codec finds the body and the few properties the gateway uses, and
 * iterates application-properties. It is pure (no I/O, no allocation):
 * every pointer it returns borrows the caller's input buffer.
 *
 * What RabbitMQ 3.10.8 stores for an AMQP 0-9-1 publish (captured, see
 * tests/unit/test_amqp10.c): message-annotations (x-routing-key,
 * x-exchange, x-basic-delivery-mode), properties (content-type as a symbol
 * at index 6), application-properties from the headers table (a string
 * header as str8, a signed 64-bit header as smalllong) and one data section
 * with the body.
 */
#ifndef ESS_MQ_AMQP10_H
#define ESS_MQ_AMQP10_H

#include <stddef.h>
#include <stdint.h>

/* How the body was found. */
typedef enum {
    ESS_AMQP10_BODY_RAW = 0,      /* not AMQP 1.0: body is the whole record */
    ESS_AMQP10_BODY_NONE,         /* AMQP 1.0 without a body section: empty body */
    ESS_AMQP10_BODY_DATA,         /* body is the first data section's bytes */
    ESS_AMQP10_BODY_VALUE_STRING, /* amqp-value holding a string: its UTF-8 bytes */
    ESS_AMQP10_BODY_VALUE_BINARY, /* amqp-value holding binary: its bytes */
    ESS_AMQP10_BODY_VALUE_SYMBOL, /* amqp-value holding a symbol: its ASCII bytes */
    ESS_AMQP10_BODY_VALUE_OTHER,  /* amqp-value of another type: its AMQP encoding */
    ESS_AMQP10_BODY_SEQUENCE,     /* amqp-sequence: the encoding of the first list */
} ess_amqp10_body_kind_t;

typedef enum {
    ESS_AMQP10_NULL = 0,
    ESS_AMQP10_BOOL,      /* v.b */
    ESS_AMQP10_INT,       /* v.i: byte, short, int, long */
    ESS_AMQP10_UINT,      /* v.u: ubyte, ushort, uint, ulong, char (a code point) */
    ESS_AMQP10_DOUBLE,    /* v.d: float or double */
    ESS_AMQP10_STRING,    /* v.s/v.len: UTF-8 as sent (not checked, not NUL-terminated) */
    ESS_AMQP10_BINARY,    /* v.s/v.len */
    ESS_AMQP10_TIMESTAMP, /* v.i: milliseconds since the epoch */
    ESS_AMQP10_SYMBOL,    /* v.s/v.len: ASCII */
    ESS_AMQP10_UUID,      /* v.s/v.len: the 16 raw bytes */
    ESS_AMQP10_OTHER,     /* v.s/v.len: the complete AMQP encoding (decimal, list, map, ...) */
} ess_amqp10_type_t;

/** A decoded primitive value; s borrows the input buffer. */
typedef struct {
    ess_amqp10_type_t type;
    int b;
    int64_t i;
    uint64_t u;
    double d;
    const uint8_t *s;
    size_t len;
} ess_amqp10_value_t;

typedef struct {
    /* The data section (the first, when there are several: see n_data and
     * ess_amqp10_body_copy); amqp-value string/binary/symbol; for a raw
     * record, the whole record. */
    const uint8_t *body;
    size_t body_len;
    int is_amqp; /* 0 when the record was not an AMQP 1.0 message (raw bytes passed through) */
    const char *content_type; /* properties.content-type, or NULL; not NUL-terminated */
    size_t content_type_len;
    const uint8_t *app_props; /* raw application-properties map (from its constructor), or NULL */
    size_t app_props_len;

    /* Additions beyond the agreed interface. */
    ess_amqp10_body_kind_t body_kind;
    unsigned n_data;              /* number of data sections */
    const char *content_encoding; /* properties.content-encoding, or NULL */
    size_t content_encoding_len;
    const char *subject; /* properties.subject, or NULL */
    size_t subject_len;
    int has_message_id;
    ess_amqp10_value_t message_id;  /* properties.message-id when has_message_id */
    int64_t creation_time;          /* properties.creation-time (ms), or 0 */
    const uint8_t *msg_annotations; /* raw message-annotations map, or NULL */
    size_t msg_annotations_len;
} ess_amqp10_msg_t;

/**
 * Decode one stream record. Anything that is not a well-formed sequence of
 * AMQP 1.0 sections covering exactly len bytes is treated as raw bytes
 * (is_amqp = 0, body = the whole record): nothing is dropped for its
 * encoding. Returns ESS_OK, or ESS_EINVAL for a NULL out or a NULL p with
 * len > 0. Every pointer in out borrows p.
 */
int ess_amqp10_decode(const uint8_t *p, size_t len, ess_amqp10_msg_t *out);

/**
 * When a message has several data sections, copy their concatenation into
 * a new buffer (the caller frees it) and set *len. For any other message
 * the copy is of msg->body. Always succeeds (aborts on out of memory);
 * never returns NULL, even for an empty body.
 */
uint8_t *ess_amqp10_body_copy(const uint8_t *p, size_t len, const ess_amqp10_msg_t *msg,
                              size_t *out_len);

/** Callback for ess_amqp10_props_each; key and v borrow the map. Non-zero stops. */
typedef int (*ess_amqp10_prop_cb)(void *ud, const char *key, size_t klen,
                                  const ess_amqp10_value_t *v);

/**
 * Iterate an application-properties map (msg.app_props/app_props_len, or
 * any AMQP map encoding). Keys must be strings (symbols are accepted too).
 * Returns ESS_OK after the last pair, cb's non-zero value, or ESS_EPROTO
 * for a malformed map (pairs before the fault have been reported).
 */
int ess_amqp10_props_each(const uint8_t *app_props, size_t len, ess_amqp10_prop_cb cb, void *ud);

/**
 * Decode the one value encoded at p (up to len bytes) into *v and set
 * *used to its encoded size. Returns ESS_OK or ESS_EPROTO.
 */
int ess_amqp10_value_decode(const uint8_t *p, size_t len, ess_amqp10_value_t *v, size_t *used);

#endif
