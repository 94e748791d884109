/*
 * Internals shared by the stream client's files, and by nothing else:
 * include this only from core/mq/stream_*.c. The public API is
 * mq/stream_client.h.
 *
 *   stream_client.c   the client object: create, close, deferred results,
 *                     request objects
 *   stream_conn.c     one TCP connection to a node: resolve, connect,
 *                     handshake, heartbeat, reconnect backoff, the read
 *                     budget, frame dispatch, sending requests
 *   stream_sub.c      subscriptions: slots, credit, delivery, resubscribe
 *   stream_pub.c      publishers: slots, declare, publish, confirms
 *   stream_locator.c  answers to requests and their failures, Metadata
 *                     (where a stream lives), stream exists/create/delete
 *
 * Ownership is as described at the top of stream_client.c: the client
 * owns every connection, subscription, publisher and request; connections
 * own their slots' pointers but not the objects in them.
 */
#ifndef ESS_MQ_STREAM_INTERNAL_H
#define ESS_MQ_STREAM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mq/proto.h"
#include "mq/pubq.h"
#include "mq/stream_client.h"
#include "mq/url.h"

#define MAX_SUBS 255 /* subscription slots per connection (ids 0..254) */
#define MAX_PUBS 255 /* publisher slots per connection */
#define RESUB_RETRY_MS 500
/* RabbitMQ sends each Osiris chunk as one Deliver frame whatever frame_max
 * was negotiated (3.10.8 sends a 1.2 MB chunk on a 1 MiB connection), so
 * the receive side enforces this larger hard cap instead; frame_max still
 * bounds every frame we send. */
#define RECV_LIMIT (64u * 1024 * 1024)

/* Connection states, in order: a connection is usable up to C_READY. */
enum { C_RESOLVING, C_CONNECTING, C_HANDSHAKE, C_READY, C_CLOSING, C_WAIT, C_DEAD };
/* Request kinds. */
enum {
    R_SUBSCRIBE,   /* on the wire; sub */
    R_UNSUBSCRIBE, /* on the wire; sub */
    R_SUB_FAIL,    /* deferred failure of sub with status */
    R_EXISTS,
    R_CREATE,
    R_DELETE,
    R_LOCATE_SUB, /* Metadata for sub's stream */
    R_LOCATE_PUB,
    R_RECHECK, /* Metadata after a MetadataUpdate */
    R_DECLARE_PUB,
    R_PUB_FAIL,
    R_QUERY_SEQ, /* QueryPublisherSequence before a named publisher's first declare */
    R_STATUS,    /* deferred cb(status) */
    R_IGNORE,    /* a response nobody waits for */
    R_STATS,     /* StreamStats, only to a 3.11+ broker; answered through stats_cb */
};

typedef struct ess__stream_conn_s ess__stream_conn_t;

/* A request: on a connection's list (sent or waiting for the handshake),
 * or on the client's deferred list. Owns its strings. */
typedef struct ess__stream_req_s {
    struct ess__stream_req_s *next;
    int kind;
    int sent;
    uint32_t corr;
    int status;
    char *stream;
    ess_proto_kv_t *args;
    size_t nargs;
    ess_stream_status_cb cb;
    void *ud;
    ess_stream_sub_t *sub;
    ess_stream_pub_t *pub;
    ess_stream_stats_cb stats_cb; /* R_STATS */
} ess__stream_req_t;

struct ess_stream_sub_s {
    ess_stream_sub_t *prev, *next;
    ess_stream_client_t *c;
    ess__stream_conn_t *conn;
    int id;
    char *stream;
    ess_offset_spec_t from;
    ess_stream_sub_cbs_t cbs;
    void *ud;
    int on_wire, live, ever_live, dead, user_gone, needs_resub, needs_locate;
    int delivered_any;
    uint64_t last;
    char *avoid_host; /* the node whose connection it lost last: picked only when no other */
    int avoid_port;
    int paused, credit_out;
    size_t avg_chunk; /* moving average of delivered chunk bytes, 0 = none yet */
    int refs, depth;
};

struct ess_stream_pub_s {
    ess_stream_pub_t *prev, *next;
    ess_stream_client_t *c;
    ess__stream_conn_t *conn;
    int id;
    char *stream;
    ess_stream_pub_cbs_t cbs;
    void *ud;
    int ready, dead, user_gone, on_wire;
    uint64_t next_id;
    int refs, depth;
    char *ref;          /* publisher reference (broker deduplication), or NULL */
    int ever_ready;     /* declared once: a lost connection re-declares and resends */
    int seq_known;      /* next_id follows the broker's last id for ref */
    int needs_locate;   /* waiting for retry_at to find the leader again */
    int attempts;       /* reconnects since the last successful declare (backoff) */
    uint64_t retry_at;  /* loop time of the next locate */
    uint32_t decl_corr; /* correlation id of the declare in flight */
    uint32_t frame_max; /* of the last connection: size checks while away */
    ess_pubq_t q;       /* published, not yet confirmed nor refused */
};

