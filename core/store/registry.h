/*
 * The event-stream registry: which event streams exist, their ids, uuids
 * and routing keys. A small vtable so that a shared backend (for several
 * essd replicas) can be added beside the SQLite one without touching the
 * callers.
 */
#ifndef ESS_REGISTRY_H
#define ESS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "util/uuid.h"

#define ESS_ROUTING_KEY_MAX 255

typedef struct {
    int64_t id;
    char uuid[ESS_UUID_LEN + 1];
    const char *routing_key; /* borrowed: see each function */
    size_t routing_key_len;
    int64_t created_ms;
} ess_es_row_t;

typedef struct ess_registry_s ess_registry_t;

/* Called once per row in id order; the row is borrowed for the call. Non-zero stops. */
typedef int (*ess_registry_row_cb)(void *ud, const ess_es_row_t *row);

typedef struct {
    int (*create)(ess_registry_t *r, const char *rk, size_t rklen, ess_es_row_t *out);
    int (*remove)(ess_registry_t *r, int64_t id, ess_es_row_t *removed);
    int (*list)(ess_registry_t *r, ess_registry_row_cb cb, void *ud);
    int (*find_uuid)(ess_registry_t *r, const char *uuid, ess_es_row_t *out);
    int64_t (*count)(ess_registry_t *r);
    void (*close)(ess_registry_t *r);
    int (*writable)(ess_registry_t *r, char *why, size_t whylen);
} ess_registry_ops_t;

/* Registry changes, for subscribers (the gateway closes the live session
 * of a deleted event stream). */
typedef enum {
    ESS_REGISTRY_DELETED = 1,
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

/** 1 when a routing key is acceptable: 1..255 bytes, valid UTF-8, no control characters. */
int ess_routing_key_valid(const char *rk, size_t len);

#endif
