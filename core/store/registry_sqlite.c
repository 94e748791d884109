/*
 * The SQLite registry backend: WAL journal, synchronous=FULL so that a
 * committed create survives power loss, versioned migrations through
 * user_version, and prepared statements only (no SQL is ever built from
 * input). It owns the database handle and the record of whether writes
 * succeed (the readiness answer); it does not know about HTTP or Lua.
 *
 * essd is the database's only user, so the connection runs in exclusive
 * locking mode, set before WAL is entered: SQLite then keeps the WAL index
 * in heap memory instead of a shared mapping of the -shm file, so no fault
 * on that file (immutable, truncated, full disk) can kill the process with
 * SIGBUS. The cost: while essd runs, other processes (the sqlite3 CLI
 * included) get "database is locked".
 */
#include "store/registry.h"
#include "store/registry_view.h"
#include "ess.h"
#include "util/log.h"
#include "util/utf8.h"

#include <errno.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 1

/* How long the outcome of the last write (a request's or a probe's) stands
 * for the readiness answer before a probe write is made again. */
#define WRITE_FRESH_MS 5000

typedef struct {
    ess_registry_t base;
    sqlite3 *db;
    sqlite3_stmt *insert, *remove, *list, *by_uuid, *count;
    sqlite3_stmt *insert_id, *meta_get, *meta_set, *by_id; /* the stream backend's view, lazily */
    int write_failed;      /* the last write failed: not ready */
    int64_t write_at_ms;   /* monotonic time of the last write outcome, 0 = none */
    char write_error[256]; /* why the last write failed */
} sqlite_registry_t;

