/* Unit tests for util/json: strict validation of JSON objects. */
#include "ess_test.h"
#include "ess.h"
#include "util/json.h"

#include <stdlib.h>

static int ok(const char *s, size_t *close, int *empty)
{
    const char *err;
    size_t at;
    return ess_json_object(s, strlen(s), close, empty, &err, &at) == ESS_OK;
}

static void test_valid_objects(void)
{
    size_t close;
    int empty;
    CHECK(ok("{}", &close, &empty));
    CHECK_EQ_INT(close, 1);
    CHECK_EQ_INT(empty, 1);
    CHECK(ok("  { \n }  ", &close, &empty));
    CHECK_EQ_INT(close, 6);
    CHECK_EQ_INT(empty, 1);
    CHECK(ok("{\"a\":1}", &close, &empty));
    CHECK_EQ_INT(close, 6);
    CHECK_EQ_INT(empty, 0);
    const char *valid[] = {
        "{\"a\":[1,2,{\"b\":null}],\"c\":true,\"d\":false,\"e\":-0.5e+10}",
        "{\"s\":\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}",
        "{\"n\":0,\"m\":-0,\"x\":1E3,\"y\":12.25e-3}",
        "{\"nested\":{\"deep\":[[[[]]]]},\"empty\":{},\"arr\":[]}",
        "{\"k\":\"v\"}\n",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(valid); i++)
        CHECK(ok(valid[i], &close, &empty));
}

static void test_invalid(void)
{
    const char *bad[] = {
        "",
        "   ",
        "[]",
        "\"x\"",
        "1",
        "{",
        "}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\":1 \"b\":2}",
        "{a:1}",
        "{'a':1}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":+1}",
        "{\"a\":NaN}",
        "{\"a\":Infinity}",
        "{\"a\":0x10}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00x\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"\xc3\"}",
        "{\"a\":\"\xff\"}",
        "{} {}",
        "{}x",
        "{\"a\":[1,2}",
        "{\"a\":[1,2,]}",
        "{\"a\":1}}",
        "{\"a\" 1}",
        "{\"a\":\"unterminated}",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(bad); i++) {
        size_t close = 0, at = 0;
        int empty;
        const char *err = NULL;
        int rc = ess_json_object(bad[i], strlen(bad[i]), &close, &empty, &err, &at);
        if (rc == ESS_OK)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_EQ_INT(rc, ESS_EINVAL);
        CHECK(err != NULL);
    }
    /* An embedded NUL is a control character inside a string, and junk outside. */
    size_t close;
    int empty;
    CHECK(ess_json_object("{\"a\":\"x\0\"}", 10, &close, &empty, NULL, NULL) == ESS_EINVAL);
    CHECK(ess_json_object("{}\0", 3, &close, &empty, NULL, NULL) == ESS_EINVAL);
}

static void test_depth_bounded(void)
{
    size_t n = 100000;
    char *s = malloc(2 * n + 16);
    size_t k = 0;
    s[k++] = '{';
    memcpy(s + k, "\"a\":", 4);
    k += 4;
    for (size_t i = 0; i < n; i++)
        s[k++] = '[';
    for (size_t i = 0; i < n; i++)
        s[k++] = ']';
    s[k++] = '}';
    size_t close;
    int empty;
    const char *err = NULL;
    CHECK_EQ_INT(ess_json_object(s, k, &close, &empty, &err, NULL), ESS_EINVAL);
    CHECK(err && strstr(err, "deep"));
    /* Within the limit it is fine. */
    k = 0;
    s[k++] = '{';
    memcpy(s + k, "\"a\":", 4);
    k += 4;
    for (size_t i = 0; i < 500; i++)
        s[k++] = '[';
    for (size_t i = 0; i < 500; i++)
        s[k++] = ']';
    s[k++] = '}';
    CHECK_EQ_INT(ess_json_object(s, k, &close, &empty, NULL, NULL), ESS_OK);
    CHECK_EQ_INT(close, k - 1);
    free(s);
}

