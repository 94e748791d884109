/*
 * Unit tests of the AMQP URL parser (mq/url.c): defaults, percent-decoding,
 * the vhost rule of the original service, and rejection of bad input.
 */
#include <string.h>

#include "ess.h"
#include "ess_test.h"
#include "mq/url.h"

static void test_full(void)
{
    ess_url_t u;
    CHECK_EQ_INT(ess_url_parse("amqp://alice:s3cret@broker.local:5673/prod", &u), ESS_OK);
    CHECK_EQ_STR(u.user, "alice");
    CHECK_EQ_STR(u.pass, "s3cret");
    CHECK_EQ_STR(u.host, "broker.local");
    CHECK_EQ_INT(u.port, 5673);
    CHECK_EQ_STR(u.vhost, "prod");
    CHECK_EQ_INT(u.tls, 0);
    ess_url_free(&u);
    CHECK(u.host == NULL);
}

static void test_defaults(void)
{
    ess_url_t u;
    CHECK_EQ_INT(ess_url_parse("amqp://rabbit", &u), ESS_OK);
    CHECK_EQ_STR(u.user, "guest");
    CHECK_EQ_STR(u.pass, "guest");
    CHECK_EQ_STR(u.host, "rabbit");
    CHECK_EQ_INT(u.port, 5672);
    CHECK_EQ_STR(u.vhost, "/");
    ess_url_free(&u);
    CHECK_EQ_INT(ess_url_parse("amqp://rabbit/", &u), ESS_OK);
    CHECK_EQ_STR(u.vhost, "/");
    ess_url_free(&u);
    CHECK_EQ_INT(ess_url_parse("amqp://bob@rabbit:1234", &u), ESS_OK);
    CHECK_EQ_STR(u.user, "bob");
    CHECK_EQ_STR(u.pass, "guest");
    CHECK_EQ_INT(u.port, 1234);
    ess_url_free(&u);
    CHECK_EQ_INT(ess_url_parse("amqps://h", &u), ESS_OK);
    CHECK_EQ_INT(u.port, 5671);
    CHECK_EQ_INT(u.tls, 1);
    ess_url_free(&u);
}

static void test_percent_decoding(void)
{
    ess_url_t u;
    CHECK_EQ_INT(ess_url_parse("amqp://us%40er:p%3Aa%2Fss@h/%2F", &u), ESS_OK);
    CHECK_EQ_STR(u.user, "us@er");
    CHECK_EQ_STR(u.pass, "p:a/ss");
    CHECK_EQ_STR(u.vhost, "/");
    ess_url_free(&u);
    CHECK_EQ_INT(ess_url_parse("amqp://h/my%20vhost?heartbeat=10", &u), ESS_OK);
    CHECK_EQ_STR(u.vhost, "my vhost");
    ess_url_free(&u);
    CHECK_EQ_INT(ess_url_parse("amqp://u:@h", &u), ESS_OK);
    CHECK_EQ_STR(u.pass, "");
    ess_url_free(&u);
}

static void test_ipv6(void)
{
    ess_url_t u;
    CHECK_EQ_INT(ess_url_parse("amqp://[::1]:5679/v", &u), ESS_OK);
    CHECK_EQ_STR(u.host, "::1");
    CHECK_EQ_INT(u.port, 5679);
    CHECK_EQ_STR(u.vhost, "v");
    ess_url_free(&u);
    CHECK_EQ_INT(ess_url_parse("amqp://[::1]", &u), ESS_OK);
    CHECK_EQ_INT(u.port, 5672);
    ess_url_free(&u);
}

static void test_rejects(void)
{
    static const char *bad[] = {
        NULL,
        "",
        "http://h",
        "amqp://",
        "amqp:///vhost",
        "amqp://u:p@/v",
        "amqp://h:",
        "amqp://h:0",
        "amqp://h:65536",
        "amqp://h:12x",
        "amqp://h:-1",
        "amqp://%zz@h",
        "amqp://u:p%4@h",
        "amqp://h/%00",
        "amqp://u@p@h",
        "amqp://[::1",
        "amqp://[::1]x",
        "amqp://%41%00@h",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(bad); i++) {
        ess_url_t u;
        int rc = ess_url_parse(bad[i], &u);
        if (rc != ESS_EINVAL)
            fprintf(stderr, "accepted: %s\n", bad[i] ? bad[i] : "(null)");
        CHECK_EQ_INT(rc, ESS_EINVAL);
        CHECK(u.host == NULL && u.user == NULL && u.vhost == NULL);
    }
}

ESS_TEST_MAIN(ESS_TEST(test_full), ESS_TEST(test_defaults), ESS_TEST(test_percent_decoding),
              ESS_TEST(test_ipv6), ESS_TEST(test_rejects))