static const char *migrations[SCHEMA_VERSION] = {
    /* 1: the event-stream table. AUTOINCREMENT keeps ids from being reused
     * even after the newest row is deleted. */
    "CREATE TABLE event_stream ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " uuid TEXT NOT NULL UNIQUE,"
    " routing_key TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL)",
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void keep_routing_key(ess_registry_t *r, ess_es_row_t *row, const void *rk, size_t len)
{
    if (r->routing_key_cap < len + 1) {
        r->routing_key_cap = len + 1 < 256 ? 256 : len + 1;
        r->routing_key_buf = ess_xrealloc(r->routing_key_buf, r->routing_key_cap);
    }
    if (len)
        memcpy(r->routing_key_buf, rk, len);
    r->routing_key_buf[len] = '\0';
    row->routing_key = r->routing_key_buf;
    row->routing_key_len = len;
}

/* Fill a row from a statement whose columns are id, uuid, routing_key, created_ms. */
static void read_row(ess_registry_t *r, sqlite3_stmt *st, ess_es_row_t *row, int copy_key)
{
    row->id = sqlite3_column_int64(st, 0);
    const unsigned char *uuid = sqlite3_column_text(st, 1);
    snprintf(row->uuid, sizeof row->uuid, "%s", uuid ? (const char *)uuid : "");
    const void *rk = sqlite3_column_blob(st, 2);
    size_t len = (size_t)sqlite3_column_bytes(st, 2);
    if (copy_key) {
        keep_routing_key(r, row, rk, len);
    } else {
        row->routing_key = rk ? rk : "";
        row->routing_key_len = len;
    }
    row->created_ms = sqlite3_column_int64(st, 3);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SQLite's message, with the operating system's reason when a file
 * operation failed ("disk I/O error (Operation not permitted)"). */
static void describe(sqlite3 *db, char *out, size_t outlen)
{
    int primary = sqlite3_extended_errcode(db) & 0xff;
    int sys = sqlite3_system_errno(db);
    if (sys != 0 && (primary == SQLITE_IOERR || primary == SQLITE_FULL ||
                     primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY))
        snprintf(out, outlen, "%s (%s)", sqlite3_errmsg(db), strerror(sys));
    else
        snprintf(out, outlen, "%s", sqlite3_errmsg(db));
}

/* Record the outcome of a write; readiness reads it. Logs the changes. */
static void note_write(sqlite_registry_t *s, int ok, const char *why)
{
    s->write_at_ms = mono_ms();
    if (ok && s->write_failed)
        ess_log_info("registry: writes succeed again; /health/ready reports the registry ready");
    else if (!ok && !s->write_failed)
        ess_log_error("registry: writes fail, /health/ready reports not ready until one "
                      "succeeds: %s",
                      why);
    s->write_failed = !ok;
    if (!ok)
        snprintf(s->write_error, sizeof s->write_error, "%s", why);
}

static int db_error(sqlite_registry_t *s, const char *what)
{
    char why[256];
    describe(s->db, why, sizeof why);
    ess_log_error("registry: %s: %s", what, why);
    return ESS_EIO;
}

/* A failed write: logged, recorded for readiness. */
static int write_error(sqlite_registry_t *s, const char *what)
{
    char why[256];
    describe(s->db, why, sizeof why);
    ess_log_error("registry: %s: %s", what, why);
    note_write(s, 0, why);
    return ESS_EIO;
}

/* 1 when the database file was deleted or replaced under us: SQLite would
 * still commit to the unlinked inode, and the rows would be gone at the
 * next start, so writes are refused instead (a 201 means on disk). */
static int db_moved(sqlite_registry_t *s)
{
    int moved = 0;
    if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
        return 0;
    if (moved) {
        static int logged;
        if (!logged++)
            ess_log_error("registry: the database file %s was deleted or replaced while "
                          "running; writes are refused until essd is restarted",
                          sqlite3_db_filename(s->db, "main"));
    }
    return moved;
}

static int sq_create(ess_registry_t *r, const char *rk, size_t rklen, ess_es_row_t *out)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (!ess_routing_key_valid(rk, rklen))
        return ESS_EINVAL;
    if (db_moved(s))
        return ESS_EIO;
    /* A uuid collision is astronomically unlikely; retry rather than assume. */
    for (int attempt = 0; attempt < 3; attempt++) {
        char uuid[ESS_UUID_LEN + 1];
        if (ess_uuid_new(uuid) != ESS_OK)
            return ESS_EIO;
        int64_t created = now_ms();
        sqlite3_stmt *st = s->insert;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, uuid, ESS_UUID_LEN, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, rk, (int)rklen, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, created);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc == SQLITE_DONE) {
            out->id = sqlite3_last_insert_rowid(s->db);
            memcpy(out->uuid, uuid, sizeof uuid);
            out->created_ms = created;
            keep_routing_key(r, out, rk, rklen);
            note_write(s, 1, NULL);
            return ESS_OK;
        }
        if (sqlite3_extended_errcode(s->db) != SQLITE_CONSTRAINT_UNIQUE)
            return write_error(s, "insert");
    }
    return ESS_EIO;
}

static int sq_remove(ess_registry_t *r, int64_t id, ess_es_row_t *removed)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (db_moved(s))
        return ESS_EIO;
    sqlite3_stmt *st = s->remove;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ess_es_row_t row;
        read_row(r, st, &row, 1);
        if (removed)
            *removed = row;
        rc = sqlite3_step(st);
    } else if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return ESS_ENOTFOUND;
    }
    if (rc != SQLITE_DONE) {
        /* The error is the statement's; read it before reset clears it. */
        int err = write_error(s, "delete");
        sqlite3_reset(st);
        return err;
    }
    sqlite3_reset(st);
    note_write(s, 1, NULL);
    return ESS_OK;
}

static int sq_list(ess_registry_t *r, ess_registry_row_cb cb, void *ud)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    sqlite3_stmt *st = s->list;
    sqlite3_reset(st);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ess_es_row_t row;
        read_row(r, st, &row, 0);
        int stop = cb(ud, &row);
        if (stop) {
            sqlite3_reset(st);
            return stop;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? ESS_OK : db_error(s, "list");
}

static int sq_find_uuid(ess_registry_t *r, const char *uuid, ess_es_row_t *out)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    sqlite3_stmt *st = s->by_uuid;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, uuid, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_row(r, st, out, 1);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_ROW)
        return ESS_OK;
    return rc == SQLITE_DONE ? ESS_ENOTFOUND : db_error(s, "find");
}

