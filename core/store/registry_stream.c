/*
 * The shared registry (registry.backend: stream): the registry is an
 * append-only log of records (store/regrec.h) in a replicated RabbitMQ
 * stream, and every replica follows it into its local SQLite database,
 * the materialised view that list/find/count read synchronously.
 *
 * It owns its own stream client (separate from the gateway's), a named
 * publisher (reference "essd-registry-<replica id>", the id kept in the
 * view, so resends after a reconnect are stored once), the follower
 * subscription and the last applied offset (stored in the view in the
 * same transaction as the rows, so a restart replays only the tail), the
 * control stream of connection claims (<stream>-claims: short retention)
 * with its publisher and follower, the snapshots, and the requests that
 * wait for the log: a create answers once the broker confirmed its record
 * and the follower applied it (the id is the record's offset + 1: unique
 * across replicas, increasing, never reused); a delete likewise; a sync
 * (read-your-writes) once the view applied the tail the broker reported.
 *
 * Snapshots: after registry.snapshot_every created/deleted records since
 * the last snapshot in the log, the replica that wrote the record that
 * crossed the count writes the live rows as of its applied offset A
 * (parts of ESS_REGREC_SNAPSHOT_ROWS rows). A replica whose view is empty
 * and whose first record is not offset 0 (retention removed the start), or
 * which finds the log starting after its own applied offset, rebuilds: it
 * applies the next complete snapshot as the whole view and reads again
 * from A + 1 (replaying creates and deletes is idempotent).
 *
 * Records from the stream are untrusted: a malformed one is logged,
 * counted and skipped. It knows nothing of HTTP, Lua or sessions: deletes
 * and claims reach the gateway through the registry listener.
 */
#include "config.h"
#include "ess.h"
#include "metrics/metrics.h"
#include "mq/stream_client.h"
#include "store/registry.h"
#include "store/registry_view.h"
#include "store/regrec.h"
#include "util/log.h"

#include <inttypes.h>
#include <string.h>
#include <sys/random.h>

#define RETRY_MS 1000
#define MAX_SYNC_WAITERS 1000
#define CLAIMS_MAX_AGE "600s"
#define CLAIMS_MAX_BYTES "20000000"
#define CLAIMS_SEGMENT_BYTES "2000000"

enum { P_CREATE, P_DELETE, P_SYNC };

typedef struct pending_s {
    struct pending_s *next;
    int kind;
    char uuid[ESS_UUID_LEN + 1]; /* create */
    uint64_t nonce;              /* delete */
    uint64_t pubid;              /* the publishing id of its record */
    int64_t target;              /* sync: the offset to reach; -2 = waiting for a probe */
    uint64_t deadline;           /* sync: uv_now after which it answers ESS_ECONN */
    int confirmed, applied, status;
    ess_es_row_t row; /* the created/deleted row once applied */
    char rk[ESS_ROUTING_KEY_MAX + 1];
    ess_registry_done_fn done;
    void *ud;
} pending_t;

typedef struct {
    ess_es_row_t row;
    char rk[ESS_ROUTING_KEY_MAX + 1];
} snaprow_t;

typedef struct {
    ess_registry_t base;
    ess_registry_t *view; /* the SQLite backend */
    uv_loop_t *loop;
    char *url, *stream, *claims;
    int stream_port, lb_mode, heartbeat_s, rmin, rmax, cluster_size;
    int64_t max_bytes, segment_bytes, snapshot_every;
    int timeout_ms;
    char ref[64];

    ess_stream_client_t *client;
    ess_stream_pub_t *pub, *claim_pub;
    ess_stream_sub_t *sub, *claim_sub;
    int pub_ready, sub_ready, claim_pub_ready, created, creating, claims_creating;
    int pub_dead, claim_pub_dead; /* ended for good: closed and declared again by the retry */
    int missing;                  /* the registry stream is gone while the view has rows from it */
    uv_timer_t retry, commit;
    int stopped;

    int64_t applied;     /* last applied offset, -1 = nothing */
    int64_t first_seen;  /* offset of the first record of this subscription, -1 = none yet */
    int rebuild;         /* waiting for a complete snapshot */
    int64_t resume_from; /* >= 0: resubscribe there after the commit */
    int in_tx, tx_failed;
    int64_t since_snapshot;
    int want_snapshot;
    uint64_t replayed; /* records applied since start */

    /* The snapshot being assembled while rebuilding. */
    snaprow_t *snap;
    size_t nsnap, snapcap;
    int64_t snap_at;
    char snap_ref[ESS_REGREC_REF_MAX + 1];
    uint16_t snap_parts, snap_next;

    pending_t *pending;
    size_t nsync;
    int probing;     /* a tail probe is in flight */
    int probe_again; /* waiters arrived after it started */

    char why[256]; /* why the registry is unavailable */
    ess_buf_t scratch;
} stream_registry_t;

static stream_registry_t *of(ess_registry_t *r)
{
    return (stream_registry_t *)r;
}

static uint64_t rand64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = (uint64_t)uv_hrtime() * 0x9e3779b97f4a7c15ull;
    return v;
}

static void set_why(stream_registry_t *s, const char *fmt, const char *arg)
{
    char buf[256];
    snprintf(buf, sizeof buf, fmt, arg);
    if (strcmp(buf, s->why) != 0)
        ess_log_warn("registry: %s", buf);
    snprintf(s->why, sizeof s->why, "%s", buf);
}

