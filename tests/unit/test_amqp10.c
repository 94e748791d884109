/*
 * Tests for the AMQP 1.0 message decoder: a message RabbitMQ 3.10.8 stored
 * for an AMQP 0-9-1 publish (captured), raw records, amqp-value bodies,
 * several data sections, the properties we read, and application
 * properties of every value type, plus truncation and malformed maps.
 */
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "ess_test.h"
#include "mq/amqp10.h"

/* One record published by ess-publish over AMQP 0-9-1 and read back from
 * the stream: message-annotations, properties (content-type),
 * application-properties (message_type, seq) and one data section. Its
 * sections end at 81, 117, 170 and 296. */
static const char *const CAP_091 =
    "005372c14c06a30d782d726f7574696e672d6b6579a106645f63617032a30a782d65786368616e67"
    "65a10d6576656e742d73747265616d73a315782d62617369632d64656c69766572792d6d6f646550"
    "02005373c01f0d404040404040a3106170706c69636174696f6e2f6a736f6e404040404040005374"
    "c13004a10c6d6573736167655f74797065a1184d65726368616e7450726f63657373696e67436861"
    "726765a1037365715500005375a0797b226d6573736167655f74797065223a224d65726368616e74"
    "50726f63657373696e67436861726765222c22736571223a302c2274696d657374616d70223a2232"
    "3032362d31312d32385430313a35353a34352e3832395a222c226d65726368616e745f6b696e6422"
    "3a22444154415f4d414e41474552227d";

static uint8_t *unhex(const char *h, size_t *len)
{
    size_t n = strlen(h) / 2;
    uint8_t *b = ess_xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (uint8_t)v;
    }
    *len = n;
    return b;
}

static int eq(const void *p, size_t len, const char *s)
{
    return p != NULL && len == strlen(s) && memcmp(p, s, len) == 0;
}

/* Application properties rendered as "key=type:value;" for comparison. */
typedef struct {
    char out[2048];
    size_t used;
    int calls;
    int stop_after;
} props_t;

static int render(void *ud, const char *key, size_t klen, const ess_amqp10_value_t *v)
{
    props_t *p = ud;
    char val[256];
    switch (v->type) {
    case ESS_AMQP10_NULL: snprintf(val, sizeof val, "null"); break;
    case ESS_AMQP10_BOOL: snprintf(val, sizeof val, "bool:%d", v->b); break;
    case ESS_AMQP10_INT: snprintf(val, sizeof val, "int:%lld", (long long)v->i); break;
    case ESS_AMQP10_UINT: snprintf(val, sizeof val, "uint:%llu", (unsigned long long)v->u); break;
    case ESS_AMQP10_DOUBLE: snprintf(val, sizeof val, "double:%g", v->d); break;
    case ESS_AMQP10_TIMESTAMP: snprintf(val, sizeof val, "ts:%lld", (long long)v->i); break;
    case ESS_AMQP10_STRING: snprintf(val, sizeof val, "str:%.*s", (int)v->len, v->s); break;
    case ESS_AMQP10_SYMBOL: snprintf(val, sizeof val, "sym:%.*s", (int)v->len, v->s); break;
    case ESS_AMQP10_BINARY: snprintf(val, sizeof val, "bin:%zu", v->len); break;
    case ESS_AMQP10_UUID: snprintf(val, sizeof val, "uuid:%02x..%02x", v->s[0], v->s[15]); break;
    case ESS_AMQP10_OTHER: snprintf(val, sizeof val, "other:%02x/%zu", v->s[0], v->len); break;
    }
    int n = snprintf(p->out + p->used, sizeof p->out - p->used, "%.*s=%s;", (int)klen, key, val);
    if (n > 0 && (size_t)n < sizeof p->out - p->used)
        p->used += (size_t)n;
    p->calls++;
    return p->stop_after && p->calls >= p->stop_after ? 7 : 0;
}

static int props(const ess_amqp10_msg_t *m, props_t *p)
{
    memset(p, 0, sizeof *p);
    return ess_amqp10_props_each(m->app_props, m->app_props_len, render, p);
}