static int64_t sq_count(ess_registry_t *r)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (db_moved(s))
        return -1; /* not ready: /health/ready says so */
    sqlite3_reset(s->count);
    int64_t n = sqlite3_step(s->count) == SQLITE_ROW ? sqlite3_column_int64(s->count, 0) : -1;
    sqlite3_reset(s->count);
    return n;
}

/* Whether writes succeed: the outcome of the last write when it is younger
 * than WRITE_FRESH_MS, else a probe write now (rewriting user_version in
 * its own transaction: one WAL frame and one fsync, as a create costs). */
static int sq_writable(ess_registry_t *r, char *why, size_t whylen)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (db_moved(s)) {
        snprintf(why, whylen, "the database file was deleted or replaced while running");
        return 0;
    }
    if (s->write_at_ms == 0 || mono_ms() - s->write_at_ms >= WRITE_FRESH_MS) {
        char sql[96];
        snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; PRAGMA user_version=%d; COMMIT",
                 SCHEMA_VERSION);
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK) {
            note_write(s, 1, NULL);
        } else {
            char err[256];
            describe(s->db, err, sizeof err);
            if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            note_write(s, 0, err);
        }
    }
    if (s->write_failed)
        snprintf(why, whylen, "%s", s->write_error);
    return !s->write_failed;
}

static void sq_close(ess_registry_t *r)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    sqlite3_finalize(s->insert);
    sqlite3_finalize(s->remove);
    sqlite3_finalize(s->list);
    sqlite3_finalize(s->by_uuid);
    sqlite3_finalize(s->count);
    sqlite3_finalize(s->insert_id);
    sqlite3_finalize(s->meta_get);
    sqlite3_finalize(s->meta_set);
    sqlite3_finalize(s->by_id);
    sqlite3_close(s->db);
    free(r->routing_key_buf);
    free(s);
}

static const ess_registry_ops_t sqlite_ops = {
    .create = sq_create,
    .remove = sq_remove,
    .list = sq_list,
    .find_uuid = sq_find_uuid,
    .count = sq_count,
    .close = sq_close,
    .writable = sq_writable,
};

static int exec1(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return ESS_OK;
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return ESS_EIO;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return ESS_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? ESS_OK : ESS_EIO;
}

/* Integrity, then migrations inside one write transaction: the first write
 * also proves the file is writable before the service accepts requests. */
static int check_and_migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    char msg[512];
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    const unsigned char *res = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    int ok = res != NULL && strcmp((const char *)res, "ok") == 0;
    int primary = sqlite3_extended_errcode(db) & 0xff;
    int corrupt = res != NULL || primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
    if (!ok) {
        describe(db, msg, sizeof msg);
        if (res != NULL)
            snprintf(err, errlen, "%s: integrity check failed: %s", path, (const char *)res);
        else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
            snprintf(err, errlen,
                     "%s: cannot open: another process holds the database (essd keeps it "
                     "locked while it runs; is another essd using it?)",
                     path);
        else if (corrupt)
            snprintf(err, errlen, "%s: not a usable SQLite database: %s", path, msg);
        else
            snprintf(err, errlen, "%s: cannot open: %s", path, msg);
    }
    sqlite3_finalize(st);
    if (!ok)
        return corrupt ? ESS_ECORRUPT : ESS_EIO;

    if (exec1(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", msg,
              sizeof msg) != ESS_OK ||
        exec1(db, "BEGIN IMMEDIATE", msg, sizeof msg) != ESS_OK) {
        snprintf(err, errlen, "%s: cannot write: %s", path, msg);
        return ESS_EIO;
    }
    int64_t version = 0;
    if (pragma_int(db, "PRAGMA user_version", &version) != ESS_OK)
        goto fail_tx;
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: schema version %lld is newer than this essd understands (%d)",
                 path, (long long)version, SCHEMA_VERSION);
        exec1(db, "ROLLBACK", msg, sizeof msg);
        return ESS_ECORRUPT;
    }
    for (int64_t v = version; v < SCHEMA_VERSION; v++) {
        if (exec1(db, migrations[v], msg, sizeof msg) != ESS_OK)
            goto fail_tx;
        ess_log_info("registry: migrated %s to schema version %lld", path, (long long)(v + 1));
    }
    char set[64];
    snprintf(set, sizeof set, "PRAGMA user_version=%d", SCHEMA_VERSION);
    if (exec1(db, set, msg, sizeof msg) != ESS_OK || exec1(db, "COMMIT", msg, sizeof msg) != ESS_OK)
        goto fail_tx;
    return ESS_OK;

