/*
 * Unit tests for the SQLite registry: create/list/delete/find, ids never
 * reused, persistence across reopen, verbatim routing keys, refusal of a
 * corrupt or unwritable file (never replaced) with a message that says
 * which, the write-outcome answer readiness uses, and no -shm file.
 */
#include "ess_test.h"
#include "ess.h"
#include "store/registry.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/ess-test-registry-XXXXXX";

static char *db_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static ess_registry_t *open_db(const char *name)
{
    ess_registry_t *r = NULL;
    char err[512];
    int rc = ess_registry_open_sqlite(db_path(name), &r, err, sizeof err);
    if (rc != ESS_OK)
        fprintf(stderr, "open: %s\n", err);
    CHECK_EQ_INT(rc, ESS_OK);
    return r;
}

typedef struct {
    int n;
    int64_t ids[16];
    char keys[16][300];
} collected_t;

static int collect(void *ud, const ess_es_row_t *row)
{
    collected_t *c = ud;
    if (c->n < 16) {
        c->ids[c->n] = row->id;
        memcpy(c->keys[c->n], row->routing_key, row->routing_key_len);
        c->keys[c->n][row->routing_key_len] = '\0';
    }
    c->n++;
    return 0;
}

static void test_crud_and_ids_not_reused(void)
{
    ess_registry_t *r = open_db("crud.db");
    ess_es_row_t a, b, c, found;
    CHECK_EQ_INT(ess_registry_create(r, "abc", 3, &a), ESS_OK);
    CHECK_EQ_INT(a.id, 1);
    CHECK_EQ_INT(strlen(a.uuid), ESS_UUID_LEN);
    CHECK_EQ_INT(ess_registry_create(r, "def", 3, &b), ESS_OK);
    CHECK_EQ_INT(b.id, 2);
    CHECK(strcmp(a.uuid, b.uuid) != 0);
    CHECK_EQ_INT(ess_registry_find_uuid(r, a.uuid, &found), ESS_OK);
    CHECK_EQ_INT(found.id, 1);
    CHECK_EQ_STR(found.routing_key, "abc");
    CHECK_EQ_INT(ess_registry_count(r), 2);

    /* Deleting the newest must not free its id for reuse. */
    ess_es_row_t removed;
    CHECK_EQ_INT(ess_registry_delete(r, 2, &removed), ESS_OK);
    CHECK_EQ_STR(removed.uuid, b.uuid);
    CHECK_EQ_STR(removed.routing_key, "def");
    CHECK_EQ_INT(ess_registry_delete(r, 2, NULL), ESS_ENOTFOUND);
    CHECK_EQ_INT(ess_registry_find_uuid(r, b.uuid, &found), ESS_ENOTFOUND);
    CHECK_EQ_INT(ess_registry_create(r, "ghi", 3, &c), ESS_OK);
    CHECK_EQ_INT(c.id, 3);

    collected_t got = {0};
    CHECK_EQ_INT(ess_registry_list(r, collect, &got), ESS_OK);
    CHECK_EQ_INT(got.n, 2);
    CHECK_EQ_INT(got.ids[0], 1);
    CHECK_EQ_INT(got.ids[1], 3);
    ess_registry_close(r);

    /* Survives a reopen, and the next id still moves on. */
    r = open_db("crud.db");
    CHECK_EQ_INT(ess_registry_delete(r, 3, NULL), ESS_OK);
    CHECK_EQ_INT(ess_registry_create(r, "jkl", 3, &c), ESS_OK);
    CHECK_EQ_INT(c.id, 4);
    CHECK_EQ_INT(ess_registry_count(r), 2);
    ess_registry_close(r);
}

static void test_routing_keys_verbatim(void)
{
    ess_registry_t *r = open_db("keys.db");
    char long_key[256];
    memset(long_key, 'k', 255);
    long_key[255] = '\0';
    const char *keys[] = {"it's \"quoted\"", "'; DROP TABLE event_stream; --",
                          "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", long_key};
    for (size_t i = 0; i < 4; i++) {
        ess_es_row_t row;
        CHECK_EQ_INT(ess_registry_create(r, keys[i], strlen(keys[i]), &row), ESS_OK);
    }
    collected_t got = {0};
    ess_registry_list(r, collect, &got);
    CHECK_EQ_INT(got.n, 4);
    for (int i = 0; i < 4 && i < got.n; i++)
        CHECK_EQ_STR(got.keys[i], keys[i]);
    ess_registry_close(r);
}

static void test_invalid_keys(void)
{
    ess_registry_t *r = open_db("bad.db");
    ess_es_row_t row;
    char k256[257];
    memset(k256, 'k', 256);
    CHECK_EQ_INT(ess_registry_create(r, "", 0, &row), ESS_EINVAL);
    CHECK_EQ_INT(ess_registry_create(r, k256, 256, &row), ESS_EINVAL);
    CHECK_EQ_INT(ess_registry_create(r, "a\nb", 3, &row), ESS_EINVAL);
    CHECK_EQ_INT(ess_registry_create(r, "a\x7f", 2, &row), ESS_EINVAL);
    CHECK_EQ_INT(ess_registry_create(r, "\xc3", 1, &row), ESS_EINVAL);
    CHECK_EQ_INT(ess_registry_count(r), 0);
    ess_registry_close(r);
}