static void test_captured_091_message(void)
{
    size_t len;
    uint8_t *p = unhex(CAP_091, &len);
    ess_amqp10_msg_t m;
    props_t pr;
    CHECK_EQ_INT(len, 296);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 1);
    CHECK_EQ_INT(m.body_kind, ESS_AMQP10_BODY_DATA);
    CHECK_EQ_INT(m.n_data, 1);
    CHECK(m.body_len == 121 && m.body[0] == '{' && m.body[120] == '}');
    CHECK(eq(m.content_type, m.content_type_len, "application/json"));
    CHECK(m.subject == NULL);
    CHECK(m.content_encoding == NULL);
    CHECK_EQ_INT(m.has_message_id, 0);
    CHECK(m.msg_annotations != NULL && m.msg_annotations[0] == 0xc1);
    CHECK(m.app_props != NULL);
    CHECK_EQ_INT(props(&m, &pr), ESS_OK);
    CHECK_EQ_STR(pr.out, "message_type=str:MerchantProcessingCharge;seq=int:0;");
    /* message-annotations are a map too, with symbol keys. */
    memset(&pr, 0, sizeof pr);
    CHECK_EQ_INT(ess_amqp10_props_each(m.msg_annotations, m.msg_annotations_len, render, &pr),
                 ESS_OK);
    CHECK_EQ_STR(
        pr.out,
        "x-routing-key=str:d_cap2;x-exchange=str:event-streams;x-basic-delivery-mode=uint:2;");
    free(p);
}

/* A prefix is AMQP exactly when it ends on a section boundary; else raw. */
static void test_captured_every_truncation(void)
{
    size_t len;
    uint8_t *p = unhex(CAP_091, &len);
    int bad = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *q = ess_xmalloc(cut ? cut : 1);
        memcpy(q, p, cut);
        ess_amqp10_msg_t m;
        if (ess_amqp10_decode(q, cut, &m) != ESS_OK)
            bad++;
        int boundary = cut == 81 || cut == 117 || cut == 170;
        if (m.is_amqp != boundary)
            bad++;
        if (!m.is_amqp && (m.body != q || m.body_len != cut))
            bad++;
        if (m.is_amqp && (m.body_kind != ESS_AMQP10_BODY_NONE || m.body_len != 0))
            bad++;
        free(q);
    }
    CHECK_EQ_INT(bad, 0);
    free(p);
}