struct ess__stream_conn_s {
    ess__stream_conn_t *next;
    ess_stream_client_t *c;
    char *host;
    int port;
    int is_locator;
    char *adv_host; /* the broker's advertised host:port (Open response), or NULL */
    int adv_port;
    char *version; /* the broker's `version` peer property (this session), or NULL */
    int state, hs;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    struct ess__stream_gai_s *gai;
    int tcp_open, handles;
    ess_proto_buf_t rbuf;
    ess_proto_buf_t wbuf; /* frames written this loop turn, sent by the turn handle */
    int read_held;        /* reading stopped until the next loop turn (READ_BUDGET) */
    size_t turn_bytes;    /* frame bytes handled since the last turn began */
    uint32_t frame_max, heartbeat_s;
    uint64_t last_recv, ready_since;
    uint32_t next_corr;
    int attempts, pending_err;
    unsigned gen;
    ess_stream_sub_t *subs[MAX_SUBS];
    int nsubs;
    ess_stream_pub_t *pubs[MAX_PUBS];
    int npubs;
    ess__stream_req_t *reqs, *reqs_last; /* oldest first (ess__stream_conn_add_req) */
};

/* Unlink n from the doubly linked list whose first element is head. */
#define ESS__LIST_REMOVE(head, n)                                                                  \
    do {                                                                                           \
        if ((n)->prev)                                                                             \
            (n)->prev->next = (n)->next;                                                           \
        else                                                                                       \
            (head) = (n)->next;                                                                    \
        if ((n)->next)                                                                             \
            (n)->next->prev = (n)->prev;                                                           \
    } while (0)

/* Push n at the front of the doubly linked list whose first element is head. */
#define ESS__LIST_PUSH(head, n)                                                                    \
    do {                                                                                           \
        (n)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (n);                                                                    \
        (head) = (n);                                                                              \
    } while (0)

/* A broker node the locator connection may use: the host of the URL,
 * the configured stream_hosts, and the nodes Metadata answers named. */
typedef struct {
    char *host;
    int port;
    int learned;    /* from a Metadata answer, not configured */
    char *adv_host; /* the name it advertised when the locator used it, or NULL */
    int adv_port;
} ess__stream_node_t;

#define MAX_NODES 32

typedef struct ess__stream_tail_s ess__stream_tail_t;

struct ess_stream_client_s {
    uv_loop_t *loop;
    ess_url_t url;
    int port, lb_mode, heartbeat_s, min_ms, max_ms, credit;
    int read_from; /* ess_stream_read_from_t */
    ess__stream_node_t nodes[MAX_NODES];
    int nnodes, node; /* the node the locator uses now */
    size_t credit_window;
    uint32_t frame_max;
    char *name;
    ess__stream_conn_t *conns, *locator;
    ess_stream_sub_t *subs;
    ess_stream_pub_t *pubs;
    ess__stream_tail_t *tails; /* stream_tail.c: probes in flight */
    ess__stream_req_t *deferred;
    uv_timer_t defer_timer, retry_timer;
    uv_idle_t turn; /* active while a connection counted bytes this turn or has frames to send */
    int wpending;   /* some connection's wbuf holds frames */
    uint64_t conns_lost; /* established connections lost (ess_stream_client_nodes) */
    int closing, handles;
    void (*done)(void *);
    void *done_ud;
    uint64_t rng;
};

/* stream_client.c: the client object, its requests and the deferred queue */
uint32_t ess__stream_jitter(ess_stream_client_t *c, uint32_t n);
void ess__stream_req_free(ess__stream_req_t *r);
ess__stream_req_t *ess__stream_req_new(int kind, const char *stream);
void ess__stream_defer(ess_stream_client_t *c, ess__stream_req_t *r, int status);
void ess__stream_client_maybe_finish(ess_stream_client_t *c);
int ess__stream_name_ok(const char *s);
/* Adds host:port to the client's node list unless there or full; returns
 * its index or -1. */
int ess__stream_node_add(ess_stream_client_t *c, const char *host, size_t hostlen, int port,
                         int learned);
/* Parses "host:port,host:port" ([v6]:port allowed, spaces ignored) into
 * the node list; ESS_EINVAL on a malformed entry. */
int ess__stream_nodes_parse(ess_stream_client_t *c, const char *list);

