/*
 * The event-stream registry: which event streams exist, their ids, uuids
 * and routing keys. A small vtable with two backends: SQLite (one process;
 * create and delete are synchronous) and the shared stream log
 * (registry_stream.c: several replicas; create and delete are asynchronous,
 * reads stay synchronous on the local materialised view).
 */
#ifndef ESS_REGISTRY_H
#define ESS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "ess.h"
#include "util/uuid.h"

#define ESS_ROUTING_KEY_MAX 255

typedef struct {
    int64_t id;
    char uuid[ESS_UUID_LEN + 1];
    const char *routing_key; /* borrowed: see each function */
    size_t routing_key_len;
    int64_t created_ms;
    uint64_t token; /* ESS_REGISTRY_CLAIMED only: the claiming session's token */
} ess_es_row_t;

typedef struct ess_registry_s ess_registry_t;

/* Called once per row in id order; the row is borrowed for the call. Non-zero stops. */
typedef int (*ess_registry_row_cb)(void *ud, const ess_es_row_t *row);

/* The outcome of an asynchronous create/delete/sync: status ESS_OK (row:
 * the created or deleted row, borrowed for the call; NULL for sync),
 * ESS_ENOTFOUND (delete of an absent id; sync: nothing), ESS_ECONN (the
 * registry stream is unavailable), ESS_EIO. */
typedef void (*ess_registry_done_fn)(void *ud, int status, const ess_es_row_t *row);

typedef struct {
    int (*create)(ess_registry_t *r, const char *rk, size_t rklen, ess_es_row_t *out);
    int (*remove)(ess_registry_t *r, int64_t id, ess_es_row_t *removed);
    int (*list)(ess_registry_t *r, ess_registry_row_cb cb, void *ud);
    int (*find_uuid)(ess_registry_t *r, const char *uuid, ess_es_row_t *out);
    int64_t (*count)(ess_registry_t *r);
    void (*close)(ess_registry_t *r);
    int (*writable)(ess_registry_t *r, char *why, size_t whylen);
    /* Asynchronous backends only (NULL for SQLite). Each returns ESS_OK and
     * calls done later (never synchronously) exactly once unless forgotten,
     * or an error at once without calling it. */
    int (*create_async)(ess_registry_t *r, const char *rk, size_t rklen,
                        ess_registry_done_fn done, void *ud);
    int (*remove_async)(ess_registry_t *r, int64_t id, ess_registry_done_fn done, void *ud);
    /* Read the shared log to its tail: done(ESS_OK) once the local view has
     * applied everything committed when the call was made. */
    int (*sync)(ess_registry_t *r, ess_registry_done_fn done, void *ud);
    /* Drop every pending callback registered with ud (the caller gave up). */
    void (*forget)(ess_registry_t *r, void *ud);
    /* Tell every replica that a session for es_id opened (token: the session's). */
    void (*claim)(ess_registry_t *r, int64_t es_id, uint64_t token);
} ess_registry_ops_t;

/* Registry changes, for subscribers (the gateway closes the live session
 * of a deleted event stream). */
typedef enum {
    ESS_REGISTRY_DELETED = 1, /* row: the deleted row */
    ESS_REGISTRY_CLAIMED = 2, /* row: id and token of a claim read from the log, in log order */
} ess_registry_event_t;

/* Called after the change is committed; row is borrowed for the call. */
typedef void (*ess_registry_listener_fn)(void *ud, ess_registry_event_t ev,
                                         const ess_es_row_t *row);

struct ess_registry_s {
    const ess_registry_ops_t *ops;
    char *routing_key_buf; /* owned: holds the routing key of the last returned row */
    size_t routing_key_cap;
    ess_registry_listener_fn listener; /* one subscriber, or NULL (zeroed by the backend) */
    void *listener_ud;
};

/**
 * Open (creating and migrating when needed) the SQLite registry at path.
 * A file that is not a database, fails its integrity check, has a newer
 * schema, or cannot be written stops with ESS_ECORRUPT / ESS_EIO and a
 * message in err; it is never replaced. The caller closes with
 * ess_registry_close.
 */
int ess_registry_open_sqlite(const char *path, ess_registry_t **out, char *err, size_t errlen);

/**
 * Create an event stream with a new uuid. The row is committed to disk
 * before this returns ESS_OK. out->routing_key is borrowed until the next
 * call on r. ESS_EINVAL for an invalid routing key, ESS_EIO otherwise.
 */
static inline int ess_registry_create(ess_registry_t *r, const char *rk, size_t rklen,
                                      ess_es_row_t *out)
{
    return r->ops->create(r, rk, rklen, out);
}