static void test_raw(void)
{
    static const char *const raws[] = {"hello", "{\"a\":1}", "POISON"};
    for (size_t i = 0; i < ESS_ARRAY_SIZE(raws); i++) {
        ess_amqp10_msg_t m;
        const uint8_t *p = (const uint8_t *)raws[i];
        CHECK_EQ_INT(ess_amqp10_decode(p, strlen(raws[i]), &m), ESS_OK);
        CHECK_EQ_INT(m.is_amqp, 0);
        CHECK_EQ_INT(m.body_kind, ESS_AMQP10_BODY_RAW);
        CHECK(m.body == p && m.body_len == strlen(raws[i]));
        CHECK(m.content_type == NULL && m.app_props == NULL);
    }
    /* Looks like a section header but is not one: still raw. */
    static const char *const fakes[] = {
        "00",                       /* a lone zero */
        "0053",                     /* descriptor cut */
        "005379a000",               /* unknown section code 0x79 */
        "005375a105616263",         /* data section holding a string, cut */
        "005375a103616263",         /* data section must be binary */
        "005375a0026162ff",         /* a trailing byte that is no section */
        "005377a0016100537345",     /* properties after the body */
        "0053740a",                 /* application-properties that is not a map */
        "005374c10301a100",         /* a map with an odd count */
        "005375a0016100537740",     /* data then amqp-value */
        "005373c00100005373c00100", /* properties twice */
        "0053704500537045",         /* header twice */
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(fakes); i++) {
        size_t len;
        uint8_t *p = unhex(fakes[i], &len);
        ess_amqp10_msg_t m;
        CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
        if (m.is_amqp != 0)
            fprintf(stderr, "fake %zu decoded as AMQP\n", i);
        CHECK_EQ_INT(m.is_amqp, 0);
        CHECK(m.body == p && m.body_len == len);
        free(p);
    }
    ess_amqp10_msg_t m;
    CHECK_EQ_INT(ess_amqp10_decode(NULL, 0, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 0);
    CHECK_EQ_INT(m.body_len, 0);
    CHECK_EQ_INT(ess_amqp10_decode(NULL, 3, &m), ESS_EINVAL);
    CHECK_EQ_INT(ess_amqp10_decode((const uint8_t *)"x", 1, NULL), ESS_EINVAL);
}

static void test_amqp_value_bodies(void)
{
    static const struct {
        const char *hex;
        int kind;
        const char *body; /* NULL: compare length only */
        size_t body_len;
    } cases[] = {
        {"005377a10568656c6c6f", ESS_AMQP10_BODY_VALUE_STRING, "hello", 5},
        {"005377b10000000568656c6c6f", ESS_AMQP10_BODY_VALUE_STRING, "hello", 5},
        {"005377a003010203", ESS_AMQP10_BODY_VALUE_BINARY, "\x01\x02\x03", 3},
        {"005377b00000000100", ESS_AMQP10_BODY_VALUE_BINARY, NULL, 1},
        {"005377a3036b6579", ESS_AMQP10_BODY_VALUE_SYMBOL, "key", 3},
        {"0053777100000005", ESS_AMQP10_BODY_VALUE_OTHER, NULL, 5}, /* int 5: its encoding */
        {"005377c103024040", ESS_AMQP10_BODY_VALUE_OTHER, NULL, 5}, /* a map value */
        {"00a311616d71703a616d71702d76616c75653a2aa10178", ESS_AMQP10_BODY_VALUE_STRING, "x", 1},
        {"00800000000000000077a10179", ESS_AMQP10_BODY_VALUE_STRING, "y", 1}, /* ulong desc */
        {"005376c0020141", ESS_AMQP10_BODY_SEQUENCE, NULL, 4},
        {"00537045", ESS_AMQP10_BODY_NONE, "", 0},  /* only a header: no body */
        {"005377a1", ESS_AMQP10_BODY_RAW, NULL, 4}, /* cut: raw */
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(cases); i++) {
        size_t len;
        uint8_t *p = unhex(cases[i].hex, &len);
        ess_amqp10_msg_t m;
        CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
        if ((int)m.body_kind != cases[i].kind)
            fprintf(stderr, "case %zu: kind %d\n", i, m.body_kind);
        CHECK_EQ_INT(m.body_kind, cases[i].kind);
        CHECK_EQ_INT(m.is_amqp, cases[i].kind != ESS_AMQP10_BODY_RAW);
        CHECK_EQ_INT(m.body_len, cases[i].body_len);
        if (cases[i].body != NULL)
            CHECK(m.body_len == cases[i].body_len &&
                  (m.body_len == 0 || memcmp(m.body, cases[i].body, m.body_len) == 0));
        CHECK(m.body >= p && m.body + m.body_len <= p + len);
        free(p);
    }
}

static void test_several_data_sections(void)
{
    /* header, then three data sections: "ab", "" and "cde" (vbin32). */
    size_t len;
    uint8_t *p = unhex("005370c0020140"
                       "005375a0026162"
                       "005375a000"
                       "005375b000000003636465",
                       &len);
    ess_amqp10_msg_t m;
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 1);
    CHECK_EQ_INT(m.n_data, 3);
    CHECK(eq(m.body, m.body_len, "ab"));
    size_t n;
    uint8_t *all = ess_amqp10_body_copy(p, len, &m, &n);
    CHECK(eq(all, n, "abcde"));
    free(all);
    free(p);

    /* With one section the copy is of the body. */
    p = unhex("005375a0026162", &len);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    all = ess_amqp10_body_copy(p, len, &m, &n);
    CHECK(eq(all, n, "ab"));
    free(all);
    free(p);
}

