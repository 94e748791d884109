/*
 * RabbitMQ stream protocol codec: encodes client requests into a growable
 * buffer and decodes server frames from a byte span. Pure: no I/O, no
 * timers, no global state, so it can be fuzzed and unit tested in isolation.
 * Decoded structs borrow the input bytes; they stay valid only as long as
 * the caller keeps the frame. Osiris chunk contents are decoded elsewhere
 * (mq/chunk.h); this codec only hands out the chunk span of a Deliver.
 */
#ifndef ESS_MQ_PROTO_H
#define ESS_MQ_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Command keys; a response has the same key with ESS_PROTO_RESPONSE set. */
enum {
    ESS_PROTO_DECLARE_PUBLISHER = 0x0001,
    ESS_PROTO_PUBLISH = 0x0002,
    ESS_PROTO_PUBLISH_CONFIRM = 0x0003,
    ESS_PROTO_PUBLISH_ERROR = 0x0004,
    ESS_PROTO_QUERY_PUBLISHER_SEQ = 0x0005,
    ESS_PROTO_DELETE_PUBLISHER = 0x0006,
    ESS_PROTO_SUBSCRIBE = 0x0007,
    ESS_PROTO_DELIVER = 0x0008,
    ESS_PROTO_CREDIT = 0x0009,
    ESS_PROTO_STORE_OFFSET = 0x000a,
    ESS_PROTO_QUERY_OFFSET = 0x000b,
    ESS_PROTO_UNSUBSCRIBE = 0x000c,
    ESS_PROTO_CREATE = 0x000d,
    ESS_PROTO_DELETE = 0x000e,
    ESS_PROTO_METADATA = 0x000f,
    ESS_PROTO_METADATA_UPDATE = 0x0010,
    ESS_PROTO_PEER_PROPERTIES = 0x0011,
    ESS_PROTO_SASL_HANDSHAKE = 0x0012,
    ESS_PROTO_SASL_AUTHENTICATE = 0x0013,
    ESS_PROTO_TUNE = 0x0014,
    ESS_PROTO_OPEN = 0x0015,
    ESS_PROTO_CLOSE = 0x0016,
    ESS_PROTO_HEARTBEAT = 0x0017,
    ESS_PROTO_EXCHANGE_VERSIONS = 0x001b,
    ESS_PROTO_STREAM_STATS = 0x001c, /* 3.11+: check the broker's version before sending */
    ESS_PROTO_RESPONSE = 0x8000,
};

/* Broker response codes (uint16 on the wire). */
enum {
    ESS_PROTO_OK = 1,
    ESS_PROTO_STREAM_NOT_EXIST = 2,
    ESS_PROTO_SUB_ID_EXISTS = 3,
    ESS_PROTO_SUB_ID_NOT_EXIST = 4,
    ESS_PROTO_STREAM_EXISTS = 5,
    ESS_PROTO_STREAM_NOT_AVAILABLE = 6,
    ESS_PROTO_SASL_MECH_UNSUPPORTED = 7,
    ESS_PROTO_AUTH_FAILURE = 8,
    ESS_PROTO_SASL_ERROR = 9,
    ESS_PROTO_SASL_CHALLENGE = 10,
    ESS_PROTO_SASL_LOOPBACK = 11,
    ESS_PROTO_VHOST_ACCESS_FAILURE = 12,
    ESS_PROTO_UNKNOWN_FRAME = 13,
    ESS_PROTO_FRAME_TOO_LARGE = 14,
    ESS_PROTO_INTERNAL_ERROR = 15,
    ESS_PROTO_ACCESS_REFUSED = 16,
    ESS_PROTO_PRECONDITION_FAILED = 17,
    ESS_PROTO_PUBLISHER_NOT_EXIST = 18,
    ESS_PROTO_NO_OFFSET = 19,
};

/* Offset specification types of Subscribe. */
enum {
    ESS_PROTO_OFFSET_FIRST = 1,
    ESS_PROTO_OFFSET_LAST = 2,
    ESS_PROTO_OFFSET_NEXT = 3,
    ESS_PROTO_OFFSET_OFFSET = 4,
    ESS_PROTO_OFFSET_TIMESTAMP = 5,
};

/** Smallest frame_max a peer may negotiate; we refuse to go below it. */
#define ESS_PROTO_MIN_FRAME_MAX 4096u

/** A growable output buffer. Zero-initialise; release with ess_proto_buf_free. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} ess_proto_buf_t;

void ess_proto_buf_free(ess_proto_buf_t *b);
/** Drop the first n bytes (n <= len), keeping the rest. */
void ess_proto_buf_consume(ess_proto_buf_t *b, size_t n);
/** Append raw bytes (aborts on OOM, like ess_xmalloc). */
void ess_proto_buf_append(ess_proto_buf_t *b, const void *p, size_t n);

