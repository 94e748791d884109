/*
 * Asynchronous RabbitMQ stream-protocol client on a caller's libuv loop.
 * It never blocks: name resolution, connects, the handshake, heartbeats,
 * credit and reconnects all run as loop callbacks. One client owns a pool
 * of connections (up to 255 subscriptions each), a locator connection to
 * the configured address for Metadata/Create/Delete, and reconnects with
 * exponential backoff and jitter, resuming every live subscription at its
 * last delivered offset + 1 and re-declaring every declared publisher on
 * its stream's leader, resending what was not confirmed.
 *
 * Hosts: the locator connection (Metadata, create, delete) goes to one node
 * of a list: the URL's host and stream port first, then the configured
 * stream_hosts, then every node a Metadata answer named; when its
 * connection fails or is lost it tries the next one (the backoff grows
 * only after a whole round failed), so losing that node does not stop the
 * client. With load_balancer_mode every connection goes to the locator's
 * current node. Otherwise Metadata decides: a subscription goes to the
 * member read_from names (by default a replica, the leader when there is
 * none), a publisher to the leader, and when such a node connection drops
 * its live subscriptions ask Metadata again (preferring another member
 * than the node just lost) instead of retrying a node that may be gone,
 * and resume at their last delivered offset + 1.
 *
 * Protocol: Deliver v1 only (ExchangeCommandVersions is never sent, so a
 * 3.11+ broker keeps using v1); StreamStats only to a broker whose
 * `version` peer property says 3.11 or later (3.10 drops the connection
 * on a command it does not know); frame_max and heartbeat are the minimum of
 * both sides. The broker sends each chunk as one frame even when it is
 * larger than frame_max, so received frames are capped at 64 MiB instead.
 *
 * Callbacks run on the loop thread. Every pointer handed to a callback is
 * borrowed for the duration of that callback only.
 */
#ifndef ESS_MQ_STREAM_CLIENT_H
#define ESS_MQ_STREAM_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mq/amqp10.h"
#include "mq/proto.h"

typedef struct ess_stream_client_s ess_stream_client_t;
typedef struct ess_stream_sub_s ess_stream_sub_t;
typedef struct ess_stream_pub_s ess_stream_pub_t;

typedef enum {
    ESS_OFFSET_FIRST,
    ESS_OFFSET_LAST,
    ESS_OFFSET_NEXT,
    ESS_OFFSET_ABS,       /* starts exactly at offset (records before it are dropped) */
    ESS_OFFSET_TIMESTAMP, /* first chunk whose timestamp is >= timestamp_ms */
} ess_offset_kind_t;

typedef struct {
    ess_offset_kind_t kind;
    uint64_t offset;
    int64_t timestamp_ms;
} ess_offset_spec_t;

/** One delivered record. body and amqp borrow the chunk: valid during on_message only. */
typedef struct {
    const uint8_t *body; /* the AMQP 1.0 body (first data section), or the raw record */
    size_t len;
    uint64_t offset;
    int64_t timestamp_ms; /* the chunk's timestamp */
    const ess_amqp10_msg_t *amqp;
    const uint8_t *record; /* the whole record as stored (for ess_amqp10_body_copy) */
    size_t record_len;
} ess_stream_msg_t;

typedef struct {
    /** ESS_OK once the broker accepted the subscription; otherwise ESS_ENOTFOUND
     *  (no such stream), ESS_ECONN (broker unreachable), ESS_EAUTH, ESS_EPROTO, ...
     *  After a failure the sub is freed when this callback returns. Called once. */
    void (*on_subscribed)(ess_stream_sub_t *sub, int status, void *ud);
    void (*on_message)(ess_stream_sub_t *sub, const ess_stream_msg_t *msg, void *ud);
    /** The stream was deleted (ESS_ENOTFOUND) or resuming failed for good; the sub
     *  is freed when this returns. May be NULL. */
    void (*on_ended)(ess_stream_sub_t *sub, int reason, void *ud);
} ess_stream_sub_cbs_t;

/** Which member of a stream a subscription reads from (Metadata names them). */
typedef enum {
    ESS_READ_REPLICA = 0, /* the first replica that is not the node just lost, else the leader */
    ESS_READ_LEADER,      /* always the leader (the newest data first; loads the leader) */
    ESS_READ_ANY,         /* a member the client is already connected to, else as replica */
} ess_stream_read_from_t;

