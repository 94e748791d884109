/*
 * The stream client's broker-version check (ess__stream_conn_has_311):
 * StreamStats and the other 3.11 commands go only to a broker whose
 * `version` peer property says 3.11 or later, because 3.10 closes the whole
 * connection on a command it does not know. Also the argument checks of
 * ess_stream_stats.
 */
#include "ess.h"
#include "ess_test.h"
#include "mq/stream_internal.h"

static int has(const char *v)
{
    ess__stream_conn_t k;
    memset(&k, 0, sizeof k);
    k.version = (char *)v;
    return ess__stream_conn_has_311(&k);
}

static void test_versions(void)
{
    CHECK_EQ_INT(has("3.10.8"), 0);
    CHECK_EQ_INT(has("3.10.25"), 0);
    CHECK_EQ_INT(has("3.9.29"), 0);
    CHECK_EQ_INT(has("3.1"), 0);
    CHECK_EQ_INT(has("3"), 0);
    CHECK_EQ_INT(has("2.99.0"), 0);
    CHECK_EQ_INT(has("3.11.0"), 1);
    CHECK_EQ_INT(has("3.11"), 1);
    CHECK_EQ_INT(has("3.13.7"), 1);
    CHECK_EQ_INT(has("4.0.5"), 1);
    CHECK_EQ_INT(has("4"), 1);
    CHECK_EQ_INT(has("4.1.0-beta.2"), 1);
    CHECK_EQ_INT(has("10.0.0"), 1);
    /* Unknown or unparsable: never send a command the broker may not know. */
    CHECK_EQ_INT(has(NULL), 0);
    CHECK_EQ_INT(has(""), 0);
    CHECK_EQ_INT(has("v4.0.5"), 0);
    CHECK_EQ_INT(has("-4.0"), 0);
    CHECK_EQ_INT(has("3.x"), 0);
    CHECK_EQ_INT(has("3."), 0);
}

static void on_stats(int status, const ess_stream_stats_t *st, void *ud)
{
    (void)status;
    (void)st;
    (void)ud;
}

static void test_stats_args(void)
{
    CHECK_EQ_INT(ess_stream_stats(NULL, "s", on_stats, NULL), ESS_EINVAL);
    CHECK(strcmp(ess_strerror(ESS_ENOTSUP), "unknown error") != 0);
}

ESS_TEST_MAIN(ESS_TEST(test_versions), ESS_TEST(test_stats_args))