static void test_properties_section(void)
{
    /* properties: message-id "id-1", user-id null, to null, subject "Charge",
     * reply-to null, correlation-id null, content-type sym
     * "application/x-protobuf", content-encoding sym "gzip",
     * absolute-expiry null, creation-time 1746019980000. */
    size_t len;
    uint8_t *p = unhex("005373c03e0a"
                       "a10469642d31"
                       "40"
                       "40"
                       "a1064368617267"
                       "65"
                       "40"
                       "40"
                       "a3166170706c69636174696f6e2f782d70726f746f627566"
                       "a304677a6970"
                       "40"
                       "830000019686e692e0"
                       "005375a00101",
                       &len);
    /* The list size above (0x3e) must match what follows the size byte. */
    p[4] = (uint8_t)(len - 6 - 5);
    ess_amqp10_msg_t m;
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 1);
    CHECK_EQ_INT(m.has_message_id, 1);
    CHECK_EQ_INT(m.message_id.type, ESS_AMQP10_STRING);
    CHECK(eq(m.message_id.s, m.message_id.len, "id-1"));
    CHECK(eq(m.subject, m.subject_len, "Charge"));
    CHECK(eq(m.content_type, m.content_type_len, "application/x-protobuf"));
    CHECK(eq(m.content_encoding, m.content_encoding_len, "gzip"));
    CHECK_EQ_INT(m.creation_time, 1746019980000LL);
    CHECK(eq(m.body, m.body_len, "\x01"));
    free(p);

    /* A ulong message-id and list0 properties. */
    p = unhex("005373c00301530700537345", &len);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 0); /* properties twice is not a message */
    free(p);
    p = unhex("005373c0030153070053744000537545", &len);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 0); /* data holding a list */
    free(p);
    p = unhex("005373c003015307005374400053750a", &len);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 0);
    free(p);
    p = unhex("005373c0030153070053744000537577a000", &len);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 0);
    free(p);
    p = unhex("005373c00301530700537440005375a000", &len);
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 1);
    CHECK_EQ_INT(m.has_message_id, 1);
    CHECK_EQ_INT(m.message_id.type, ESS_AMQP10_UINT);
    CHECK_EQ_INT(m.message_id.u, 7);
    CHECK(m.app_props == NULL); /* a null application-properties section */
    CHECK_EQ_INT(m.body_len, 0);
    free(p);
}