/* ---- reads: the view -------------------------------------------------- */

static int st_list(ess_registry_t *r, ess_registry_row_cb cb, void *ud)
{
    return ess_registry_list(of(r)->view, cb, ud);
}

static int st_find_uuid(ess_registry_t *r, const char *uuid, ess_es_row_t *out)
{
    return ess_registry_find_uuid(of(r)->view, uuid, out);
}

static int64_t st_count(ess_registry_t *r)
{
    return ess_registry_count(of(r)->view);
}

static int st_sync_create(ess_registry_t *r, const char *rk, size_t rklen, ess_es_row_t *out)
{
    return ESS_ESTATE; /* asynchronous only */
}

static int st_sync_remove(ess_registry_t *r, int64_t id, ess_es_row_t *removed)
{
    return ESS_ESTATE;
}

static int st_writable(ess_registry_t *r, char *why, size_t whylen)
{
    stream_registry_t *s = of(r);
    if (s->missing)
        snprintf(why, whylen, "%s", s->why);
    else if (!s->pub_ready || !s->sub_ready)
        snprintf(why, whylen, "%s", s->why[0] ? s->why : "connecting to the registry stream");
    else if (s->rebuild)
        snprintf(why, whylen, "rebuilding the local view: waiting for a snapshot in %s", s->stream);
    else
        return ess_registry_writable(s->view, why, whylen);
    return 0;
}

/* ---- pending requests ------------------------------------------------- */

static pending_t *pending_add(stream_registry_t *s, int kind, ess_registry_done_fn done, void *ud)
{
    pending_t *p = ess_xcalloc(1, sizeof *p);
    p->kind = kind;
    p->done = done;
    p->ud = ud;
    p->pubid = UINT64_MAX;
    p->next = s->pending;
    s->pending = p;
    if (kind == P_SYNC)
        s->nsync++;
    return p;
}

static void pending_unlink(stream_registry_t *s, pending_t *p)
{
    for (pending_t **pp = &s->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            if (p->kind == P_SYNC)
                s->nsync--;
            return;
        }
}

/* Finish p: unlinked first, so done may call back into the registry. */
static void pending_finish(stream_registry_t *s, pending_t *p, int status)
{
    pending_unlink(s, p);
    if (p->done)
        p->done(p->ud, status, status == ESS_OK && p->kind != P_SYNC ? &p->row : NULL);
    free(p);
}

/* Finish every request whose record is both confirmed and applied (after a commit). */
static void pending_settle(stream_registry_t *s)
{
    for (;;) {
        pending_t *p = s->pending;
        for (; p; p = p->next) {
            if (p->kind == P_SYNC ? (p->target >= -1 && s->applied >= p->target && !s->rebuild)
                                  : (p->confirmed && p->applied))
                break;
        }
        if (p == NULL)
            return;
        pending_finish(s, p, p->kind == P_SYNC ? ESS_OK : p->status);
    }
}

static void fail_all(stream_registry_t *s, int kind, int status)
{
    for (;;) {
        pending_t *p = s->pending;
        while (p && p->kind != kind)
            p = p->next;
        if (p == NULL)
            return;
        pending_finish(s, p, status);
    }
}