typedef struct {
    const char *url; /* amqp://user:pass@host:port/vhost; the port is ignored */
    int stream_port; /* 0 = 5552 */
    /* More stream-protocol nodes, "host:port,host:port" ([v6]:port), or
     * NULL: the locator connection starts at url's host:stream_port and,
     * when that node fails, tries the next of these, then the nodes
     * Metadata answers named, round robin. */
    const char *stream_hosts;
    int read_from;          /* ess_stream_read_from_t */
    int load_balancer_mode; /* 1: always connect to url's host; 0: follow Metadata hosts */
    int heartbeat_s;        /* requested heartbeat, 0 = 60; the minimum with the broker's wins */
    uint32_t frame_max;     /* requested frame_max, 0 = 8 MiB; the minimum with the broker's wins */
    int reconnect_min_ms;   /* 0 = 100 */
    int reconnect_max_ms;   /* 0 = 5000 */
    int initial_credit;     /* chunks kept outstanding per subscription, 0 = 3 (at most 1000) */
    size_t credit_window_bytes;  /* > 0: after the first chunk, keep about this many bytes
                                  * outstanding (1 to 1000 chunks, by their average size)
                                  * instead of initial_credit chunks */
    const char *connection_name; /* shown in the management UI; NULL = "essd" */
} ess_stream_client_opts_t;

/**
 * Create a client and start connecting its locator connection. opts and
 * its strings are copied. Returns ESS_OK, or ESS_EINVAL for a bad URL, a
 * malformed stream_hosts entry or an unknown read_from.
 */
int ess_stream_client_create(uv_loop_t *loop, const ess_stream_client_opts_t *opts,
                             ess_stream_client_t **out);

/**
 * Close every connection and free the client, its subscriptions and
 * publishers. No subscription, publisher or request callback runs after
 * this call; done(ud) runs (from the loop) once every handle is closed.
 * done may be NULL.
 */
void ess_stream_client_close(ess_stream_client_t *c, void (*done)(void *ud), void *ud);

/** 1 when the locator connection is open and authenticated (for /health/ready). */
int ess_stream_client_connected(const ess_stream_client_t *c);

/** The node the locator connection uses now ("host:port" into buf, which
 *  is returned), or NULL when buf is too small. */
const char *ess_stream_client_locator_node(const ess_stream_client_t *c, char *buf, size_t len);

/**
 * Subscribe to stream from `from`. cbs is copied. The outcome always
 * arrives through cbs->on_subscribed, never synchronously. Returns ESS_OK
 * and sets *out (valid until on_ended, a failed on_subscribed, or
 * ess_stream_unsubscribe), or ESS_EINVAL / ESS_ESTATE (client closing).
 */
int ess_stream_subscribe(ess_stream_client_t *c, const char *stream, ess_offset_spec_t from,
                         const ess_stream_sub_cbs_t *cbs, void *ud, ess_stream_sub_t **out);

/** Stop and free sub. No callback runs for it after this returns; safe inside its callbacks. */
void ess_stream_unsubscribe(ess_stream_sub_t *sub);

/** Stop granting credit (chunks already granted are still delivered). */
void ess_stream_sub_pause(ess_stream_sub_t *sub);
/** Grant credit again up to the configured number of outstanding chunks. */
void ess_stream_sub_resume(ess_stream_sub_t *sub);
/** Last delivered offset; returns 0 and sets *offset, or ESS_ENOTFOUND if nothing delivered. */
int ess_stream_sub_last_offset(const ess_stream_sub_t *sub, uint64_t *offset);
const char *ess_stream_sub_stream(const ess_stream_sub_t *sub);

typedef void (*ess_stream_status_cb)(int status, void *ud);

/** Does the stream exist? cb(ESS_OK | ESS_ENOTFOUND | ESS_ECONN | ...), never synchronously. */
int ess_stream_exists(ess_stream_client_t *c, const char *stream, ess_stream_status_cb cb,
                      void *ud);
/** Create a stream (args such as max-length-bytes may be NULL/0); ESS_ESTATE if it exists. */
int ess_stream_create_stream(ess_stream_client_t *c, const char *stream, const ess_proto_kv_t *args,
                             size_t nargs, ess_stream_status_cb cb, void *ud);
int ess_stream_delete_stream(ess_stream_client_t *c, const char *stream, ess_stream_status_cb cb,
                             void *ud);

/** A stream's StreamStats (RabbitMQ 3.11+). Chunk ids are the offset of a
 *  chunk's first message: the last committed message is at or after
 *  committed_chunk_id. An empty stream answers -1 (as the broker does). */
typedef struct {
    int64_t first_chunk_id;     /* first retained chunk */
    int64_t committed_chunk_id; /* last chunk committed (readable) */
    int64_t last_chunk_id;      /* last chunk written; -1 when the broker does not say */
} ess_stream_stats_t;

/** stats is borrowed for the callback and NULL unless status is ESS_OK. */
typedef void (*ess_stream_stats_cb)(int status, const ess_stream_stats_t *stats, void *ud);

/**
 * Ask the broker (on the locator connection) for stream's StreamStats.
 * cb(ESS_OK, stats) or cb(ESS_ENOTFOUND | ESS_ECONN | ESS_EPROTO ..., NULL),
 * never synchronously. A broker older than 3.11 closes the whole connection
 * on a command it does not know, so nothing is sent unless the broker's
 * `version` peer property of the current session says 3.11 or later:
 * otherwise cb(ESS_ENOTSUP, NULL) (on the next loop turn when connected,
 * else once the handshake says so). Returns ESS_OK, ESS_EINVAL or
 * ESS_ESTATE (client closing).
 */