static void test_app_props_every_type(void)
{
    /* A map32 of 36 entries (72 elements): one key per value type. */
    static const char *const pairs[][2] = {
        {"null", "40"},
        {"t", "41"},
        {"f", "42"},
        {"b1", "5601"},
        {"ub", "50ff"},
        {"us", "60ffff"},
        {"ui", "70ffffffff"},
        {"sui", "52ff"},
        {"ui0", "43"},
        {"ul", "80ffffffffffffffff"},
        {"sul", "53ff"},
        {"ul0", "44"},
        {"by", "51ff"},
        {"sh", "618000"},
        {"in", "7180000000"},
        {"si", "54ff"},
        {"lo", "818000000000000000"},
        {"sl", "55ff"},
        {"fl", "723fc00000"},
        {"do", "82c004000000000000"},
        {"ts", "830000019686e692e0"},
        {"uu", "9800112233445566778899aabbccddeeff"},
        {"v8", "a003010203"},
        {"v32", "b00000000100"},
        {"s8", "a102c3a9"},
        {"s32", "b10000000161"},
        {"y8", "a303616263"},
        {"y32", "b30000000178"},
        {"ch", "7300000041"},
        {"d32", "7400000000"},
        {"li", "c0020141"},
        {"em", "a100"},
        {"desc", "00530141"},
        {"ar", "e00402505051"},
        {"l0", "45"},
        {"d128", "9400000000000000000000000000000000"},
    };
    char hex[4096] = "";
    size_t body = 0;
    size_t n = ESS_ARRAY_SIZE(pairs);
    for (size_t i = 0; i < n; i++) {
        char k[64];
        snprintf(k, sizeof k, "a1%02zx", strlen(pairs[i][0]));
        strcat(hex, k);
        for (const char *c = pairs[i][0]; *c; c++) {
            snprintf(k, sizeof k, "%02x", (unsigned char)*c);
            strcat(hex, k);
        }
        strcat(hex, pairs[i][1]);
        body += 2 + strlen(pairs[i][0]) + strlen(pairs[i][1]) / 2;
    }
    char msg[5000];
    snprintf(msg, sizeof msg, "005374d1%08zx%08zx%s005375a000", body + 4, 2 * n, hex);
    size_t len;
    uint8_t *p = unhex(msg, &len);
    ess_amqp10_msg_t m;
    props_t pr;
    CHECK_EQ_INT(ess_amqp10_decode(p, len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 1);
    CHECK(m.app_props != NULL && m.app_props[0] == 0xd1);
    CHECK_EQ_INT(props(&m, &pr), ESS_OK);
    CHECK_EQ_INT(pr.calls, (int)n);
    CHECK_EQ_STR(pr.out, "null=null;t=bool:1;f=bool:0;b1=bool:1;ub=uint:255;us=uint:65535;"
                         "ui=uint:4294967295;sui=uint:255;ui0=uint:0;ul=uint:18446744073709551615;"
                         "sul=uint:255;ul0=uint:0;by=int:-1;sh=int:-32768;in=int:-2147483648;"
                         "si=int:-1;lo=int:-9223372036854775808;sl=int:-1;fl=double:1.5;"
                         "do=double:-2.5;ts=ts:1746019980000;uu=uuid:00..ff;v8=bin:3;v32=bin:1;"
                         "s8=str:\xc3\xa9;s32=str:a;y8=sym:abc;y32=sym:x;ch=uint:65;"
                         "d32=other:74/5;li=other:c0/4;em=str:;desc=other:00/4;ar=other:e0/6;"
                         "l0=other:45/1;d128=other:94/17;");

    /* The callback stops the iteration with its value. */
    memset(&pr, 0, sizeof pr);
    pr.stop_after = 3;
    CHECK_EQ_INT(ess_amqp10_props_each(m.app_props, m.app_props_len, render, &pr), 7);
    CHECK_EQ_INT(pr.calls, 3);

    /* Every truncation of the map is an error, never a read past it. */
    int bad = 0;
    for (size_t cut = 0; cut < m.app_props_len; cut++) {
        uint8_t *q = ess_xmalloc(cut ? cut : 1);
        memcpy(q, m.app_props, cut);
        props_t t;
        memset(&t, 0, sizeof t);
        int rc = ess_amqp10_props_each(q, cut, render, &t);
        if (cut > 0 && rc != ESS_EPROTO)
            bad++;
        if (cut == 0 && rc != ESS_OK)
            bad++;
        free(q);
    }
    CHECK_EQ_INT(bad, 0);
    free(p);
}

static void test_app_props_malformed(void)
{
    static const char *const bad[] = {
        "c10402510140",         /* key is not a string */
        "c10302a101",           /* value missing */
        "c10401a10161",         /* odd count */
        "c10302a100",           /* count exceeds the elements present */
        "d1000000030000000241", /* map32 count exceeds */
        "d100000002",           /* map32 size too small */
        "c005024040",           /* a list, not a map */
        "5601",                 /* not a compound */
        "c10302a10161ff",       /* trailing byte beyond size */
        "c10602a1016156ff",     /* boolean byte 0xff */
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(bad); i++) {
        size_t len;
        uint8_t *p = unhex(bad[i], &len);
        props_t t;
        memset(&t, 0, sizeof t);
        int rc = ess_amqp10_props_each(p, len, render, &t);
        if (rc != ESS_EPROTO)
            fprintf(stderr, "bad map %zu: rc %d\n", i, rc);
        CHECK_EQ_INT(rc, ESS_EPROTO);
        free(p);
    }
    props_t t;
    memset(&t, 0, sizeof t);
    CHECK_EQ_INT(ess_amqp10_props_each(NULL, 0, render, &t), ESS_OK);
    CHECK_EQ_INT(t.calls, 0);
    CHECK_EQ_INT(ess_amqp10_props_each((const uint8_t *)"\x40", 1, render, &t), ESS_OK);
    CHECK_EQ_INT(ess_amqp10_props_each((const uint8_t *)"\xc1\x01\x00", 3, render, &t), ESS_OK);
    CHECK_EQ_INT(t.calls, 0);
}

static void test_deep_nesting_is_bounded(void)
{
    /* amqp-value of 10,000 nested described types: rejected, no stack overflow. */
    size_t n = 10000;
    uint8_t *p = ess_xmalloc(3 + 2 * n + 1);
    memcpy(p, "\x00\x53\x77", 3);
    for (size_t i = 0; i < n; i++) {
        p[3 + 2 * i] = 0x00;
        p[4 + 2 * i] = 0x40;
    }
    p[3 + 2 * n] = 0x40;
    ess_amqp10_msg_t m;
    CHECK_EQ_INT(ess_amqp10_decode(p, 3 + 2 * n + 1, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 0);
    free(p);
}

ESS_TEST_MAIN(ESS_TEST(test_captured_091_message), ESS_TEST(test_captured_every_truncation),
              ESS_TEST(test_raw), ESS_TEST(test_amqp_value_bodies),
              ESS_TEST(test_several_data_sections), ESS_TEST(test_properties_section),
              ESS_TEST(test_app_props_every_type), ESS_TEST(test_app_props_malformed),
              ESS_TEST(test_deep_nesting_is_bounded))
