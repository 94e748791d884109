/* Unit tests for gateway/selector: the start selector and its close reasons. */
#include "ess_test.h"
#include <stdint.h>
#include "ess.h"
#include "gateway/selector.h"

static int parse(int which, const char *v, ess_selector_t *sel, char *reason)
{
    const char *values[ESS_SEL_SOURCES] = {0};
    values[which] = v;
    return ess_selector_parse(values, NULL, 1700000000000, sel, reason, 124);
}

static void test_none(void)
{
    const char *values[ESS_SEL_SOURCES] = {0};
    ess_selector_t sel;
    char reason[124];
    CHECK_EQ_INT(ess_selector_parse(values, NULL, 0, &sel, reason, sizeof reason), ESS_OK);
    CHECK_EQ_INT(sel.kind, ESS_SEL_NONE);
}

static void test_ordinal_and_timestamp(void)
{
    ess_selector_t sel;
    char reason[124];
    for (int src = 0; src < 6; src += 3) {
        CHECK_EQ_INT(parse(src, "0", &sel, reason), ESS_OK);
        CHECK_EQ_INT(sel.kind, ESS_SEL_ORDINAL);
        CHECK_EQ_INT(sel.ordinal, 0);
        CHECK_EQ_INT(parse(src, "12345", &sel, reason), ESS_OK);
        CHECK_EQ_INT(sel.ordinal, 12345);
        /* The largest value is kept exactly, not clamped or wrapped. */
        sel.kind = ESS_SEL_NONE;
        sel.ordinal = 0;
        CHECK_EQ_INT(parse(src, "9223372036854775807", &sel, reason), ESS_OK);
        CHECK_EQ_INT(sel.kind, ESS_SEL_ORDINAL);
        CHECK(sel.ordinal == INT64_MAX);
    }
    CHECK_EQ_INT(parse(4, "1746019980000", &sel, reason), ESS_OK);
    CHECK_EQ_INT(sel.kind, ESS_SEL_TIMESTAMP);
    CHECK_EQ_INT(sel.timestamp_ms, 1746019980000);
}

static void test_datetime(void)
{
    ess_selector_t sel;
    char reason[124];
    CHECK_EQ_INT(parse(5, "2025-04-30T13:33+02:00", &sel, reason), ESS_OK);
    CHECK_EQ_INT(sel.kind, ESS_SEL_DATETIME);
    CHECK_EQ_INT(sel.timestamp_ms, 1746012780000);
    CHECK_EQ_INT(parse(2, "2025-04-31", &sel, reason), ESS_EINVAL);
    CHECK(strstr(reason, "X-StreamOffsetFromDatetime") != NULL);
}

static void test_rejects_name_the_selector(void)
{
    static const struct {
        int src;
        const char *v;
        const char *want;
    } cases[] = {
        {3, "-1", "must not be negative"},
        {3, "", "is empty"},
        {3, "abc", "is not an integer"},
        {3, "1.5", "is not an integer"},
        {3, " 1", "is not an integer"},
        {3, "9223372036854775808", "is too large"},
        {4, "99999999999999999999999", "is too large"},
        {0, "+1", "is not an integer"},
        {1, "0x10", "is not an integer"},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(cases); i++) {
        ess_selector_t sel;
        char reason[124];
        CHECK_EQ_INT(parse(cases[i].src, cases[i].v, &sel, reason), ESS_EINVAL);
        CHECK(strstr(reason, ess_selector_names[cases[i].src]) != NULL);
        CHECK(strstr(reason, cases[i].want) != NULL);
        CHECK(strlen(reason) <= 123);
    }
}

static void test_two_selectors(void)
{
    const char *values[ESS_SEL_SOURCES] = {"1", NULL, NULL, NULL, "2", NULL};
    ess_selector_t sel;
    char reason[124];
    CHECK_EQ_INT(ess_selector_parse(values, NULL, 0, &sel, reason, sizeof reason), ESS_EINVAL);
    CHECK(strstr(reason, "only one") != NULL);
    const char *same[ESS_SEL_SOURCES] = {"1", NULL, NULL, "1", NULL, NULL};
    CHECK_EQ_INT(ess_selector_parse(same, NULL, 0, &sel, reason, sizeof reason), ESS_EINVAL);
}

/* ?stream_from_ordinal=0&stream_from_ordinal=3 (issue 12 case 14): one
 * name given twice is two selectors, not the first one. */
static void test_repeated_selector(void)
{
    const char *values[ESS_SEL_SOURCES] = {NULL, NULL, NULL, "0", NULL, NULL};
    unsigned counts[ESS_SEL_SOURCES] = {0, 0, 0, 2, 0, 0};
    ess_selector_t sel;
    char reason[124];
    CHECK_EQ_INT(ess_selector_parse(values, counts, 0, &sel, reason, sizeof reason), ESS_EINVAL);
    CHECK(strstr(reason, "only one") != NULL);
    counts[3] = 1;
    CHECK_EQ_INT(ess_selector_parse(values, counts, 0, &sel, reason, sizeof reason), ESS_OK);
    CHECK_EQ_INT(sel.kind, ESS_SEL_ORDINAL);
}

static void test_long_value_clipped(void)
{
    char v[2000];
    memset(v, '9', sizeof v - 1);
    v[sizeof v - 1] = '\0';
    v[5] = 'x';
    ess_selector_t sel;
    char reason[124];
    CHECK_EQ_INT(parse(3, v, &sel, reason), ESS_EINVAL);
    CHECK(strlen(reason) <= 123);
}

ESS_TEST_MAIN(ESS_TEST(test_none), ESS_TEST(test_ordinal_and_timestamp), ESS_TEST(test_datetime),
              ESS_TEST(test_rejects_name_the_selector), ESS_TEST(test_two_selectors),
              ESS_TEST(test_repeated_selector), ESS_TEST(test_long_value_clipped))