int ess_stream_stats(ess_stream_client_t *c, const char *stream, ess_stream_stats_cb cb, void *ud);

/** How long a tail probe waits for a chunk before it calls the stream empty. */
#define ESS_STREAM_TAIL_EMPTY_MS 1000

/** status ESS_OK with the offset of the stream's last committed message
 *  (-1: empty), else ESS_ENOTFOUND | ESS_ECONN | ... with -1. */
typedef void (*ess_stream_tail_cb)(int status, int64_t last_offset, void *ud);

/**
 * Learn the offset of the last message committed in stream, on any broker
 * version (3.10 has no StreamStats): a short subscription at OFFSET_LAST
 * whose first chunk is the stream's last; every message delivered before
 * the next loop turn counts, so the answer is at least the tail when the
 * broker served the request. A stream that delivers nothing within
 * ESS_STREAM_TAIL_EMPTY_MS is reported empty (-1). cb runs once, never
 * synchronously, and not at all once the client is closed. Costs one
 * Subscribe/Unsubscribe and one chunk read. Returns ESS_OK, ESS_EINVAL or
 * ESS_ESTATE (client closing).
 */
int ess_stream_tail(ess_stream_client_t *c, const char *stream, ess_stream_tail_cb cb, void *ud);

/** One broker node as the client sees it (for the operator console). */
typedef struct {
    const char *host; /* borrowed until the next call into the client */
    int port;
    int configured;  /* from broker.url / stream_hosts (else learned from Metadata) */
    int locator;     /* the locator connection uses this node now */
    int connections; /* connections to it (any state) */
    int ready;       /* of those, open and authenticated */
    int subscriptions, publishers;
} ess_stream_node_info_t;

/**
 * The nodes the client knows (its locator list) and every other host it
 * has a connection to, at most max of them into out; returns how many
 * were written. *lost (may be NULL) is the number of established
 * connections lost since the client started.
 */
size_t ess_stream_client_nodes(const ess_stream_client_t *c, ess_stream_node_info_t *out,
                               size_t max, uint64_t *lost);

/** The `version` peer property of the locator connection's broker (e.g.
 *  "3.10.8"), borrowed until the next call into the client; NULL when not
 *  connected yet or the broker did not say. */
const char *ess_stream_client_broker_version(const ess_stream_client_t *c);

typedef struct {
    /** Declared (ESS_OK), or failed: then the publisher is freed when this returns. */
    void (*on_ready)(ess_stream_pub_t *pub, int status, void *ud);
    /** Exactly one call per publishing id: ESS_OK when confirmed, else the
     *  broker's error. A lost connection or a leader change does not end a
     *  declared publisher: it re-declares on the leader and resends what is
     *  unconfirmed (see ess_stream_publisher_create_ref). Only when the stream
     *  is gone (ESS_ENOTFOUND) or access is refused (ESS_EAUTH) is every
     *  pending id reported with that status, then once id UINT64_MAX; the
     *  publisher is then dead (ess_stream_publish fails) and the caller
     *  closes it. */
    void (*on_confirm)(ess_stream_pub_t *pub, uint64_t id, int status, void *ud);
} ess_stream_pub_cbs_t;

/** Declare a publisher on stream (on the leader, unless load_balancer_mode). */
int ess_stream_publisher_create(ess_stream_client_t *c, const char *stream,
                                const ess_stream_pub_cbs_t *cbs, void *ud, ess_stream_pub_t **out);

/**
 * The same with a publisher reference (1-255 bytes): the broker drops a
 * message whose publishing id is not above the last one it stored for that
 * reference on that stream, so the messages resent after a reconnect are
 * stored once. Before the first declare the client asks the broker for
 * that last id (QueryPublisherSequence) and numbers new messages after it,
 * so a restarted publisher with the same reference is not deduplicated
 * away. Without a reference (ref NULL) resending is at-least-once: a
 * message stored but not confirmed before the loss is stored twice.
 * One reference must not be used by two live publishers at once.
 */
int ess_stream_publisher_create_ref(ess_stream_client_t *c, const char *stream, const char *ref,
                                    const ess_stream_pub_cbs_t *cbs, void *ud,
                                    ess_stream_pub_t **out);

/**
 * Publish n messages (bytes stored as given) in as few frames as frame_max
 * allows. Sets *first_id to the publishing id of msgs[0]; the others follow
 * in order. The client keeps a copy of each until it is confirmed or
 * refused (the caller bounds how many are outstanding). While the publisher
 * is reconnecting, messages are queued and sent after the resend. Returns
 * ESS_OK, ESS_ESTATE (never declared yet, or dead), ESS_ETOOBIG (one
 * message larger than a frame).
 */
int ess_stream_publish(ess_stream_pub_t *pub, const uint8_t *const *msgs, const size_t *lens,
                       size_t n, uint64_t *first_id);

/** Delete the publisher and free it; no callbacks after this returns. */
void ess_stream_publisher_close(ess_stream_pub_t *pub);

#endif