fail_tx:
    snprintf(err, errlen, "%s: migration failed: %s", path, sqlite3_errmsg(db));
    exec1(db, "ROLLBACK", msg, sizeof msg);
    return ESS_EIO;
}

/* Before SQLite tries: a missing directory, a directory or file that
 * cannot be written, said in one line that names the culprit (SQLite's
 * own answer is "unable to open database file" for all of them, and it
 * silently opens a write-protected file read-only). */
static int check_path(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    struct stat st;
    if (stat(dir, &st) != 0) {
        int e = errno;
        if (e != ENOENT) {
            snprintf(err, errlen, "%s: cannot open: the directory %s: %s", path, dir, strerror(e));
            return ESS_EIO;
        }
        /* Name the first directory that is missing, the one to create. */
        char missing[4096];
        snprintf(missing, sizeof missing, "%s", dir);
        for (;;) {
            char *cut = strrchr(missing, '/');
            if (cut == NULL || cut == missing)
                break;
            *cut = '\0';
            if (stat(missing, &st) == 0) {
                *cut = '/';
                break;
            }
        }
        snprintf(err, errlen, "%s: cannot open: the directory %s does not exist", path, missing);
        return ESS_EIO;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: cannot open: %s is not a directory", path, dir);
        return ESS_EIO;
    }
    int exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: cannot open: it is a directory", path);
        return ESS_EIO;
    }
    if (exists && access(path, W_OK) != 0) {
        snprintf(err, errlen,
                 "%s: cannot be opened for writing: %s (the registry is written on every "
                 "create and delete)",
                 path, strerror(errno));
        return ESS_EIO;
    }
    if (access(dir, W_OK) != 0) {
        snprintf(err, errlen,
                 "%s: cannot be opened for writing: the directory %s: %s (SQLite creates "
                 "%s beside it)",
                 path, dir, strerror(errno),
                 exists ? "the -wal file" : "the database file and its -wal file");
        return ESS_EIO;
    }
    return ESS_OK;
}

int ess_registry_open_sqlite(const char *path, ess_registry_t **out, char *err, size_t errlen)
{
    sqlite_registry_t *s = ess_xcalloc(1, sizeof *s);
    s->base.ops = &sqlite_ops;
    int rc = ESS_EIO;
    if (check_path(path, err, errlen) != ESS_OK)
        goto fail_open;
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        char why[256];
        if (s->db)
            describe(s->db, why, sizeof why);
        snprintf(err, errlen, "%s: cannot open: %s", path, s->db ? why : "out of memory");
        goto fail_open;
    }
    sqlite3_extended_result_codes(s->db, 1);
    if (sqlite3_db_readonly(s->db, "main") == 1) {
        snprintf(err, errlen, "%s: cannot be opened for writing: SQLite opened it read-only", path);
        goto fail_open;
    }
    /* Before any access, so that WAL never uses a shared -shm mapping (see
     * the top of this file). */
    char msg[256];
    if (exec1(s->db, "PRAGMA locking_mode=EXCLUSIVE", msg, sizeof msg) != ESS_OK) {
        snprintf(err, errlen, "%s: cannot open: %s", path, msg);
        goto fail_open;
    }
    /* The registry runs on the event loop: wait for a lock held by another
     * process briefly, then fail the request (503) rather than stall every
     * connection. */
    sqlite3_busy_timeout(s->db, 200);
    if ((rc = check_and_migrate(s->db, path, err, errlen)) != ESS_OK)
        goto fail_open;
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } stmts[] = {
        {&s->insert, "INSERT INTO event_stream (uuid, routing_key, created_ms) VALUES (?, ?, ?)"},
        {&s->remove,
         "DELETE FROM event_stream WHERE id = ? RETURNING id, uuid, routing_key, created_ms"},
        {&s->list, "SELECT id, uuid, routing_key, created_ms FROM event_stream ORDER BY id"},
        {&s->by_uuid, "SELECT id, uuid, routing_key, created_ms FROM event_stream WHERE uuid = ?"},
        {&s->count, "SELECT count(*) FROM event_stream"},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(stmts); i++) {
        if (sqlite3_prepare_v3(s->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, stmts[i].st,
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: prepare: %s", path, sqlite3_errmsg(s->db));
            rc = ESS_ECORRUPT;
            goto fail_open;
        }
    }
    *out = &s->base;
    return ESS_OK;

fail_open:
    sq_close(&s->base);
    return rc;
}