static const char *splice(const char *body, double a, double b, ess_buf_t *out)
{
    const char *err = NULL;
    size_t at = 0;
    out->len = 0;
    if (ess_json_splice(body, strlen(body), "\"o\":", ",\"o\":", ",\"t\":", a, b, out, &err, &at) !=
        ESS_OK)
        return NULL;
    ess_buf_append(out, "", 1);
    return out->data;
}

/* The word-at-a-time string scan: a special byte at every position of
 * every 8-byte word is still seen, high bytes are left to UTF-8 checks. */
static void test_string_scan_alignment(void)
{
    char buf[64];
    size_t close;
    int empty;
    for (size_t at = 0; at < 24; at++) {
        memset(buf, 0, sizeof buf);
        memcpy(buf, "{\"k\":\"", 6);
        memset(buf + 6, 'a', 30);
        memcpy(buf + 36, "\"}", 2);
        buf[6 + at] = 0x1f; /* control character */
        CHECK(!ok(buf, &close, &empty) || at >= 30);
        buf[6 + at] = 0x7f; /* DEL is allowed */
        CHECK(ok(buf, &close, &empty));
        buf[6 + at] = '"'; /* ends the string early: the rest is garbage */
        CHECK(!ok(buf, &close, &empty));
        buf[6 + at] = (char)0xff; /* never valid UTF-8 */
        CHECK(!ok(buf, &close, &empty));
        if (at + 1 < 30) {
            memcpy(buf + 6 + at, "\\n", 2); /* an escape */
            CHECK(ok(buf, &close, &empty));
            memcpy(buf + 6 + at, "\xc3\xa9", 2); /* two-byte UTF-8 */
            CHECK(ok(buf, &close, &empty));
        }
    }
}

/* The same bytes lua/ess/enrich.lua's pure-Lua path writes (spec/unit). */
static void test_splice(void)
{
    ess_buf_t b = {0};
    CHECK_EQ_STR(splice("{\"a\":1}", 7, 1700000000123.0, &b),
                 "{\"a\":1,\"o\":7,\"t\":1700000000123}");
    CHECK_EQ_STR(splice("{}", 0, 0, &b), "{\"o\":0,\"t\":0}");
    CHECK_EQ_STR(splice("  { \n }  \n", 1, 2, &b), "  { \n \"o\":1,\"t\":2}  \n");
    CHECK_EQ_STR(splice("{\"x\":\"}\" } ", 3, 4, &b), "{\"x\":\"}\" ,\"o\":3,\"t\":4} ");
    CHECK_EQ_STR(splice("{\"a\":1}", 9007199254740993.0, -5, &b),
                 "{\"a\":1,\"o\":9007199254740992,\"t\":-5}");
    CHECK(splice("{\"a\":1", 1, 2, &b) == NULL);
    CHECK(splice("[1]", 1, 2, &b) == NULL);
    CHECK(splice("{\"a\":1}{}", 1, 2, &b) == NULL);
    ess_buf_free(&b);
    char n[32];
    CHECK_EQ_INT(ess_json_number(n, 0.0 / 0.0), 4);
    CHECK(memcmp(n, "null", 4) == 0);
    CHECK_EQ_INT(ess_json_number(n, 1.5), 3);
    CHECK(memcmp(n, "1.5", 3) == 0);
    n[ess_json_number(n, -9.2e18)] = 0;
    CHECK_EQ_STR(n, "-9200000000000000000");
    n[ess_json_number(n, 1e300)] = 0;
    CHECK_EQ_STR(n, "1.0000000000000001e+300");
}

ESS_TEST_MAIN(ESS_TEST(test_valid_objects), ESS_TEST(test_invalid), ESS_TEST(test_depth_bounded),
              ESS_TEST(test_splice), ESS_TEST(test_string_scan_alignment))