/** A string or bytes field borrowed from a frame; p is NULL for a null (-1) value. */
typedef struct {
    const char *p;
    size_t len;
} ess_proto_str_t;

/** A key/value pair for the encoders (NUL-terminated strings). */
typedef struct {
    const char *key;
    const char *value;
} ess_proto_kv_t;

/** Subscribe offset specification. offset is used for OFFSET, timestamp_ms for TIMESTAMP. */
typedef struct {
    uint16_t type; /* ESS_PROTO_OFFSET_* */
    uint64_t offset;
    int64_t timestamp_ms;
} ess_proto_offset_t;

/*
 * Encoders. Each appends one complete frame (size prefix included) to b and
 * returns ESS_OK, or ESS_EINVAL (b untouched) when a string exceeds the
 * protocol's int16 length or an argument is invalid. Strings are
 * NUL-terminated and may not be NULL unless stated.
 */
int ess_proto_enc_peer_properties(ess_proto_buf_t *b, uint32_t corr, const ess_proto_kv_t *props,
                                  size_t n);
int ess_proto_enc_sasl_handshake(ess_proto_buf_t *b, uint32_t corr);
/** SASL PLAIN: opaque data is "\0user\0pass". */
int ess_proto_enc_sasl_plain(ess_proto_buf_t *b, uint32_t corr, const char *user, const char *pass);
int ess_proto_enc_tune(ess_proto_buf_t *b, uint32_t frame_max, uint32_t heartbeat_s);
int ess_proto_enc_open(ess_proto_buf_t *b, uint32_t corr, const char *vhost);
int ess_proto_enc_heartbeat(ess_proto_buf_t *b);
int ess_proto_enc_close(ess_proto_buf_t *b, uint32_t corr, uint16_t code, const char *reason);
/** Answer to a server-initiated Close. */
int ess_proto_enc_close_response(ess_proto_buf_t *b, uint32_t corr, uint16_t code);
int ess_proto_enc_metadata(ess_proto_buf_t *b, uint32_t corr, const char *const *streams, size_t n);
int ess_proto_enc_create(ess_proto_buf_t *b, uint32_t corr, const char *stream,
                         const ess_proto_kv_t *args, size_t n);
int ess_proto_enc_delete(ess_proto_buf_t *b, uint32_t corr, const char *stream);
int ess_proto_enc_subscribe(ess_proto_buf_t *b, uint32_t corr, uint8_t sub_id, const char *stream,
                            const ess_proto_offset_t *off, uint16_t credit,
                            const ess_proto_kv_t *props, size_t n);
int ess_proto_enc_credit(ess_proto_buf_t *b, uint8_t sub_id, uint16_t credit);
int ess_proto_enc_unsubscribe(ess_proto_buf_t *b, uint32_t corr, uint8_t sub_id);
int ess_proto_enc_query_offset(ess_proto_buf_t *b, uint32_t corr, const char *ref,
                               const char *stream);
/** The last publishing id the broker stored for publisher reference ref (answer in u.offset). */
int ess_proto_enc_query_publisher_seq(ess_proto_buf_t *b, uint32_t corr, const char *ref,
                                      const char *stream);
int ess_proto_enc_store_offset(ess_proto_buf_t *b, const char *ref, const char *stream,
                               uint64_t offset);
/** ref may be NULL (no deduplication). */
int ess_proto_enc_declare_publisher(ess_proto_buf_t *b, uint32_t corr, uint8_t pub_id,
                                    const char *ref, const char *stream);
int ess_proto_enc_delete_publisher(ess_proto_buf_t *b, uint32_t corr, uint8_t pub_id);
/** One Publish frame (v1) with n messages numbered first_id, first_id+1, ... */
int ess_proto_enc_publish(ess_proto_buf_t *b, uint8_t pub_id, uint64_t first_id,
                          const uint8_t *const *msgs, const size_t *lens, size_t n);
/** Bytes a Publish frame of n messages with total payload bytes `total` takes. */
size_t ess_proto_publish_size(size_t n, size_t total);
/** ExchangeCommandVersions request: triples of (key, min, max). */
int ess_proto_enc_exchange_versions(ess_proto_buf_t *b, uint32_t corr, const uint16_t *triples,
                                    size_t n);

/** StreamStats request (0x1c, RabbitMQ 3.11+; 3.10 closes the connection on it). */
int ess_proto_enc_stream_stats(ess_proto_buf_t *b, uint32_t corr, const char *stream);

/**
 * Frame splitter. Looks at the start of a receive buffer: returns ESS_OK and
 * sets *frame_len (the whole frame including its 4-byte size) when a complete
 * frame is there; ESS_ETRUNC and sets *frame_len to the number of further
 * bytes needed; ESS_ETOOBIG when the announced size exceeds frame_max
 * (0 = no limit); ESS_EPROTO for a frame too short to hold key and version.
 */