/* The stream backend's view (registry_view.h). The key/value table is
 * created on first use, outside the numbered migrations: a database used
 * only by the SQLite backend never gets it. */

static int view_prepare(sqlite_registry_t *s, sqlite3_stmt **st, const char *sql)
{
    if (*st != NULL)
        return ESS_OK;
    if (sqlite3_exec(s->db,
                     "CREATE TABLE IF NOT EXISTS registry_log (key TEXT PRIMARY KEY, value TEXT "
                     "NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return write_error(s, "prepare");
    return ESS_OK;
}

int ess__view_begin(ess_registry_t *r)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    return sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
               ? ESS_OK
               : write_error(s, "begin");
}

int ess__view_commit(ess_registry_t *r)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) {
        note_write(s, 1, NULL);
        return ESS_OK;
    }
    int rc = write_error(s, "commit");
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int ess__view_insert(ess_registry_t *r, const ess_es_row_t *row)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (view_prepare(s, &s->insert_id,
                     "INSERT OR IGNORE INTO event_stream (id, uuid, routing_key, created_ms) "
                     "VALUES (?, ?, ?, ?)") != ESS_OK)
        return ESS_EIO;
    sqlite3_stmt *st = s->insert_id;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, row->id);
    sqlite3_bind_text(st, 2, row->uuid, ESS_UUID_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, row->routing_key, (int)row->routing_key_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, row->created_ms);
    int rc = sqlite3_step(st);
    int err = rc == SQLITE_DONE ? ESS_OK : write_error(s, "insert");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

int ess__view_remove(ess_registry_t *r, int64_t id, ess_es_row_t *removed)
{
    return sq_remove(r, id, removed);
}

int ess__view_clear(ess_registry_t *r)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    return sqlite3_exec(s->db, "DELETE FROM event_stream", NULL, NULL, NULL) == SQLITE_OK
               ? ESS_OK
               : write_error(s, "clear");
}

int ess__view_has_id(ess_registry_t *r, int64_t id)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (view_prepare(s, &s->by_id, "SELECT 1 FROM event_stream WHERE id = ?") != ESS_OK)
        return -1;
    sqlite3_reset(s->by_id);
    sqlite3_bind_int64(s->by_id, 1, id);
    int rc = sqlite3_step(s->by_id);
    sqlite3_reset(s->by_id);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int ess__view_meta_get(ess_registry_t *r, const char *key, char *buf, size_t len)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (view_prepare(s, &s->meta_get, "SELECT value FROM registry_log WHERE key = ?") != ESS_OK)
        return ESS_EIO;
    sqlite3_stmt *st = s->meta_get;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        snprintf(buf, len, "%s", v ? (const char *)v : "");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_ROW)
        return ESS_OK;
    return rc == SQLITE_DONE ? ESS_ENOTFOUND : db_error(s, "meta");
}

int ess__view_meta_set(ess_registry_t *r, const char *key, const char *value)
{
    sqlite_registry_t *s = (sqlite_registry_t *)r;
    if (view_prepare(s, &s->meta_set,
                     "INSERT OR REPLACE INTO registry_log (key, value) VALUES (?, ?)") != ESS_OK)
        return ESS_EIO;
    sqlite3_stmt *st = s->meta_set;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int err = rc == SQLITE_DONE ? ESS_OK : write_error(s, "meta");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

int ess_routing_key_valid(const char *rk, size_t len)
{
    if (len == 0 || len > ESS_ROUTING_KEY_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)rk[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return ess_utf8_valid((const uint8_t *)rk, len);
}