static void test_corrupt_file_refused_and_kept(void)
{
    const char *path = db_path("corrupt.db");
    FILE *f = fopen(path, "wb");
    const char junk[] = "this is not an SQLite database, and it must survive untouched";
    for (int i = 0; i < 200; i++)
        fwrite(junk, 1, sizeof junk - 1, f);
    fclose(f);
    struct stat before, after;
    stat(path, &before);
    ess_registry_t *r = NULL;
    char err[512] = "";
    int rc = ess_registry_open_sqlite(path, &r, err, sizeof err);
    CHECK(rc == ESS_ECORRUPT || rc == ESS_EIO);
    CHECK(strstr(err, "corrupt.db") != NULL);
    CHECK(strstr(err, "not a usable SQLite database") != NULL);
    CHECK(r == NULL);
    stat(path, &after);
    CHECK_EQ_INT(after.st_size, before.st_size);
}

static void test_unwritable_refused(void)
{
    ess_registry_t *r = NULL;
    char err[512] = "";
    CHECK(ess_registry_open_sqlite("/nonexistent-dir/x/ess.db", &r, err, sizeof err) != ESS_OK);
    CHECK(strstr(err, "the directory /nonexistent-dir does not exist") != NULL);
    char p2[300];
    snprintf(p2, sizeof p2, "%s/missing/ess.db", dir);
    CHECK(ess_registry_open_sqlite(p2, &r, err, sizeof err) != ESS_OK);
    char want[300];
    snprintf(want, sizeof want, "the directory %s/missing does not exist", dir);
    CHECK(strstr(err, want) != NULL);
    if (geteuid() != 0) {
        /* Root ignores permission bits; the read-only case is covered above. */
        const char *ro = db_path("ro");
        mkdir(ro, 0500);
        char p[300];
        snprintf(p, sizeof p, "%s/ess.db", ro);
        CHECK(ess_registry_open_sqlite(p, &r, err, sizeof err) != ESS_OK);
    }
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* One writer: the wal-index lives in heap memory (no -shm mapping that a
 * fault could turn into SIGBUS), and a second opener is told who holds it. */
static void test_exclusive_no_shm(void)
{
    ess_registry_t *r = open_db("excl.db");
    ess_es_row_t row;
    CHECK_EQ_INT(ess_registry_create(r, "k", 1, &row), ESS_OK);
    char p[300];
    snprintf(p, sizeof p, "%s-wal", db_path("excl.db"));
    CHECK(file_exists(p));
    snprintf(p, sizeof p, "%s-shm", db_path("excl.db"));
    CHECK(!file_exists(p));
    ess_registry_t *r2 = NULL;
    char err[512] = "";
    CHECK(ess_registry_open_sqlite(db_path("excl.db"), &r2, err, sizeof err) != ESS_OK);
    CHECK(strstr(err, "holds the database") != NULL);
    ess_registry_close(r);
}

/* A failed write makes writable() false at once, with the reason; the next
 * successful write makes it true again. */
static void test_writable_follows_writes(void)
{
    ess_registry_t *r = open_db("writable.db");
    char why[256] = "";
    ess_es_row_t row;
    CHECK_EQ_INT(ess_registry_writable(r, why, sizeof why), 1);
    CHECK_EQ_INT(ess_registry_create(r, "a", 1, &row), ESS_OK);
    CHECK_EQ_INT(ess_registry_writable(r, why, sizeof why), 1);
    char wal[300], cmd[400];
    snprintf(wal, sizeof wal, "%s-wal", db_path("writable.db"));
    snprintf(cmd, sizeof cmd, "chattr +i %s 2>/dev/null", wal);
    if (geteuid() != 0 || system(cmd) != 0) {
        fprintf(stderr, "skip: chattr +i not available here\n");
        ess_registry_close(r);
        return;
    }
    int rc = ess_registry_create(r, "b", 1, &row);
    snprintf(cmd, sizeof cmd, "chattr -i %s", wal);
    int undone = system(cmd);
    CHECK_EQ_INT(undone, 0);
    if (rc == ESS_OK) {
        fprintf(stderr, "skip: this filesystem lets an immutable file be written\n");
        ess_registry_close(r);
        return;
    }
    CHECK_EQ_INT(rc, ESS_EIO);
    CHECK_EQ_INT(ess_registry_writable(r, why, sizeof why), 0);
    CHECK(strlen(why) > 0);
    CHECK_EQ_INT(ess_registry_create(r, "c", 1, &row), ESS_OK);
    CHECK_EQ_INT(ess_registry_writable(r, why, sizeof why), 1);
    collected_t c = {0};
    CHECK_EQ_INT(ess_registry_list(r, collect, &c), ESS_OK);
    CHECK_EQ_INT(c.n, 2);
    ess_registry_close(r);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    static const ess_test_case_t cases[] = {
        ESS_TEST(test_crud_and_ids_not_reused),
        ESS_TEST(test_routing_keys_verbatim),
        ESS_TEST(test_invalid_keys),
        ESS_TEST(test_corrupt_file_refused_and_kept),
        ESS_TEST(test_unwritable_refused),
        ESS_TEST(test_exclusive_no_shm),
        ESS_TEST(test_writable_follows_writes),
    };
    int rc = ess_test_run(cases, ESS_ARRAY_SIZE(cases));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    return rc;
}