int ess_proto_split(const uint8_t *buf, size_t len, uint32_t frame_max, size_t *frame_len);

/** A decoded server frame; every pointer borrows the frame bytes. */
typedef struct {
    uint16_t key; /* including ESS_PROTO_RESPONSE for responses */
    uint16_t version;
    uint32_t corr; /* responses and server requests with a correlation id */
    uint16_t code; /* response code, or Close/MetadataUpdate code */
    union {
        struct { /* PeerProperties and Open responses */
            uint32_t count;
            const uint8_t *p; /* validated [key value] pairs; see ess_proto_kv_at */
            size_t len;
        } kv;
        struct { /* SaslHandshake response */
            uint32_t count;
            const uint8_t *p;
            size_t len;
        } mechs;
        ess_proto_str_t sasl_data; /* SaslAuthenticate response */
        struct {
            uint32_t frame_max;
            uint32_t heartbeat_s;
        } tune;
        struct {
            uint8_t sub_id;
            uint64_t committed_offset; /* v2 only, else 0 */
            const uint8_t *chunk;      /* the Osiris chunk, header included */
            size_t chunk_len;
        } deliver;
        uint8_t credit_sub_id; /* Credit error response */
        uint64_t offset;       /* QueryOffset response */
        ess_proto_str_t close_reason;
        ess_proto_str_t update_stream; /* MetadataUpdate */
        struct {
            uint32_t brokers;
            const uint8_t *bp; /* validated [Broker] entries */
            size_t blen;
            uint32_t streams;
            const uint8_t *sp; /* validated [StreamMetadata] entries */
            size_t slen;
        } metadata;
        struct {
            uint8_t pub_id;
            uint32_t count;
            const uint8_t *p; /* count uint64 (confirm) or uint64+uint16 (error) */
        } pub;
        struct {
            uint32_t count;
            const uint8_t *p; /* count * (key, min, max) uint16 triples */
        } versions;
        struct { /* StreamStats response */
            uint32_t count;
            const uint8_t *p; /* validated [string key, int64 value] pairs */
            size_t len;
        } stats;
    } u;
} ess_proto_frame_t;

/**
 * Decode one frame body (after the 4-byte size: key, version, ...). Returns
 * ESS_OK, ESS_ETRUNC when a field runs past the end, ESS_EPROTO for a
 * malformed field (negative lengths where not allowed, trailing garbage in
 * fixed-size frames is tolerated). Unknown keys decode as ESS_OK with only
 * key and version set, so a client can ignore them.
 */
int ess_proto_decode(const uint8_t *frame, size_t len, ess_proto_frame_t *out);

/** The i-th (0-based, i < count) pair of a kv span from ess_proto_decode. */
int ess_proto_kv_at(const uint8_t *p, size_t len, uint32_t i, ess_proto_str_t *key,
                    ess_proto_str_t *value);
/** The i-th mechanism name of a SaslHandshake response. */
int ess_proto_mech_at(const ess_proto_frame_t *f, uint32_t i, ess_proto_str_t *mech);

typedef struct {
    uint16_t ref;
    ess_proto_str_t host;
    uint32_t port;
} ess_proto_broker_t;

typedef struct {
    ess_proto_str_t stream;
    uint16_t code;
    uint16_t leader;
    uint32_t replicas;
    const uint8_t *replica_refs; /* replicas big-endian uint16 */
} ess_proto_stream_meta_t;

int ess_proto_metadata_broker(const ess_proto_frame_t *f, uint32_t i, ess_proto_broker_t *out);
int ess_proto_metadata_stream(const ess_proto_frame_t *f, uint32_t i, ess_proto_stream_meta_t *out);
uint16_t ess_proto_replica_ref(const ess_proto_stream_meta_t *m, uint32_t i);
/** The i-th publishing id of a PublishConfirm, or of a PublishError with its code. */
uint64_t ess_proto_confirm_id(const ess_proto_frame_t *f, uint32_t i);
uint64_t ess_proto_error_id(const ess_proto_frame_t *f, uint32_t i, uint16_t *code);
/** Look up the (min, max) versions of key in an ExchangeCommandVersions response. */
int ess_proto_version_of(const ess_proto_frame_t *f, uint16_t key, uint16_t *min, uint16_t *max);

/** The value of the StreamStats statistic `name` (e.g. "committed_chunk_id"):
 *  ESS_OK, ESS_ENOTFOUND when the response has no such key, ESS_EINVAL when
 *  f is not a StreamStats response. */
int ess_proto_stats_get(const ess_proto_frame_t *f, const char *name, int64_t *value);

/** Map a broker response code to an ESS_* code (1 -> ESS_OK). */
int ess_proto_code_to_ess(uint16_t code);
/** A short static name for a broker response code; never NULL. */
const char *ess_proto_code_name(uint16_t code);

#endif
