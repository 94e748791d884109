/* Unit tests for metrics/series (the console's 15-minute ring) and the
 * console's JSON string encoder (gateway/tail.h). */
#include "ess_test.h"
#include "gateway/tail.h"
#include "metrics/metrics.h"
#include "metrics/series.h"

#include <stdlib.h>

static char *json_of(int seconds)
{
    ess_buf_t b = {0};
    ess_series_json(&b, seconds);
    ess_buf_append(&b, "", 1);
    return b.data;
}

static void test_deltas(void)
{
    ess_series_reset();
    ess_metrics = (ess_metrics_t){0};
    ess_metrics.msgs_in = 100; /* before the first sample: the baseline, not a rate */
    ess_series_sample(1000);
    ess_metrics.msgs_in = 130;
    ess_metrics.msgs_out = 7;
    ess_metrics.ws_open = 3;
    ess_metrics_add("ess_websocket_closes_total", "code=\"1000\"", 2);
    ess_metrics_add("ess_websocket_closes_total", "code=\"4000\"", 1);
    ess_series_sample(2000);
    char *j = json_of(900);
    CHECK_EQ_STR(j, "{\"step\":1,\"end\":2000,\"points\":2,\"in\":[0,30],\"out\":[0,7],"
                    "\"bytes_out\":[0,0],\"connections\":[0,3],\"subscriptions\":[0,0],"
                    "\"enrich_errors\":[0,0],\"closes\":{\"1000\":[0,2],\"1001\":[0,0],"
                    "\"1002\":[0,0],\"1008\":[0,0],\"1011\":[0,0],\"1013\":[0,0],"
                    "\"other\":[0,1]}}");
    free(j);
    j = json_of(1);
    CHECK(strstr(j, "\"points\":1,\"in\":[30]") != NULL);
    free(j);
    ess_buf_t b = {0};
    ess_series_latest_json(&b);
    ess_buf_append(&b, "", 1);
    CHECK(strstr(b.data, "\"in\":30,\"out\":7,") != NULL);
    CHECK(strstr(b.data, "\"closes\":3,") != NULL);
    CHECK(strstr(b.data, "\"closes_by\":{\"1000\":2,") != NULL);
    CHECK(strstr(b.data, "\"other\":1}}") != NULL);
    ess_buf_free(&b);
    ess_metrics_free();
}

static void test_bounded(void)
{
    ess_series_reset();
    ess_metrics = (ess_metrics_t){0};
    for (int i = 0; i < 2000; i++) {
        ess_metrics.msgs_in += (uint64_t)i;
        ess_series_sample(i * 1000);
    }
    char *j = json_of(5000);
    CHECK(strstr(j, "\"points\":900,") != NULL);
    /* The oldest kept is second 1100 (delta 1100), the newest 1999. */
    CHECK(strstr(j, "\"in\":[1100,1101,") != NULL);
    CHECK(strstr(j, ",1999],\"out\"") != NULL);
    free(j);
    j = json_of(-1);
    CHECK(strstr(j, "\"points\":0,\"in\":[]") != NULL);
    free(j);
}

static char *str_of(const char *s, size_t n)
{
    ess_buf_t b = {0};
    ess_tail_json_str(&b, s, n);
    ess_buf_append(&b, "", 1);
    return b.data;
}

static void test_json_str(void)
{
    char *j = str_of("a\"b\\c\nd\te\x01", 10);
    CHECK_EQ_STR(j, "\"a\\\"b\\\\c\\nd\\u0009e\\u0001\"");
    free(j);
    j = str_of("caf\xc3\xa9 /", 7);
    CHECK_EQ_STR(j, "\"caf\xc3\xa9 /\"");
    free(j);
    j = str_of("\xff\xfe"
               "ab",
               4); /* not UTF-8: the bytes become U+FFFD */
    CHECK_EQ_STR(j, "\"\\ufffd\\ufffdab\"");
    free(j);
    j = str_of("a\0b", 3);
    CHECK_EQ_STR(j, "\"a\\u0000b\"");
    free(j);
}

ESS_TEST_MAIN(ESS_TEST(test_deltas), ESS_TEST(test_bounded), ESS_TEST(test_json_str))