/* stream_tail.c: close every probe of a closing client (no callbacks) */
void ess__stream_tail_close_all(ess_stream_client_t *c);

/* stream_conn.c: one TCP connection to a node */
int ess__stream_conn_usable(const ess__stream_conn_t *k);
/* 1 when k's broker announced version 3.11 or later (StreamStats and the
 * other commands 3.10 closes the connection on); 0 when older or unknown. */
int ess__stream_conn_has_311(const ess__stream_conn_t *k);
void ess__stream_conn_write(ess__stream_conn_t *k, ess_proto_buf_t *b);
void ess__stream_conn_destroy(ess__stream_conn_t *k);
void ess__stream_conn_maybe_idle(ess__stream_conn_t *k);
void ess__stream_conn_send_req(ess__stream_conn_t *k, ess__stream_req_t *r);
void ess__stream_conn_queue_req(ess__stream_conn_t *k, ess__stream_req_t *r);
/* k's request list, oldest first: add appends r (k owns it), take detaches
 * the whole list (the caller owns it), answered unlinks and returns the sent
 * request whose correlation id is corr, or NULL. The broker answers in the
 * order it was asked, so answered finds its request at or near the head. */
void ess__stream_conn_add_req(ess__stream_conn_t *k, ess__stream_req_t *r);
ess__stream_req_t *ess__stream_conn_take_reqs(ess__stream_conn_t *k);
ess__stream_req_t *ess__stream_conn_answered(ess__stream_conn_t *k, uint32_t corr);
ess__stream_conn_t *ess__stream_conn_new(ess_stream_client_t *c, const char *host, int port,
                                         int is_locator);
ess__stream_conn_t *ess__stream_conn_for(ess_stream_client_t *c, const char *host, int port,
                                         int pubs);

/* stream_sub.c: subscriptions */
void ess__stream_sub_slot_release(ess_stream_sub_t *s);
void ess__stream_sub_put(ess_stream_sub_t *s);
void ess__stream_sub_fail(ess_stream_sub_t *s, int status);
void ess__stream_sub_end(ess_stream_sub_t *s, int reason);
void ess__stream_send_subscribe(ess_stream_sub_t *s);
void ess__stream_sub_attach(ess_stream_sub_t *s, const char *host, int port, int defer_fail);
void ess__stream_on_subscribe_resp(ess__stream_conn_t *k, ess__stream_req_t *r, int status);
void ess__stream_on_deliver(ess__stream_conn_t *k, const ess_proto_frame_t *f);
void ess__stream_on_retry_timer(uv_timer_t *t);

/* stream_pub.c: publishers */
void ess__stream_pub_put(ess_stream_pub_t *p);
void ess__stream_pub_fail(ess_stream_pub_t *p, int status, int declared);
void ess__stream_send_declare(ess_stream_pub_t *p);
void ess__stream_pub_attach(ess_stream_pub_t *p, const char *host, int port);
void ess__stream_on_confirm(ess__stream_conn_t *k, const ess_proto_frame_t *f, int is_error);
void ess__stream_pub_destroy(ess_stream_pub_t *p);
void ess__stream_pub_lost(ess_stream_pub_t *p, int err);
void ess__stream_pub_locate_failed(ess_stream_pub_t *p, int status);
void ess__stream_pub_req_fail(ess_stream_client_t *c, ess__stream_req_t *r, int err);
void ess__stream_on_declare_resp(ess__stream_conn_t *k, ess__stream_req_t *r, int status);
void ess__stream_on_query_seq_resp(ess__stream_conn_t *k, ess__stream_req_t *r,
                                   const ess_proto_frame_t *f, int status);
void ess__stream_pub_retry(ess_stream_client_t *c);

/* A member of a stream as Metadata names it, for ess__stream_pick_member. */
typedef struct {
    const char *host; /* NULL: its broker reference is not in the answer */
    size_t hostlen;
    int port;
    int connected; /* the client has a ready connection to it */
    int avoid;     /* the subscription lost its connection to it last */
} ess__stream_member_t;

/* stream_locator.c: requests and their answers (Metadata, create, delete) */
/* Which member to use: m[0] is the leader, m[1..n-1] the replicas in
 * Metadata order. Publishers (for_pub) always take the leader. Returns the
 * index, or -1 when none has a host. */
int ess__stream_pick_member(int read_from, const ess__stream_member_t *m, size_t n, int for_pub);
void ess__stream_req_fail(ess_stream_client_t *c, ess__stream_req_t *r, int err);
void ess__stream_on_response(ess__stream_conn_t *k, const ess_proto_frame_t *f);
void ess__stream_on_metadata_update(ess__stream_conn_t *k, const ess_proto_frame_t *f);

#endif