static void st_forget(ess_registry_t *r, void *ud)
{
    stream_registry_t *s = of(r);
    for (pending_t **pp = &s->pending; *pp;) {
        pending_t *p = *pp;
        if (p->ud == ud) {
            *pp = p->next;
            if (p->kind == P_SYNC)
                s->nsync--;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

/* ---- publishing ------------------------------------------------------- */

/* Each record goes into the stream as an AMQP 1.0 message with one data
 * section, so `ess-cat` and other readers see the same shape as events. */
static int publish(ess_stream_pub_t *pub, const ess_buf_t *rec, uint64_t *id)
{
    uint8_t head[8];
    size_t hn = 0;
    head[hn++] = 0x00;
    head[hn++] = 0x53;
    head[hn++] = 0x75;
    head[hn++] = 0xb0;
    head[hn++] = (uint8_t)(rec->len >> 24);
    head[hn++] = (uint8_t)(rec->len >> 16);
    head[hn++] = (uint8_t)(rec->len >> 8);
    head[hn++] = (uint8_t)rec->len;
    ess_buf_t msg = {0};
    ess_buf_append(&msg, head, hn);
    ess_buf_append(&msg, rec->data, rec->len);
    const uint8_t *m = (const uint8_t *)msg.data;
    size_t len = msg.len;
    int rc = ess_stream_publish(pub, &m, &len, 1, id);
    ess_buf_free(&msg);
    return rc;
}

static int writable_now(stream_registry_t *s)
{
    return s->pub != NULL && s->pub_ready && s->sub_ready && !s->missing && !s->rebuild;
}

static int st_create_async(ess_registry_t *r, const char *rk, size_t rklen,
                           ess_registry_done_fn done, void *ud)
{
    stream_registry_t *s = of(r);
    if (!ess_routing_key_valid(rk, rklen))
        return ESS_EINVAL;
    if (!writable_now(s))
        return ESS_ECONN;
    pending_t *p = pending_add(s, P_CREATE, done, ud);
    if (ess_uuid_new(p->uuid) != ESS_OK) {
        pending_unlink(s, p);
        free(p);
        return ESS_EIO;
    }
    memcpy(p->rk, rk, rklen);
    p->rk[rklen] = '\0';
    ess_es_row_t row = {.created_ms = (int64_t)(uv_hrtime() / 1000000)};
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        row.created_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    memcpy(row.uuid, p->uuid, sizeof row.uuid);
    row.routing_key = p->rk;
    row.routing_key_len = rklen;
    ess_buf_reset(&s->scratch);
    ess_regrec_created(&s->scratch, s->ref, &row);
    int rc = publish(s->pub, &s->scratch, &p->pubid);
    if (rc != ESS_OK) {
        pending_unlink(s, p);
        free(p);
        return ESS_ECONN;
    }
    return ESS_OK;
}

static int st_remove_async(ess_registry_t *r, int64_t id, ess_registry_done_fn done, void *ud)
{
    stream_registry_t *s = of(r);
    /* An id is the offset + 1 of its created record: when the view has
     * applied that offset and has no such row, the row never existed or is
     * deleted, and nothing needs to be written (404 at once). */
    if (!s->rebuild && id >= 1 && id - 1 <= s->applied && ess__view_has_id(s->view, id) == 0)
        return ESS_ENOTFOUND;
    if (!writable_now(s))
        return ESS_ECONN;
    pending_t *p = pending_add(s, P_DELETE, done, ud);
    p->nonce = rand64();
    p->row.id = id;
    ess_buf_reset(&s->scratch);
    ess_regrec_deleted(&s->scratch, s->ref, id, p->nonce);
    if (publish(s->pub, &s->scratch, &p->pubid) != ESS_OK) {
        pending_unlink(s, p);
        free(p);
        return ESS_ECONN;
    }
    return ESS_OK;
}

static void on_pub_confirm(ess_stream_pub_t *pub, uint64_t id, int status, void *ud)
{
    stream_registry_t *s = ud;
    if (id == UINT64_MAX) {
        /* The publisher ended for good (the stream is gone, or access refused). */
        s->pub_ready = 0;
        s->pub_dead = 1;
        set_why(s, "the registry publisher ended: %s", ess_strerror(status));
        return;
    }
    for (pending_t *p = s->pending; p; p = p->next) {
        if (p->kind == P_SYNC || p->pubid != id)
            continue;
        if (status != ESS_OK) {
            ess_log_error("registry: the broker refused a record: %s", ess_strerror(status));
            pending_finish(s, p, ESS_ECONN);
            return;
        }
        p->confirmed = 1;
        break;
    }
    if (!s->in_tx)
        pending_settle(s);
}

static void on_pub_ready(ess_stream_pub_t *pub, int status, void *ud)
{
    stream_registry_t *s = ud;
    if (status != ESS_OK) {
        s->pub = NULL; /* freed by the client after this callback */
        set_why(s, "cannot declare the registry publisher: %s", ess_strerror(status));
        return;
    }
    s->pub_ready = 1;
    ess_log_info("registry: publishing to %s as %s", s->stream, s->ref);
}

static void st_claim(ess_registry_t *r, int64_t es_id, uint64_t token)
{
    stream_registry_t *s = of(r);
    if (s->claim_pub == NULL || !s->claim_pub_ready)
        return; /* claims are best effort: see docs/scaling.md */
    ess_buf_reset(&s->scratch);
    ess_regrec_claim(&s->scratch, s->ref, es_id, token);
    uint64_t id;
    publish(s->claim_pub, &s->scratch, &id);
}

static void on_claim_confirm(ess_stream_pub_t *pub, uint64_t id, int status, void *ud)
{
    stream_registry_t *s = ud;
    if (id == UINT64_MAX) {
        s->claim_pub_ready = 0;
        s->claim_pub_dead = 1;
    }
}

static void on_claim_pub_ready(ess_stream_pub_t *pub, int status, void *ud)
{
    stream_registry_t *s = ud;
    if (status != ESS_OK)
        s->claim_pub = NULL;
    else
        s->claim_pub_ready = 1;
}

/* ---- snapshots -------------------------------------------------------- */

typedef struct {
    stream_registry_t *s;
    ess_buf_t *parts;
    size_t nparts;
    uint16_t in_part;
    size_t total;
} snapw_t;

static int count_row(void *ud, const ess_es_row_t *row)
{
    (*(size_t *)ud)++;
    return 0;
}

static int write_row(void *ud, const ess_es_row_t *row)
{
    snapw_t *w = ud;
    ess_regrec_snapshot_row(&w->parts[w->total / ESS_REGREC_SNAPSHOT_ROWS], row);
    w->total++;
    return 0;
}

/* Publish the live rows as of s->applied, in parts. */
static void write_snapshot(stream_registry_t *s)
{
    size_t n = 0;
    if (s->rebuild) /* an incomplete view must never become a snapshot */
        return;
    if (ess_registry_list(s->view, count_row, &n) != ESS_OK || s->pub == NULL || !s->pub_ready)
        return;
    size_t nparts = n == 0 ? 1 : (n + ESS_REGREC_SNAPSHOT_ROWS - 1) / ESS_REGREC_SNAPSHOT_ROWS;
    if (nparts > UINT16_MAX) {
        ess_log_error("registry: %zu rows are too many for one snapshot", n);
        return;
    }
    snapw_t w = {s, ess_xcalloc(nparts, sizeof(ess_buf_t)), nparts, 0, 0};
    /* Headers need each part's row count: the last part has the rest. */
    for (size_t i = 0; i < nparts; i++) {
        size_t rows = i + 1 < nparts ? ESS_REGREC_SNAPSHOT_ROWS : n - i * ESS_REGREC_SNAPSHOT_ROWS;
        ess_regrec_snapshot(&w.parts[i], s->ref, s->applied, (uint16_t)i, (uint16_t)nparts,
                            (uint16_t)rows);
    }
    int ok = ess_registry_list(s->view, write_row, &w) == ESS_OK && w.total == n;
    for (size_t i = 0; i < nparts; i++) {
        uint64_t id;
        if (ok && publish(s->pub, &w.parts[i], &id) != ESS_OK)
            ok = 0;
        ess_buf_free(&w.parts[i]);
    }
    free(w.parts);
    if (ok)
        ess_log_info("registry: wrote a snapshot of %zu rows as of offset %" PRId64 " (%zu parts)",
                     n, s->applied, nparts);
    s->since_snapshot = 0;
}

static int snap_row(void *ud, const ess_es_row_t *row)
{
    stream_registry_t *s = ud;
    if (s->nsnap == s->snapcap) {
        s->snapcap = s->snapcap ? s->snapcap * 2 : 256;
        s->snap = ess_xrealloc(s->snap, s->snapcap * sizeof *s->snap);
    }
    snaprow_t *r = &s->snap[s->nsnap++];
    r->row = *row;
    memcpy(r->rk, row->routing_key, row->routing_key_len);
    r->rk[row->routing_key_len] = '\0';
    r->row.routing_key = r->rk;
    return 0;
}

/* A snapshot part read while rebuilding; a complete snapshot replaces the
 * view and the follower reads again from its offset + 1. */
static void rebuild_part(stream_registry_t *s, const ess_regrec_t *rec)
{
    int same = rec->part > 0 && rec->at == s->snap_at && rec->parts == s->snap_parts &&
               rec->part == s->snap_next && rec->ref_len == strlen(s->snap_ref) &&
               memcmp(rec->ref, s->snap_ref, rec->ref_len) == 0;
    if (rec->part == 0) {
        s->nsnap = 0;
        s->snap_at = rec->at;
        s->snap_parts = rec->parts;
        snprintf(s->snap_ref, sizeof s->snap_ref, "%.*s", (int)rec->ref_len, rec->ref);
    } else if (!same) {
        s->snap_parts = 0; /* a part out of order: wait for the next snapshot */
        return;
    }
    if (s->snap_parts == 0)
        return;
    ess_regrec_rows(rec, snap_row, s);
    s->snap_next = (uint16_t)(rec->part + 1);
    if (s->snap_next < s->snap_parts)
        return;
    if (ess__view_clear(s->view) != ESS_OK) {
        s->tx_failed = 1;
        return;
    }
    for (size_t i = 0; i < s->nsnap; i++)
        if (ess__view_insert(s->view, &s->snap[i].row) != ESS_OK)
            s->tx_failed = 1;
    ess_log_info("registry: rebuilt the view from a snapshot of %zu rows as of offset %" PRId64
                 "; reading %s again from offset %" PRId64,
                 s->nsnap, s->snap_at, s->stream, s->snap_at + 1);
    s->rebuild = 0;
    s->applied = s->snap_at;
    s->resume_from = s->snap_at + 1;
    s->snap_parts = 0;
    s->nsnap = 0;
}

/* ---- following -------------------------------------------------------- */

static void start_follow(stream_registry_t *s, int64_t from);

static void commit_now(stream_registry_t *s)
{
    if (!s->in_tx)
        return;
    char v[32];
    snprintf(v, sizeof v, "%" PRId64, s->applied);
    if (!s->tx_failed && ess__view_meta_set(s->view, "applied", v) != ESS_OK)
        s->tx_failed = 1;
    if (ess__view_commit(s->view) != ESS_OK || s->tx_failed) {
        /* The view could not keep what was applied: read it again from the
         * last committed offset (the rolled-back records are replayed). */
        char buf[32];
        s->applied = ess__view_meta_get(s->view, "applied", buf, sizeof buf) == ESS_OK
                         ? strtoll(buf, NULL, 10)
                         : -1;
        ess_log_error("registry: the local view could not commit; reading %s again from "
                      "offset %" PRId64,
                      s->stream, s->applied + 1);
        s->resume_from = s->applied + 1;
    }
    s->in_tx = 0;
    s->tx_failed = 0;
    if (s->resume_from >= 0) {
        int64_t from = s->resume_from;
        s->resume_from = -1;
        start_follow(s, from);
    }
    pending_settle(s);
    if (s->want_snapshot) {
        s->want_snapshot = 0;
        write_snapshot(s);
    }
}

static void on_commit_timer(uv_timer_t *t)
{
    commit_now(t->data);
}

static int is_mine(stream_registry_t *s, const ess_regrec_t *rec)
{
    return rec->ref_len == strlen(s->ref) && memcmp(rec->ref, s->ref, rec->ref_len) == 0;
}

static void apply(stream_registry_t *s, const ess_regrec_t *rec, uint64_t offset)
{
    switch (rec->type) {
    case ESS_REGREC_CREATED: {
        ess_es_row_t row = rec->row;
        row.id = (int64_t)offset + 1;
        if (ess__view_insert(s->view, &row) != ESS_OK)
            s->tx_failed = 1;
        if (is_mine(s, rec))
            for (pending_t *p = s->pending; p; p = p->next)
                if (p->kind == P_CREATE && !p->applied && strcmp(p->uuid, row.uuid) == 0) {
                    p->applied = 1;
                    p->status = ESS_OK;
                    p->row = row;
                    p->row.routing_key = p->rk;
                }
        s->since_snapshot++;
        break;
    }
    case ESS_REGREC_DELETED: {
        ess_es_row_t removed;
        int rc = ess__view_remove(s->view, rec->id, &removed);
        if (rc == ESS_OK && s->base.listener)
            s->base.listener(s->base.listener_ud, ESS_REGISTRY_DELETED, &removed);
        if (rc != ESS_OK && rc != ESS_ENOTFOUND)
            s->tx_failed = 1;
        if (is_mine(s, rec))
            for (pending_t *p = s->pending; p; p = p->next)
                if (p->kind == P_DELETE && !p->applied && p->nonce == rec->nonce) {
                    p->applied = 1;
                    p->status = rc == ESS_OK ? ESS_OK : ESS_ENOTFOUND;
                    if (rc == ESS_OK) {
                        p->row = removed;
                        size_t n = removed.routing_key_len;
                        memcpy(p->rk, removed.routing_key, n);
                        p->rk[n] = '\0';
                        p->row.routing_key = p->rk;
                    }
                }
        s->since_snapshot++;
        break;
    }
    case ESS_REGREC_SNAPSHOT:
        if (rec->part == 0)
            s->since_snapshot = 0;
        break;
    default: break; /* claims and barriers change nothing here */
    }
    if (s->since_snapshot >= s->snapshot_every && is_mine(s, rec) &&
        (rec->type == ESS_REGREC_CREATED || rec->type == ESS_REGREC_DELETED))
        s->want_snapshot = 1;
}

static void on_message(ess_stream_sub_t *sub, const ess_stream_msg_t *msg, void *ud)
{
    stream_registry_t *s = ud;
    if (s->resume_from >= 0)
        return; /* about to read again from an earlier offset */
    int64_t off = (int64_t)msg->offset;
    if (off <= s->applied && !s->rebuild)
        return; /* before where the subscription was asked to start */
    if (s->first_seen < 0) {
        s->first_seen = off;
        /* A segment of a stream with tracked writers (the named registry
         * publishers) starts with a tracking chunk that takes one offset:
         * a gap of one is not a loss (docs/brokers.md), two or more is. */
        if (s->applied < 0 && off > 1) {
            s->rebuild = 1;
            ess_log_warn("registry: %s starts at offset %" PRId64 " (retention removed the "
                         "records before it) and the local view is empty: rebuilding from the "
                         "next snapshot",
                         s->stream, off);
        } else if (s->applied >= 0 && off > s->applied + 2) {
            s->rebuild = 1;
            ess_log_warn("registry: %s continues at offset %" PRId64 " but the local view has "
                         "applied up to %" PRId64 ": records may have been removed by "
                         "retention; rebuilding from the next snapshot",
                         s->stream, off, s->applied);
        }
    }
    if (!s->in_tx) {
        if (ess__view_begin(s->view) != ESS_OK)
            return; /* not applied, not acknowledged: read again after a restart */
        s->in_tx = 1;
        uv_timer_start(&s->commit, on_commit_timer, 0, 0);
    }
    ess_regrec_t rec;
    const char *why = NULL;
    if (ess_regrec_decode(msg->body, msg->len, &rec, &why) != ESS_OK) {
        ess_log_warn("registry: skipping the malformed record at offset %" PRId64 " of %s: %s", off,
                     s->stream, why);
        ess_metrics_add("ess_registry_records_malformed_total", "", 1);
    } else if (s->rebuild) {
        /* Creates and deletes are applied (idempotent); a complete
         * snapshot then replaces the view. */
        if (rec.type == ESS_REGREC_SNAPSHOT)
            rebuild_part(s, &rec);
        else
            apply(s, &rec, (uint64_t)off);
        if (s->rebuild)
            return; /* the offset is not advanced while rebuilding */
    } else {
        apply(s, &rec, (uint64_t)off);
    }
    if (s->resume_from < 0 && off > s->applied)
        s->applied = off;
    s->replayed++;
    ess_metrics_add("ess_registry_records_applied_total", "", 1);
}

static void on_subscribed(ess_stream_sub_t *sub, int status, void *ud)
{
    stream_registry_t *s = ud;
    if (status != ESS_OK) {
        s->sub = NULL;
        s->sub_ready = 0;
        set_why(s, "cannot follow the registry stream: %s", ess_strerror(status));
        return;
    }
    s->sub_ready = 1;
}

static void on_ended(ess_stream_sub_t *sub, int reason, void *ud)
{
    stream_registry_t *s = ud;
    s->sub = NULL;
    s->sub_ready = 0;
    set_why(s, "the registry stream subscription ended: %s", ess_strerror(reason));
    if (reason == ESS_ENOTFOUND && s->applied >= 0) {
        s->missing = 1;
        set_why(s,
                "the registry stream %s was deleted; the local view keeps what it applied, "
                "but no create or delete is possible until it exists again",
                s->stream);
    }
}

static void start_follow(stream_registry_t *s, int64_t from)
{
    if (s->sub) {
        ess_stream_unsubscribe(s->sub);
        s->sub = NULL;
    }
    s->sub_ready = 0;
    s->first_seen = -1;
    ess_offset_spec_t spec = {.kind = ESS_OFFSET_FIRST};
    if (from > 0) {
        spec.kind = ESS_OFFSET_ABS;
        spec.offset = (uint64_t)from;
    }
    static const ess_stream_sub_cbs_t cbs = {on_subscribed, on_message, on_ended};
    if (ess_stream_subscribe(s->client, s->stream, spec, &cbs, s, &s->sub) != ESS_OK)
        s->sub = NULL;
}

/* Claims: every replica reads the control stream from its end at start. */
static void on_claim_message(ess_stream_sub_t *sub, const ess_stream_msg_t *msg, void *ud)
{
    stream_registry_t *s = ud;
    ess_regrec_t rec;
    const char *why;
    if (ess_regrec_decode(msg->body, msg->len, &rec, &why) != ESS_OK ||
        rec.type != ESS_REGREC_CLAIM) {
        ess_metrics_add("ess_registry_records_malformed_total", "", 1);
        return;
    }
    ess_es_row_t row = {.id = rec.id, .token = rec.nonce};
    if (s->base.listener)
        s->base.listener(s->base.listener_ud, ESS_REGISTRY_CLAIMED, &row);
}

static void on_claim_subscribed(ess_stream_sub_t *sub, int status, void *ud)
{
    stream_registry_t *s = ud;
    if (status != ESS_OK)
        s->claim_sub = NULL;
}

static void on_claim_ended(ess_stream_sub_t *sub, int reason, void *ud)
{
    stream_registry_t *s = ud;
    s->claim_sub = NULL;
}

/* ---- set-up and retries ----------------------------------------------- */

static void setup(stream_registry_t *s);

static void declare_pub(stream_registry_t *s)
{
    static const ess_stream_pub_cbs_t cbs = {on_pub_ready, on_pub_confirm};
    if (ess_stream_publisher_create_ref(s->client, s->stream, s->ref, &cbs, s, &s->pub) != ESS_OK)
        s->pub = NULL;
}

static void on_stream_created(int status, void *ud)
{
    stream_registry_t *s = ud;
    s->creating = 0;
    if (status == ESS_OK)
        ess_log_info("registry: created the stream %s", s->stream);
    if (status != ESS_OK && status != ESS_ESTATE) {
        set_why(s, "cannot create the registry stream: %s", ess_strerror(status));
        return;
    }
    s->created = 1;
    setup(s);
}

static void on_stream_exists(int status, void *ud)
{
    stream_registry_t *s = ud;
    s->creating = 0;
    if (status == ESS_OK) {
        s->missing = 0;
        s->created = 1;
        setup(s);
    } else if (status == ESS_ENOTFOUND) {
        s->missing = 1;
        set_why(s,
                "the registry stream %s does not exist but the local view has applied records "
                "from it: not re-creating it (ids would be reused); restore the stream or "
                "start this replica with an empty database",
                s->stream);
    }
}

static void on_claims_created(int status, void *ud)
{
    stream_registry_t *s = ud;
    s->claims_creating = status == ESS_OK || status == ESS_ESTATE ? 2 : 0;
    if (s->claims_creating == 2)
        setup(s);
}

static void setup(stream_registry_t *s)
{
    if (s->client == NULL)
        return;
    if (!s->created && !s->creating) {
        s->creating = 1;
        if (s->applied >= 0) {
            /* Never re-create a stream whose records this view holds. */
            ess_stream_exists(s->client, s->stream, on_stream_exists, s);
        } else {
            char cs[16], mb[32], seg[32];
            ess_proto_kv_t args[3];
            size_t n = 0;
            snprintf(cs, sizeof cs, "%d", s->cluster_size);
            snprintf(mb, sizeof mb, "%" PRId64, s->max_bytes);
            snprintf(seg, sizeof seg, "%" PRId64, s->segment_bytes);
            if (s->cluster_size > 0)
                args[n++] = (ess_proto_kv_t){"initial-cluster-size", cs};
            if (s->max_bytes > 0)
                args[n++] = (ess_proto_kv_t){"max-length-bytes", mb};
            if (s->segment_bytes > 0)
                args[n++] = (ess_proto_kv_t){"stream-max-segment-size-bytes", seg};
            ess_stream_create_stream(s->client, s->stream, args, n, on_stream_created, s);
        }
        return;
    }
    if (!s->created)
        return;
    if (s->pub == NULL && !s->missing)
        declare_pub(s);
    if (s->sub == NULL && !s->missing && s->resume_from < 0)
        start_follow(s, s->applied + 1);
    if (s->claims_creating == 0) {
        s->claims_creating = 1;
        char cs[16];
        snprintf(cs, sizeof cs, "%d", s->cluster_size);
        ess_proto_kv_t args[4] = {{"max-age", CLAIMS_MAX_AGE},
                                  {"max-length-bytes", CLAIMS_MAX_BYTES},
                                  {"stream-max-segment-size-bytes", CLAIMS_SEGMENT_BYTES},
                                  {"initial-cluster-size", cs}};
        ess_stream_create_stream(s->client, s->claims, args, s->cluster_size > 0 ? 4 : 3,
                                 on_claims_created, s);
    } else if (s->claims_creating == 2) {
        if (s->claim_pub == NULL) {
            static const ess_stream_pub_cbs_t cbs = {on_claim_pub_ready, on_claim_confirm};
            if (ess_stream_publisher_create(s->client, s->claims, &cbs, s, &s->claim_pub) != ESS_OK)
                s->claim_pub = NULL;
        }
        if (s->claim_sub == NULL) {
            static const ess_stream_sub_cbs_t cbs = {on_claim_subscribed, on_claim_message,
                                                     on_claim_ended};
            ess_offset_spec_t next = {.kind = ESS_OFFSET_NEXT};
            if (ess_stream_subscribe(s->client, s->claims, next, &cbs, s, &s->claim_sub) != ESS_OK)
                s->claim_sub = NULL;
        }
    }
}

static void on_retry(uv_timer_t *t)
{
    stream_registry_t *s = t->data;
    if (s->pub != NULL && s->pub_dead) {
        ess_stream_publisher_close(s->pub);
        s->pub = NULL;
        s->pub_dead = 0;
    }
    if (s->claim_pub != NULL && s->claim_pub_dead) {
        ess_stream_publisher_close(s->claim_pub);
        s->claim_pub = NULL;
        s->claim_pub_dead = 0;
    }
    if (s->missing)
        s->created = 0; /* ask again whether it exists */
    for (;;) {          /* read-your-writes waits past their deadline */
        pending_t *p = s->pending;
        while (p && !(p->kind == P_SYNC && uv_now(s->loop) >= p->deadline))
            p = p->next;
        if (p == NULL)
            break;
        pending_finish(s, p, ESS_ECONN);
    }
    if (!writable_now(s)) {
        fail_all(s, P_CREATE, ESS_ECONN);
        fail_all(s, P_DELETE, ESS_ECONN);
    }
    setup(s);
}

/* ---- read-your-writes ------------------------------------------------- */

static void probe(stream_registry_t *s);

static void on_tail(int status, int64_t last, void *ud)
{
    stream_registry_t *s = ud;
    s->probing = 0;
    for (pending_t *p = s->pending; p; p = p->next)
        if (p->kind == P_SYNC && p->target == -3)
            p->target = status == ESS_OK ? last : -4;
    /* A failed probe: those waiters are told at once (they answer "unknown"). */
    for (;;) {
        pending_t *p = s->pending;
        while (p && !(p->kind == P_SYNC && p->target == -4))
            p = p->next;
        if (p == NULL)
            break;
        pending_finish(s, p, ESS_ECONN);
    }
    if (!s->in_tx)
        pending_settle(s);
    if (s->probe_again) {
        s->probe_again = 0;
        probe(s);
    }
}

/* One tail probe for every waiter that arrived before it started
 * (target -2 -> -3); later arrivals wait for the next one. */
static void probe(stream_registry_t *s)
{
    int any = 0;
    for (pending_t *p = s->pending; p; p = p->next)
        if (p->kind == P_SYNC && p->target == -2) {
            p->target = -3;
            any = 1;
        }
    if (!any)
        return;
    s->probing = 1;
    if (ess_stream_tail(s->client, s->stream, on_tail, s) != ESS_OK) {
        s->probing = 0;
        on_tail(ESS_ECONN, -1, s);
    }
}

static int st_sync(ess_registry_t *r, ess_registry_done_fn done, void *ud)
{
    stream_registry_t *s = of(r);
    if (s->client == NULL || !s->sub_ready)
        return ESS_ECONN;
    if (s->nsync >= MAX_SYNC_WAITERS)
        return ESS_ETOOBIG;
    pending_t *p = pending_add(s, P_SYNC, done, ud);
    p->target = -2;
    p->deadline = uv_now(s->loop) + (uint64_t)s->timeout_ms;
    if (s->probing)
        s->probe_again = 1;
    else
        probe(s);
    return ESS_OK;
}

/* ---- life cycle ------------------------------------------------------- */

void ess_registry_stream_stop(ess_registry_t *r)
{
    if (!ess_registry_is_stream(r))
        return;
    stream_registry_t *s = of(r);
    if (s->stopped)
        return;
    s->stopped = 1;
    if (s->in_tx)
        commit_now(s);
    fail_all(s, P_CREATE, ESS_ECONN);
    fail_all(s, P_DELETE, ESS_ECONN);
    fail_all(s, P_SYNC, ESS_ECONN);
    if (s->client) {
        ess_stream_client_close(s->client, NULL, NULL);
        s->client = NULL;
        s->pub = s->claim_pub = NULL;
        s->sub = s->claim_sub = NULL;
        s->pub_ready = s->sub_ready = s->claim_pub_ready = 0;
    }
    if (s->loop) {
        uv_close((uv_handle_t *)&s->retry, NULL);
        uv_close((uv_handle_t *)&s->commit, NULL);
    }
    snprintf(s->why, sizeof s->why, "essd is stopping");
}

/* After ess_registry_stream_stop and a loop run (main.c), or before start. */
static void st_close(ess_registry_t *r)
{
    stream_registry_t *s = of(r);
    if (s->in_tx)
        commit_now(s);
    while (s->pending) {
        pending_t *p = s->pending;
        s->pending = p->next;
        free(p);
    }
    ess_registry_close(s->view);
    free(s->snap);
    free(s->url);
    free(s->stream);
    free(s->claims);
    ess_buf_free(&s->scratch);
    free(s->base.routing_key_buf);
    free(s);
}

static const ess_registry_ops_t stream_ops = {
    .create = st_sync_create,
    .remove = st_sync_remove,
    .list = st_list,
    .find_uuid = st_find_uuid,
    .count = st_count,
    .close = st_close,
    .writable = st_writable,
    .create_async = st_create_async,
    .remove_async = st_remove_async,
    .sync = st_sync,
    .forget = st_forget,
    .claim = st_claim,
};

int ess_registry_is_stream(const ess_registry_t *r)
{
    return r != NULL && r->ops == &stream_ops;
}

int ess_registry_open_stream(const ess_config_t *cfg, ess_registry_t **out, char *err,
                             size_t errlen)
{
    ess_registry_t *view;
    int rc = ess_registry_open_sqlite(cfg->database_path, &view, err, errlen);
    if (rc != ESS_OK)
        return rc;
    stream_registry_t *s = ess_xcalloc(1, sizeof *s);
    s->base.ops = &stream_ops;
    s->view = view;
    s->url = ess_xstrdup(cfg->broker_url);
    s->stream = ess_xstrdup(cfg->registry_stream);
    size_t n = strlen(cfg->registry_stream) + sizeof "-claims";
    s->claims = ess_xmalloc(n);
    snprintf(s->claims, n, "%s-claims", cfg->registry_stream);
    s->stream_port = cfg->stream_port;
    s->lb_mode = cfg->load_balancer_mode;
    s->heartbeat_s = cfg->heartbeat_s;
    s->rmin = cfg->reconnect_min_ms;
    s->rmax = cfg->reconnect_max_ms;
    s->cluster_size = cfg->registry_initial_cluster_size;
    s->max_bytes = cfg->registry_max_length_bytes;
    s->segment_bytes = cfg->registry_max_segment_size_bytes;
    s->snapshot_every = cfg->registry_snapshot_every;
    s->timeout_ms = cfg->registry_timeout_ms;
    s->applied = -1;
    s->first_seen = -1;
    s->resume_from = -1;

    /* The view belongs to one registry stream: rows from the SQLite backend
     * or from another stream are not in the shared log, so they go. */
    char buf[256];
    int have = ess__view_meta_get(view, "stream", buf, sizeof buf) == ESS_OK;
    if (!have || strcmp(buf, s->stream) != 0) {
        int64_t rows = ess_registry_count(view);
        if (ess__view_begin(view) != ESS_OK || ess__view_clear(view) != ESS_OK ||
            ess__view_meta_set(view, "stream", s->stream) != ESS_OK ||
            ess__view_meta_set(view, "applied", "-1") != ESS_OK ||
            ess__view_commit(view) != ESS_OK) {
            snprintf(err, errlen, "%s: cannot prepare the registry view", cfg->database_path);
            ess_registry_close(view);
            free(s->url), free(s->stream), free(s->claims), free(s);
            return ESS_EIO;
        }
        if (rows > 0)
            ess_log_warn("registry: %s held %" PRId64 " rows that are not from the registry "
                         "stream %s; the view now starts empty and follows the stream",
                         cfg->database_path, rows, s->stream);
    } else if (ess__view_meta_get(view, "applied", buf, sizeof buf) == ESS_OK) {
        s->applied = strtoll(buf, NULL, 10);
    }
    if (ess__view_meta_get(view, "replica", buf, sizeof buf) != ESS_OK) {
        snprintf(buf, sizeof buf, "%016" PRIx64, rand64());
        ess__view_meta_set(view, "replica", buf);
    }
    snprintf(s->ref, sizeof s->ref, "essd-registry-%.32s", buf);
    *out = &s->base;
    return ESS_OK;
}

int ess_registry_stream_start(ess_registry_t *r, uv_loop_t *loop, char *err, size_t errlen)
{
    stream_registry_t *s = of(r);
    ess_stream_client_opts_t opts = {
        .url = s->url,
        .stream_port = s->stream_port,
        .load_balancer_mode = s->lb_mode,
        .heartbeat_s = s->heartbeat_s,
        .reconnect_min_ms = s->rmin,
        .reconnect_max_ms = s->rmax,
        .connection_name = "essd-registry",
    };
    if (ess_stream_client_create(loop, &opts, &s->client) != ESS_OK) {
        snprintf(err, errlen, "broker.url: not a valid amqp:// URL");
        return ESS_EINVAL;
    }
    s->loop = loop;
    uv_timer_init(loop, &s->retry);
    uv_timer_init(loop, &s->commit);
    s->retry.data = s;
    s->commit.data = s;
    uv_timer_start(&s->retry, on_retry, RETRY_MS, RETRY_MS);
    uv_unref((uv_handle_t *)&s->retry);
    uv_unref((uv_handle_t *)&s->commit);
    if (s->applied >= 0)
        ess_log_info("registry: following %s from offset %" PRId64 " (the local view has "
                     "applied up to %" PRId64 "; only the tail is replayed)",
                     s->stream, s->applied + 1, s->applied);
    else
        ess_log_info("registry: following %s from its first record (the local view is empty)",
                     s->stream);
    snprintf(s->why, sizeof s->why, "connecting to the registry stream %s", s->stream);
    setup(s);
    return ESS_OK;
}