/**
 * Delete by id; fills removed (may be NULL; routing key borrowed).
 * ESS_ENOTFOUND if absent. The listener hears ESS_REGISTRY_DELETED after
 * the row is gone.
 */
static inline int ess_registry_delete(ess_registry_t *r, int64_t id, ess_es_row_t *removed)
{
    ess_es_row_t row;
    int rc = r->ops->remove(r, id, &row);
    if (rc == 0 && r->listener)
        r->listener(r->listener_ud, ESS_REGISTRY_DELETED, &row);
    if (rc == 0 && removed)
        *removed = row;
    return rc;
}

/** Set (or clear, with NULL) the one listener of registry changes. */
static inline void ess_registry_listen(ess_registry_t *r, ess_registry_listener_fn fn, void *ud)
{
    r->listener = fn;
    r->listener_ud = ud;
}

static inline int ess_registry_list(ess_registry_t *r, ess_registry_row_cb cb, void *ud)
{
    return r->ops->list(r, cb, ud);
}

/** Look up by uuid; out->routing_key borrowed until the next call. ESS_ENOTFOUND if absent. */
static inline int ess_registry_find_uuid(ess_registry_t *r, const char *uuid, ess_es_row_t *out)
{
    return r->ops->find_uuid(r, uuid, out);
}

static inline int64_t ess_registry_count(ess_registry_t *r)
{
    return r->ops->count(r);
}

/**
 * 1 when writes succeed, else 0 with the reason in why. Answers from the
 * last write's outcome while it is fresh (the SQLite backend: 5 s), else
 * makes a small probe write; a failed request write counts at once.
 */
static inline int ess_registry_writable(ess_registry_t *r, char *why, size_t whylen)
{
    return r->ops->writable(r, why, whylen);
}

static inline void ess_registry_close(ess_registry_t *r)
{
    if (r != NULL)
        r->ops->close(r);
}

/** 1 when create/delete are asynchronous (use ess_registry_*_async). */
static inline int ess_registry_is_async(const ess_registry_t *r)
{
    return r->ops->create_async != NULL;
}

static inline int ess_registry_create_async(ess_registry_t *r, const char *rk, size_t rklen,
                                            ess_registry_done_fn done, void *ud)
{
    return r->ops->create_async(r, rk, rklen, done, ud);
}

/** The listener hears ESS_REGISTRY_DELETED on every replica when the record is applied. */
static inline int ess_registry_delete_async(ess_registry_t *r, int64_t id,
                                            ess_registry_done_fn done, void *ud)
{
    return r->ops->remove_async(r, id, done, ud);
}

/** ESS_ENOTSUP when the backend has nothing to catch up with (SQLite). */
static inline int ess_registry_sync(ess_registry_t *r, ess_registry_done_fn done, void *ud)
{
    return r->ops->sync ? r->ops->sync(r, done, ud) : ESS_ENOTSUP;
}

static inline void ess_registry_forget(ess_registry_t *r, void *ud)
{
    if (r->ops->forget)
        r->ops->forget(r, ud);
}

/** Publish a connection claim (no-op for SQLite, where the gateway's index is the whole truth). */
static inline void ess_registry_claim(ess_registry_t *r, int64_t es_id, uint64_t token)
{
    if (r->ops->claim)
        r->ops->claim(r, es_id, token);
}

/* The stream backend (registry_stream.c). */
struct ess_config_s;
typedef struct uv_loop_s uv_loop_t;

/**
 * Open the stream backend: its local view is the SQLite database at
 * cfg->database_path (opened as ess_registry_open_sqlite does). Nothing
 * talks to the broker until ess_registry_stream_start.
 */
int ess_registry_open_stream(const struct ess_config_s *cfg, ess_registry_t **out, char *err,
                             size_t errlen);

/** Start following the registry stream on loop (creates the streams when missing). */
int ess_registry_stream_start(ess_registry_t *r, uv_loop_t *loop, char *err, size_t errlen);

/** Stop talking to the broker (before the loop ends): pending requests fail
 *  with ESS_ECONN, the client and timers close. Reads keep working. Any
 *  backend (a no-op but for the stream one). */
void ess_registry_stream_stop(ess_registry_t *r);

/** 1 when an ess_registry_t is the stream backend. */
int ess_registry_is_stream(const ess_registry_t *r);

/** 1 when a routing key is acceptable: 1..255 bytes, valid UTF-8, no control characters. */
int ess_routing_key_valid(const char *rk, size_t len);

#endif
