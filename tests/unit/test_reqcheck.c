/* Unit tests for http/reqcheck: the request-head check run before lws. */
#include "ess_test.h"
#include "ess.h"
#include "http/reqcheck.h"

#include <stdlib.h>
#include <string.h>

static const ess_req_limits_t lim = {8192, 65536};

static int status_of(const char *head)
{
    ess_req_head_t h;
    ess_req_check(head, strlen(head), &lim, &h);
    return h.status;
}

static void test_accepts_ordinary_requests(void)
{
    ess_req_head_t h;
    const char *ws = "GET /event-stream/abc?stream_from_ordinal=3 HTTP/1.1\r\nHost: x\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    ess_req_check(ws, strlen(ws), &lim, &h);
    CHECK_EQ_INT(h.status, 0);
    CHECK_EQ_INT(h.upgrade, 1);
    CHECK_EQ_INT(h.content_length, -1);
    CHECK(strcmp(h.method, "GET") == 0);
    CHECK_EQ_INT(h.target_len, strlen("/event-stream/abc?stream_from_ordinal=3"));
    const char *post =
        "\r\nPOST /event-stream/ HTTP/1.0\nContent-Length:  21 \nExpect: 100-continue\n\n";
    ess_req_check(post, strlen(post), &lim, &h);
    CHECK_EQ_INT(h.status, 0);
    CHECK_EQ_INT(h.content_length, 21);
    CHECK_EQ_INT(h.expect_continue, 1);
    CHECK_EQ_INT(status_of("GET /a%2Fb%41 HTTP/1.1\r\n\r\n"), 0);
}

static void test_refusals(void)
{
    static const struct {
        const char *head;
        int status;
    } cases[] = {
        {"TRACE / HTTP/1.1\r\n\r\n", 405},
        {"FOO / HTTP/1.1\r\n\r\n", 405},
        {"CONNECT evil:443 HTTP/1.1\r\n\r\n", 405},
        {"get / HTTP/1.1\r\n\r\n", 405},
        {"GET * HTTP/1.1\r\n\r\n", 400},
        {"GET http://evil/x HTTP/1.1\r\n\r\n", 400},
        {"GET /health/live%00 HTTP/1.1\r\n\r\n", 400},
        {"GET /x?a=1%00 HTTP/1.1\r\n\r\n", 400},
        {"GET /x%4 HTTP/1.1\r\n\r\n", 400},
        {"GET /x%zz HTTP/1.1\r\n\r\n", 400},
        {"GET /x HTTP/2.0\r\n\r\n", 505},
        {"GET /x\r\n\r\n", 400},
        {"GET  /x HTTP/1.1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 413},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX A: 1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(cases); i++) {
        int st = status_of(cases[i].head);
        if (st != cases[i].status)
            fprintf(stderr, "case %zu: %s\n", i, cases[i].head);
        CHECK_EQ_INT(st, cases[i].status);
    }
    ess_req_head_t h;
    const char *nul = "GET / HTTP/1.1\r\nAuthorization: Bearer a\0junk\r\n\r\n";
    ess_req_check(nul, 48, &lim, &h);
    CHECK_EQ_INT(h.status, 400);
    ess_req_check("TRACE / HTTP/1.1\r\n\r\n", 20, &lim, &h);
    CHECK(h.allow != NULL && strstr(h.allow, "GET") != NULL);
}

static void test_counts(void)
{
    /* 65 header lines: 431; 100 query parameters: 414. */
    char *b = malloc(8192);
    size_t n = (size_t)sprintf(b, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 65; i++)
        n += (size_t)sprintf(b + n, "X-%d: v\r\n", i);
    n += (size_t)sprintf(b + n, "\r\n");
    ess_req_head_t h;
    ess_req_check(b, n, &lim, &h);
    CHECK_EQ_INT(h.status, 431);
    n = (size_t)sprintf(b, "GET /?a=1");
    for (int i = 0; i < 100; i++)
        n += (size_t)sprintf(b + n, "&p%d=1", i);
    n += (size_t)sprintf(b + n, " HTTP/1.1\r\n\r\n");
    ess_req_check(b, n, &lim, &h);
    CHECK_EQ_INT(h.status, 414);
    free(b);
}

static void test_head_end(void)
{
    size_t scanned = 0;
    int st;
    const char *h = "GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
    /* fed in two parts: not complete, then complete at the blank line */
    CHECK_EQ_INT(ess_req_head_end(h, 10, &lim, &scanned, &st), 0);
    CHECK_EQ_INT(st, 0);
    CHECK_EQ_INT(ess_req_head_end(h, strlen(h), &lim, &scanned, &st), strlen(h) - 4);
    /* over the limit without an end: 414 before the first line feed, else 431 */
    ess_req_limits_t small = {64, 0};
    char big[200];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /", 5);
    scanned = 0;
    CHECK_EQ_INT(ess_req_head_end(big, sizeof big, &small, &scanned, &st), 0);
    CHECK_EQ_INT(st, 414);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    scanned = 0;
    CHECK_EQ_INT(ess_req_head_end(big, sizeof big, &small, &scanned, &st), 0);
    CHECK_EQ_INT(st, 431);
}

ESS_TEST_MAIN(ESS_TEST(test_accepts_ordinary_requests), ESS_TEST(test_refusals),
              ESS_TEST(test_counts), ESS_TEST(test_head_end))
