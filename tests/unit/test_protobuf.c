/*
 * Tests of core/proto/protobuf.c: type names, the content type, the type of
 * an AMQP 1.0 record, the one-line text form of every known message type
 * (packed with protobuf-c, rendered, compared with the exact string
 * Python's text_format.MessageToString(as_one_line=True) prints for the
 * same bytes), every field kind through the test-only esstest.Everything,
 * every truncation point and garbage bytes, and the Lua table form with
 * the ess.protobuf functions (core/script/protobuf_lua.c).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "accountserver.pb-c.h"
#include "common.pb-c.h"
#include "datamanager.pb-c.h"
#include "ess.h"
#include "ess_test.h"
#include "esstest.pb-c.h"
#include "mq/amqp10.h"
#include "proto/protobuf.h"
#include "script/protobuf_lua.h"

typedef Informaticsmatters__Protobuf__Accountserver__MerchantChargeMessage charge_t;
typedef Informaticsmatters__Protobuf__Accountserver__MerchantProcessingChargeMessage processing_t;
typedef Informaticsmatters__Protobuf__Accountserver__MerchantStorageChargeMessage storage_t;
typedef Informaticsmatters__Protobuf__Accountserver__MerchantAuthorityRequestResponseMessage
    authority_t;
typedef Informaticsmatters__Protobuf__Datamanager__PodMessage pod_t;
typedef Informaticsmatters__Protobuf__Datamanager__PodEventMessage pod_event_t;
typedef Informaticsmatters__Protobuf__Datamanager__InstanceEventMessage instance_event_t;
typedef Informaticsmatters__Protobuf__Datamanager__InstanceCostMessage instance_cost_t;
typedef Informaticsmatters__Protobuf__Common__AlertMessage alert_t;

/* Pack a protobuf-c message into a new buffer (the caller frees it). */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *p = ess_xmalloc(*len ? *len : 1);
    CHECK_EQ_INT(protobuf_c_message_pack(m, p), *len);
    return p;
}

/* Render m through its text-form name and compare with want. */
static void check_text(const char *type, const ProtobufCMessage *m, const char *want)
{
    size_t len;
    uint8_t *p = pack(m, &len);
    ess_buf_t out = {0};
    CHECK_EQ_INT(ess_protobuf_to_text(type, strlen(type), p, len, &out), ESS_OK);
    CHECK_EQ_STR(out.data, want);
    ess_buf_free(&out);
    free(p);
}

/* Render m without a name (any descriptor) and compare with want. */
static void check_fields(const ProtobufCMessage *m, const char *want)
{
    size_t len;
    uint8_t *p = pack(m, &len);
    ess_buf_t out = {0};
    CHECK_EQ_INT(ess_protobuf_render(m->descriptor, p, len, &out), ESS_OK);
    CHECK_EQ_STR(out.data ? out.data : "", want);
    ess_buf_free(&out);
    free(p);
}

static void test_find(void)
{
    const ProtobufCMessageDescriptor *pc =
        &informaticsmatters__protobuf__accountserver__merchant_processing_charge_message__descriptor;
    static const char *const spellings[] = {
        "MerchantProcessingCharge",
        "merchantprocessingcharge",
        "MerchantProcessingChargeMessage",
        "accountserver.MerchantProcessingCharge",
        "accountserver.merchantprocessingcharge",
        "accountserver.MerchantProcessingChargeMessage",
        "informaticsmatters.protobuf.accountserver.MerchantProcessingChargeMessage",
        "informaticsmatters.protobuf.accountserver.MerchantProcessingCharge",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(spellings); i++)
        CHECK(ess_protobuf_find(spellings[i], strlen(spellings[i])) == pc);
    static const char *const unknown[] = {
        "",
        "Merchant",
        "MerchantProcessingChargeX",
        "datamanager.MerchantProcessingCharge",
        "accountserver.",
        ".MerchantProcessingCharge",
        "Message",
        "esstest.Everything",
        "Everything",
        "x.y.MerchantProcessingCharge",
        "MerchantProcessingCharge ",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(unknown); i++)
        CHECK(ess_protobuf_find(unknown[i], strlen(unknown[i])) == NULL);
    CHECK(ess_protobuf_find(NULL, 0) == NULL);
    /* A length that stops early, and an embedded NUL. */
    CHECK(ess_protobuf_find("PodEventX", 8) ==
          &informaticsmatters__protobuf__datamanager__pod_event_message__descriptor);
    CHECK(ess_protobuf_find("Pod\0Event", 9) == NULL);
    CHECK(ess_protobuf_find("datamanager.Pod", 15) ==
          &informaticsmatters__protobuf__datamanager__pod_message__descriptor);
    CHECK(ess_protobuf_find("common.alert", 12) ==
          &informaticsmatters__protobuf__common__alert_message__descriptor);

    /* Every listed type is found by its own text name, and names are unique. */
    CHECK_EQ_INT(ess_protobuf_type_count(), 9);
    CHECK(ess_protobuf_type_at(9) == NULL);
    for (size_t i = 0; i < ess_protobuf_type_count(); i++) {
        const ProtobufCMessageDescriptor *d = ess_protobuf_type_at(i);
        const char *name = ess_protobuf_name(d);
        CHECK(ess_protobuf_find(name, strlen(name)) == d);
        CHECK(ess_protobuf_find(d->short_name, strlen(d->short_name)) == d);
        CHECK(ess_protobuf_find(d->name, strlen(d->name)) == d);
    }
    CHECK_EQ_STR(ess_protobuf_name(pc), "accountserver.MerchantProcessingCharge");
    CHECK_EQ_STR(ess_protobuf_name(&esstest__everything__descriptor), "esstest.Everything");
}

static void test_content_type(void)
{
    static const char *const yes[] = {
        "application/x-protobuf",
        "APPLICATION/X-PROTOBUF",
        "application/protobuf",
        "application/x-protobuf;",
        "application/x-protobuf; proto=accountserver.Pod",
        "application/x-protobuf ; charset=binary",
    };
    static const char *const no[] = {
        "",
        "application/json",
        "text/plain",
        "application/x-protobufs",
        "application/x-proto",
        "x-protobuf",
        " application/x-protobuf",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(yes); i++)
        CHECK_EQ_INT(ess_protobuf_is_content_type(yes[i], strlen(yes[i])), 1);
    for (size_t i = 0; i < ESS_ARRAY_SIZE(no); i++)
        CHECK_EQ_INT(ess_protobuf_is_content_type(no[i], strlen(no[i])), 0);
    CHECK_EQ_INT(ess_protobuf_is_content_type(NULL, 0), 0);
    /* The length is respected: the prefix of a longer string. */
    CHECK_EQ_INT(ess_protobuf_is_content_type("application/x-protobufXYZ", 22), 1);
}

/* ---- a hand-built AMQP 1.0 record ----------------------------------------- */

static void put(ess_buf_t *b, const void *p, size_t n)
{
    ess_buf_append(b, p, n);
}

static void put_byte(ess_buf_t *b, uint8_t c)
{
    ess_buf_append(b, &c, 1);
}

/* str8 (0xa1) or sym8 (0xa3) */
static void put_str(ess_buf_t *b, uint8_t code, const char *s)
{
    put_byte(b, code);
    put_byte(b, (uint8_t)strlen(s));
    put(b, s, strlen(s));
}

/* An AMQP 1.0 record; NULL arguments leave the part out. basic_type is
 * the application property RabbitMQ 3.10 makes of an AMQP 0-9-1
 * basic.properties.type (captured from the broker). */
static void build_record(ess_buf_t *b, const char *content_type, const char *subject,
                         const char *basic_type, const char *message_type)
{
    ess_buf_reset(b);
    put(b, "\x00\x53\x72\xc1\x0f\x02", 6); /* message-annotations */
    put_str(b, 0xa3, "x-exchange");
    put_str(b, 0xa1, "");
    if (content_type != NULL || subject != NULL) {
        ess_buf_t l = {0};
        put_byte(&l, 7);
        put(&l, "\x40\x40\x40", 3); /* message-id, user-id, to */
        if (subject != NULL)
            put_str(&l, 0xa1, subject);
        else
            put_byte(&l, 0x40);
        put(&l, "\x40\x40", 2); /* reply-to, correlation-id */
        if (content_type != NULL)
            put_str(&l, 0xa3, content_type);
        else
            put_byte(&l, 0x40);
        put(b, "\x00\x53\x73\xc0", 4);
        put_byte(b, (uint8_t)l.len);
        put(b, l.data, l.len);
        ess_buf_free(&l);
    }
    ess_buf_t m = {0};
    uint8_t count = 2; /* a "seq" header first, like ess-publish's */
    put_str(&m, 0xa1, "seq");
    put(&m, "\x55\x07", 2); /* smallint 7 */
    if (basic_type != NULL) {
        put_str(&m, 0xa1, "x-basic-type");
        put_str(&m, 0xa1, basic_type);
        count += 2;
    }
    if (message_type != NULL) {
        put_str(&m, 0xa1, "message_type");
        put_str(&m, 0xa1, message_type);
        count += 2;
    }
    put(b, "\x00\x53\x74\xc1", 4);
    put_byte(b, (uint8_t)(m.len + 1));
    put_byte(b, count);
    put(b, m.data, m.len);
    ess_buf_free(&m);
    put(b, "\x00\x53\x75\xa0\x02\x08\x01", 7); /* data: sqn = 1 */
}

/* Records captured from RabbitMQ 3.10.8 (stream essB_pb_Pod): an AMQP
 * 0-9-1 publish with content_type application/x-protobuf and
 * basic.properties.type "Pod" (no headers) ... */
static const uint8_t captured_basic_type[] = {
    0x00, 0x53, 0x72, 0xc1, 0x51, 0x06, 0xa3, 0x0d, 0x78, 0x2d, 0x72, 0x6f, 0x75, 0x74, 0x69, 0x6e,
    0x67, 0x2d, 0x6b, 0x65, 0x79, 0xa1, 0x0b, 0x65, 0x73, 0x73, 0x42, 0x5f, 0x70, 0x62, 0x5f, 0x50,
    0x6f, 0x64, 0xa3, 0x0a, 0x78, 0x2d, 0x65, 0x78, 0x63, 0x68, 0x61, 0x6e, 0x67, 0x65, 0xa1, 0x0d,
    0x65, 0x76, 0x65, 0x6e, 0x74, 0x2d, 0x73, 0x74, 0x72, 0x65, 0x61, 0x6d, 0x73, 0xa3, 0x15, 0x78,
    0x2d, 0x62, 0x61, 0x73, 0x69, 0x63, 0x2d, 0x64, 0x65, 0x6c, 0x69, 0x76, 0x65, 0x72, 0x79, 0x2d,
    0x6d, 0x6f, 0x64, 0x65, 0x50, 0x02, 0x00, 0x53, 0x73, 0xc0, 0x25, 0x0d, 0x40, 0x40, 0x40, 0x40,
    0x40, 0x40, 0xa3, 0x16, 0x61, 0x70, 0x70, 0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f,
    0x78, 0x2d, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x62, 0x75, 0x66, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40,
    0x00, 0x53, 0x74, 0xc1, 0x14, 0x02, 0xa1, 0x0c, 0x78, 0x2d, 0x62, 0x61, 0x73, 0x69, 0x63, 0x2d,
    0x74, 0x79, 0x70, 0x65, 0xa1, 0x03, 0x50, 0x6f, 0x64, 0x00, 0x53, 0x75, 0xa0, 0x0a, 0x12, 0x08,
    0x76, 0x69, 0x61, 0x2d, 0x74, 0x79, 0x70, 0x65,
};
/* ... and one from ess-publish --protobuf-type InstanceEvent (the type in
 * the message_type header). */
static const uint8_t captured_ess_publish[] = {
    0x00, 0x53, 0x72, 0xc1, 0x51, 0x06, 0xa3, 0x0d, 0x78, 0x2d, 0x72, 0x6f, 0x75, 0x74, 0x69, 0x6e,
    0x67, 0x2d, 0x6b, 0x65, 0x79, 0xa1, 0x0b, 0x65, 0x73, 0x73, 0x42, 0x5f, 0x70, 0x62, 0x5f, 0x50,
    0x6f, 0x64, 0xa3, 0x0a, 0x78, 0x2d, 0x65, 0x78, 0x63, 0x68, 0x61, 0x6e, 0x67, 0x65, 0xa1, 0x0d,
    0x65, 0x76, 0x65, 0x6e, 0x74, 0x2d, 0x73, 0x74, 0x72, 0x65, 0x61, 0x6d, 0x73, 0xa3, 0x15, 0x78,
    0x2d, 0x62, 0x61, 0x73, 0x69, 0x63, 0x2d, 0x64, 0x65, 0x6c, 0x69, 0x76, 0x65, 0x72, 0x79, 0x2d,
    0x6d, 0x6f, 0x64, 0x65, 0x50, 0x02, 0x00, 0x53, 0x73, 0xc0, 0x25, 0x0d, 0x40, 0x40, 0x40, 0x40,
    0x40, 0x40, 0xa3, 0x16, 0x61, 0x70, 0x70, 0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f,
    0x78, 0x2d, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x62, 0x75, 0x66, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40,
    0x00, 0x53, 0x74, 0xc1, 0x31, 0x04, 0xa1, 0x0c, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x5f,
    0x74, 0x79, 0x70, 0x65, 0xa1, 0x19, 0x64, 0x61, 0x74, 0x61, 0x6d, 0x61, 0x6e, 0x61, 0x67, 0x65,
    0x72, 0x2e, 0x49, 0x6e, 0x73, 0x74, 0x61, 0x6e, 0x63, 0x65, 0x45, 0x76, 0x65, 0x6e, 0x74, 0xa1,
    0x03, 0x73, 0x65, 0x71, 0x55, 0x00, 0x00, 0x53, 0x75, 0xa0, 0x38, 0x0a, 0x18, 0x32, 0x30, 0x32,
    0x36, 0x2d, 0x31, 0x31, 0x2d, 0x32, 0x38, 0x54, 0x30, 0x32, 0x3a, 0x32, 0x35, 0x3a, 0x30, 0x37,
    0x2e, 0x39, 0x31, 0x37, 0x5a, 0x12, 0x06, 0x74, 0x61, 0x73, 0x6b, 0x2d, 0x31, 0x1a, 0x07, 0x6c,
    0x65, 0x76, 0x65, 0x6c, 0x2d, 0x31, 0x22, 0x09, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d,
    0x31, 0x28, 0x01,
};

static int type_of(const ess_buf_t *rec, char *type, size_t cap)
{
    ess_amqp10_msg_t m;
    const char *t;
    size_t tl;
    CHECK_EQ_INT(ess_amqp10_decode((const uint8_t *)rec->data, rec->len, &m), ESS_OK);
    CHECK_EQ_INT(m.is_amqp, 1);
    int rc = ess_protobuf_type_of(&m, &t, &tl);
    if (rc == ESS_OK) {
        CHECK(tl < cap);
        snprintf(type, cap, "%.*s", (int)tl, t);
    }
    return rc;
}

static void test_type_of(void)
{
    ess_buf_t rec = {0};
    char type[64] = "";
    const char *pb = "application/x-protobuf";

    build_record(&rec, pb, "Pod", "PodEvent", "MerchantProcessingCharge");
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_OK);
    CHECK_EQ_STR(type, "MerchantProcessingCharge");

    build_record(&rec, pb, "Pod", "accountserver.MerchantCharge", NULL);
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_OK);
    CHECK_EQ_STR(type, "accountserver.MerchantCharge");

    build_record(&rec, pb, "datamanager.Pod", NULL, NULL);
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_OK);
    CHECK_EQ_STR(type, "datamanager.Pod");

    /* An unknown type is still reported: find decides. */
    build_record(&rec, pb, NULL, NULL, "NoSuchType");
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_OK);
    CHECK_EQ_STR(type, "NoSuchType");

    build_record(&rec, pb, NULL, NULL, NULL);
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_ENOTFOUND);
    build_record(&rec, "application/json", "Pod", NULL, "Pod");
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_ENOTFOUND);
    build_record(&rec, NULL, "Pod", NULL, "Pod");
    CHECK_EQ_INT(type_of(&rec, type, sizeof type), ESS_ENOTFOUND);

    /* The captured records, through to the text form. */
    struct {
        const uint8_t *rec;
        size_t len;
        const char *type, *text;
    } cap[] = {
        {captured_basic_type, sizeof captured_basic_type, "Pod",
         "datamanager.Pod|pod_name: \"via-type\""},
        {captured_ess_publish, sizeof captured_ess_publish, "datamanager.InstanceEvent",
         "datamanager.InstanceEvent|timestamp: \"2026-11-28T02:25:07.917Z\" task: \"task-1\" "
         "level: \"level-1\" content: \"content-1\" replace_prior_content: true"},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(cap); i++) {
        ess_amqp10_msg_t cm;
        const char *ct;
        size_t ctl;
        CHECK_EQ_INT(ess_amqp10_decode(cap[i].rec, cap[i].len, &cm), ESS_OK);
        CHECK_EQ_INT(ess_protobuf_type_of(&cm, &ct, &ctl), ESS_OK);
        CHECK(ctl == strlen(cap[i].type) && memcmp(ct, cap[i].type, ctl) == 0);
        ess_buf_t out = {0};
        CHECK_EQ_INT(ess_protobuf_to_text(ct, ctl, cm.body, cm.body_len, &out), ESS_OK);
        CHECK_EQ_STR(out.data, cap[i].text);
        ess_buf_free(&out);
    }

    /* A raw (non-AMQP) record is never protobuf. */
    ess_amqp10_msg_t m;
    const char *t;
    size_t tl;
    CHECK_EQ_INT(ess_amqp10_decode((const uint8_t *)"\x08\x01", 2, &m), ESS_OK);
    CHECK_EQ_INT(ess_protobuf_type_of(&m, &t, &tl), ESS_ENOTFOUND);
    CHECK_EQ_INT(ess_protobuf_type_of(NULL, &t, &tl), ESS_EINVAL);
    ess_buf_free(&rec);
}

/* ---- every known type ------------------------------------------------------ */

static void test_merchant_charge(void)
{
    charge_t m = INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_CHARGE_MESSAGE__INIT;
    m.timestamp = "2025-04-30T13:33:00.123+00:00";
    m.merchant_kind = "DATA_MANAGER";
    m.merchant_name = "squonk";
    m.merchant_id = 1;
    m.operation =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__OPERATION_ENUM__OPERATION_ENUM_PROCESSING;
    m.auth_code = "456782";
    m.value = "0.50";
    m.sqn = 1;
    m.product = "product-0123";
    m.eoc = 1;
    check_text("MerchantCharge", &m.base,
               "accountserver.MerchantCharge|timestamp: \"2025-04-30T13:33:00.123+00:00\" "
               "merchant_kind: \"DATA_MANAGER\" merchant_name: \"squonk\" merchant_id: 1 "
               "operation: OPERATION_ENUM_PROCESSING auth_code: \"456782\" value: \"0.50\" "
               "sqn: 1 product: \"product-0123\" eoc: true");
}

static void test_merchant_processing_charge(void)
{
    processing_t m =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_PROCESSING_CHARGE_MESSAGE__INIT;
    m.timestamp = "2021-12-31T00:00:00.00Z";
    m.merchant_kind = "DATA_MANAGER";
    m.merchant_name = "dm-1";
    m.merchant_id = 4294967295u;
    m.auth_code = 2147483647u;
    m.name = "Job \"max\" run";
    m.coins = "12.375";
    m.sqn = 42;
    m.user = "dlister";
    m.unit = "unit-7";
    m.organisation = "org-1";
    m.additional_data = "{'a': 1}";
    check_text("accountserver.MerchantProcessingCharge", &m.base,
               "accountserver.MerchantProcessingCharge|timestamp: \"2021-12-31T00:00:00.00Z\" "
               "merchant_kind: \"DATA_MANAGER\" merchant_name: \"dm-1\" merchant_id: 4294967295 "
               "auth_code: 2147483647 name: \"Job \\\"max\\\" run\" coins: \"12.375\" sqn: 42 "
               "user: \"dlister\" unit: \"unit-7\" organisation: \"org-1\" "
               "additional_data: \"{\\'a\\': 1}\"");
    /* All defaults: nothing after the bar, as Python prints an empty message. */
    processing_t empty =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_PROCESSING_CHARGE_MESSAGE__INIT;
    check_text("MerchantProcessingCharge", &empty.base, "accountserver.MerchantProcessingCharge|");
}

static void test_merchant_storage_charge(void)
{
    storage_t m =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_STORAGE_CHARGE_MESSAGE__INIT;
    m.timestamp = "2025-01-01T00:00:00Z";
    m.merchant_kind = "DATA_MANAGER";
    m.merchant_id = 3;
    m.type =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__STORAGE_REASON_ENUM__STORAGE_REASON_ENUM_DATASET;
    m.auth_code = 7;
    m.name = "dataset.sdf";
    m.bytes = "+4,096";
    m.product = "p";
    check_text("MerchantStorageCharge", &m.base,
               "accountserver.MerchantStorageCharge|timestamp: \"2025-01-01T00:00:00Z\" "
               "merchant_kind: \"DATA_MANAGER\" merchant_id: 3 type: STORAGE_REASON_ENUM_DATASET "
               "auth_code: 7 name: \"dataset.sdf\" bytes: \"+4,096\" product: \"p\"");
}

static void test_merchant_authority(void)
{
    authority_t m =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_AUTHORITY_REQUEST_RESPONSE_MESSAGE__INIT;
    m.timestamp = "t";
    m.operation =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__OPERATION_ENUM__OPERATION_ENUM_STORAGE;
    m.ref_name = "r";
    m.ref_id = "9";
    m.response =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__AUTHORITY_RESPONSE_ENUM__AUTHORITY_RESPONSE_ENUM_DENIED;
    m.reason = "no coins\tleft\r\n";
    m.organisation = "o";
    check_text("MerchantAuthorityRequestResponse", &m.base,
               "accountserver.MerchantAuthorityRequestResponse|timestamp: \"t\" "
               "operation: OPERATION_ENUM_STORAGE ref_name: \"r\" ref_id: \"9\" "
               "response: AUTHORITY_RESPONSE_ENUM_DENIED reason: \"no coins\\tleft\\r\\n\" "
               "organisation: \"o\"");
}

static void test_pod(void)
{
    pod_t m = INFORMATICSMATTERS__PROTOBUF__DATAMANAGER__POD_MESSAGE__INIT;
    m.timestamp = "2021-12-31T00:00:00.000000Z";
    m.pod_name = "job-1234";
    m.task_id = "task-00000000-0000-0000-0000-000000000001";
    m.purpose = 2;
    m.phase = "Succeeded";
    m.start_timestamp = "2021-12-31T00:00:01Z";
    m.finish_timestamp = "2021-12-31T00:01:01Z";
    m.has_exit_code = 1;
    m.exit_code = 0;
    m.instance_id = "instance-1";
    /* exit_code 0 is a default and is omitted, though has_exit_code is set:
     * proto3 cannot tell them apart, and Python does the same. */
    check_text("Pod", &m.base,
               "datamanager.Pod|timestamp: \"2021-12-31T00:00:00.000000Z\" pod_name: \"job-1234\" "
               "task_id: \"task-00000000-0000-0000-0000-000000000001\" purpose: 2 "
               "phase: \"Succeeded\" start_timestamp: \"2021-12-31T00:00:01Z\" "
               "finish_timestamp: \"2021-12-31T00:01:01Z\" has_exit_code: true "
               "instance_id: \"instance-1\"");
}

static void test_pod_event(void)
{
    pod_event_t m = INFORMATICSMATTERS__PROTOBUF__DATAMANAGER__POD_EVENT_MESSAGE__INIT;
    m.timestamp = "x";
    m.task = "task-1";
    m.level = "INFO";
    m.content = "caf\xc3\xa9 \x1b[1m bold \\ done\x7f";
    m.replace_prior_content = 1;
    check_text("PodEvent", &m.base,
               "datamanager.PodEvent|timestamp: \"x\" task: \"task-1\" level: \"INFO\" "
               "content: \"caf\\303\\251 \\033[1m bold \\\\ done\\177\" "
               "replace_prior_content: true");
}

static void test_instance_event(void)
{
    instance_event_t m = INFORMATICSMATTERS__PROTOBUF__DATAMANAGER__INSTANCE_EVENT_MESSAGE__INIT;
    m.task = "t";
    m.level = "WARNING";
    m.content = "multi\nline";
    check_text("datamanager.InstanceEvent", &m.base,
               "datamanager.InstanceEvent|task: \"t\" level: \"WARNING\" "
               "content: \"multi\\nline\"");
}

static void test_instance_cost(void)
{
    instance_cost_t m = INFORMATICSMATTERS__PROTOBUF__DATAMANAGER__INSTANCE_COST_MESSAGE__INIT;
    m.timestamp = "2021-12-31T00:00:00.00+0000";
    m.operation = INFORMATICSMATTERS__PROTOBUF__DATAMANAGER__OPERATION_ENUM__OPERATION_ENUM_MEMORY;
    m.value = "+0.4";
    m.sqn = INT64_MIN;
    m.instance = "i-1";
    m.eoc = 1;
    check_text("InstanceCost", &m.base,
               "datamanager.InstanceCost|timestamp: \"2021-12-31T00:00:00.00+0000\" "
               "operation: OPERATION_ENUM_MEMORY value: \"+0.4\" sqn: -9223372036854775808 "
               "instance: \"i-1\" eoc: true");
    m.sqn = INT64_MAX;
    m.eoc = 0;
    m.operation = 0;
    check_text("InstanceCost", &m.base,
               "datamanager.InstanceCost|timestamp: \"2021-12-31T00:00:00.00+0000\" "
               "value: \"+0.4\" sqn: 9223372036854775807 instance: \"i-1\"");
}

static void test_alert(void)
{
    alert_t m = INFORMATICSMATTERS__PROTOBUF__COMMON__ALERT_MESSAGE__INIT;
    m.timestamp = "now";
    m.level = "CRITICAL";
    m.message = "disk full";
    m.traceback = "Traceback (most recent call last):\n  File \"x.py\"";
    m.code = -17;
    check_text("Alert", &m.base,
               "common.Alert|timestamp: \"now\" level: \"CRITICAL\" message: \"disk full\" "
               "traceback: \"Traceback (most recent call last):\\n  File \\\"x.py\\\"\" "
               "code: -17");
}

/* ---- every field kind ------------------------------------------------------- */

static void test_everything(void)
{
    Esstest__Everything m = ESSTEST__EVERYTHING__INIT;
    Esstest__Inner inner = ESSTEST__INNER__INIT, r1 = ESSTEST__INNER__INIT,
                   r2 = ESSTEST__INNER__INIT;
    m.d = 0.1;
    m.f = 0.1f;
    m.i32 = INT32_MIN;
    m.i64 = -1;
    m.u32 = UINT32_MAX;
    m.u64 = UINT64_MAX;
    m.s32 = -2;
    m.s64 = INT64_MAX;
    m.fx32 = 7;
    m.fx64 = 8;
    m.sfx32 = -9;
    m.sfx64 = -10;
    m.b = 1;
    m.s = "s";
    uint8_t raw[] = {0, 1, 'A', 0xff};
    m.by.data = raw;
    m.by.len = sizeof raw;
    m.colour = ESSTEST__COLOUR__COLOUR_GREEN;
    inner.name = "in";
    inner.n = 5;
    m.inner = &inner;
    int32_t ri[] = {1, -1, 0};
    m.ri32 = ri;
    m.n_ri32 = 3;
    char *rs[] = {"a", "", "b c"};
    m.rs = rs;
    m.n_rs = 3;
    r2.colour = ESSTEST__COLOUR__COLOUR_RED;
    Esstest__Inner *rin[] = {&r1, &r2};
    m.rinner = rin;
    m.n_rinner = 2;
    Esstest__Colour rc[] = {ESSTEST__COLOUR__COLOUR_UNSPECIFIED, ESSTEST__COLOUR__COLOUR_RED};
    m.rcolour = rc;
    m.n_rcolour = 2;
    uint64_t ru[] = {0, 18446744073709551615u};
    m.ru64 = ru;
    m.n_ru64 = 2;
    double rd[] = {1.0, 1e16, 1.5e-7, 123456.789, -0.0, 1e15, 0.0001, 2.5e-5};
    m.rd = rd;
    m.n_rd = ESS_ARRAY_SIZE(rd);
    m.choice_case = ESSTEST__EVERYTHING__CHOICE_CHOICE_I;
    m.choice_i = 0; /* a oneof member is printed even when it holds its default */
    check_fields(&m.base,
                 "d: 0.1 f: 0.1 i32: -2147483648 i64: -1 u32: 4294967295 "
                 "u64: 18446744073709551615 s32: -2 s64: 9223372036854775807 fx32: 7 fx64: 8 "
                 "sfx32: -9 sfx64: -10 b: true s: \"s\" by: \"\\000\\001A\\377\" "
                 "colour: COLOUR_GREEN inner { name: \"in\" n: 5 } ri32: 1 ri32: -1 ri32: 0 "
                 "rs: \"a\" rs: \"\" rs: \"b c\" rinner { } rinner { colour: COLOUR_RED } "
                 "rcolour: COLOUR_UNSPECIFIED rcolour: COLOUR_RED ru64: 0 "
                 "ru64: 18446744073709551615 rd: 1.0 rd: 1e+16 rd: 1.5e-07 rd: 123456.789 "
                 "rd: -0.0 rd: 1000000000000000.0 rd: 0.0001 rd: 2.5e-05 choice_i: 0");

    /* An empty nested message still prints its braces. */
    Esstest__Everything e = ESSTEST__EVERYTHING__INIT;
    Esstest__Inner empty = ESSTEST__INNER__INIT;
    e.choice_case = ESSTEST__EVERYTHING__CHOICE_CHOICE_M;
    e.choice_m = &empty;
    check_fields(&e.base, "choice_m { }");

    /* Floats and doubles at their edges, as Python prints them. */
    struct {
        double d;
        float f;
        const char *want;
    } fl[] = {
        {1.0 / 3.0, 1.0f / 3.0f, "d: 0.3333333333333333 f: 0.33333334"},
        {INFINITY, -INFINITY, "d: inf f: -inf"},
        {NAN, NAN, "d: nan f: nan"},
        {1e300, 3.4028234663852886e38f, "d: 1e+300 f: 3.4028235e+38"},
        {5e-324, 1e-45f, "d: 5e-324 f: 1.4013e-45"},
        {-123.0, 16777216.0f, "d: -123.0 f: 16777216.0"},
        {9007199254740993.0, 0.2f, "d: 9007199254740992.0 f: 0.2"},
        {1e-5, 1e-5f, "d: 1e-05 f: 1e-05"},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(fl); i++) {
        Esstest__Everything x = ESSTEST__EVERYTHING__INIT;
        x.d = fl[i].d;
        x.f = fl[i].f;
        check_fields(&x.base, fl[i].want);
    }
}

/* Bytes that protobuf-c accepts but no struct of ours can produce. */
static void test_raw_bytes(void)
{
    ess_buf_t out = {0};
    /* An enum value without a name prints as its number; an unknown field
     * (number 99, varint) is skipped, as Python's text format skips it. */
    static const uint8_t unknown_enum[] = {0x80, 0x01, 0x07, 0x98, 0x06, 0x01};
    CHECK_EQ_INT(ess_protobuf_render(&esstest__everything__descriptor, unknown_enum,
                                     sizeof unknown_enum, &out),
                 ESS_OK);
    CHECK_EQ_STR(out.data, "colour: 7");
    ess_buf_reset(&out);

    /* A string field that is sent twice: the last one wins. */
    static const uint8_t twice[] = {0x0a, 0x01, 'a', 0x0a, 0x01, 'b'};
    CHECK_EQ_INT(ess_protobuf_to_text("Alert", 5, twice, sizeof twice, &out), ESS_OK);
    CHECK_EQ_STR(out.data, "common.Alert|timestamp: \"b\"");
    ess_buf_reset(&out);

    /* Packed and unpacked encodings of a repeated scalar both decode. */
    static const uint8_t unpacked[] = {0x90, 0x01, 0x05, 0x90, 0x01, 0x06};
    CHECK_EQ_INT(
        ess_protobuf_render(&esstest__everything__descriptor, unpacked, sizeof unpacked, &out),
        ESS_OK);
    CHECK_EQ_STR(out.data, "ri32: 5 ri32: 6");
    ess_buf_free(&out);

    /* -0.0 is not a default (protobuf-c never packs it, others may). */
    static const uint8_t neg_zero[] = {0x09, 0, 0, 0, 0, 0, 0, 0, 0x80};
    CHECK_EQ_INT(
        ess_protobuf_render(&esstest__everything__descriptor, neg_zero, sizeof neg_zero, &out),
        ESS_OK);
    CHECK_EQ_STR(out.data, "d: -0.0");
    ess_buf_free(&out);

    /* Empty bytes are an empty message. */
    CHECK_EQ_INT(ess_protobuf_to_text("Pod", 3, NULL, 0, &out), ESS_OK);
    CHECK_EQ_STR(out.data, "datamanager.Pod|");
    ess_buf_free(&out);
}

/* ---- errors -------------------------------------------------------------- */

static void test_unknown_type(void)
{
    ess_buf_t out = {0};
    ess_buf_append(&out, "keep", 4);
    CHECK_EQ_INT(ess_protobuf_to_text("Nope", 4, (const uint8_t *)"\x08\x01", 2, &out),
                 ESS_ENOTFOUND);
    CHECK_EQ_INT(ess_protobuf_to_text(NULL, 0, (const uint8_t *)"\x08\x01", 2, &out),
                 ESS_ENOTFOUND);
    CHECK_EQ_STR(out.data, "keep");
    CHECK_EQ_INT(out.len, 4);
    CHECK_EQ_INT(ess_protobuf_to_text("Pod", 3, NULL, 2, &out), ESS_EINVAL);
    CHECK_EQ_INT(ess_protobuf_to_text("Pod", 3, (const uint8_t *)"", 0, NULL), ESS_EINVAL);
    CHECK_EQ_STR(out.data, "keep");
    ess_buf_free(&out);
}

static void test_garbage(void)
{
    static const struct {
        const char *type;
        const char *bytes;
        size_t len;
    } bad[] = {
        {"Pod", "\xff", 1}, /* field 31, wire type 7 */
        {"Pod",
         "\x0a\x05"
         "abc",
         5},                                    /* string longer than the input */
        {"Pod", "\x0a\xff\xff\xff\xff\x0f", 6}, /* a 4 GiB length */
        {"Pod", "\x20", 1},                     /* varint with no bytes */
        {"Pod", "\x20\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12}, /* 11-byte varint */
        {"Pod", "\x0b", 1},                                              /* a start-group tag */
        {"Pod", "\x00\x00", 2},                                          /* field number 0 */
        {"InstanceCost", "\x21\x01\x02", 3}, /* 64-bit field cut short */
        {"Alert", "\x85\x01\x01\x02", 4},    /* 32-bit field cut short */
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(bad); i++) {
        ess_buf_t out = {0};
        ess_buf_append(&out, "x", 1);
        int rc = ess_protobuf_to_text(bad[i].type, strlen(bad[i].type),
                                      (const uint8_t *)bad[i].bytes, bad[i].len, &out);
        if (rc != ESS_EINVAL)
            fprintf(stderr, "garbage case %zu: rc %d\n", i, rc);
        CHECK_EQ_INT(rc, ESS_EINVAL);
        CHECK_EQ_STR(out.data, "x");
        ess_buf_free(&out);
    }
}

/* Every prefix of every type's packed bytes either decodes (a prefix that
 * ends on a field boundary is a valid message) or fails with ESS_EINVAL
 * and out unchanged; a prefix that ends inside a field always fails. */
static void test_truncation(void)
{
    Esstest__Everything ev = ESSTEST__EVERYTHING__INIT;
    Esstest__Inner inner = ESSTEST__INNER__INIT;
    inner.name = "inner name";
    ev.inner = &inner;
    ev.s = "some string";
    ev.fx64 = 1;
    ev.d = 2.5;
    ev.u64 = UINT64_MAX;
    processing_t pc =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_PROCESSING_CHARGE_MESSAGE__INIT;
    pc.timestamp = "2021-12-31T00:00:00.00Z";
    pc.merchant_id = 300;
    pc.coins = "1.5";
    pc.eoc = 1;
    alert_t al = INFORMATICSMATTERS__PROTOBUF__COMMON__ALERT_MESSAGE__INIT;
    al.message = "m";
    al.code = -100000;
    const ProtobufCMessage *msgs[] = {&ev.base, &pc.base, &al.base};
    int failures = 0, successes = 0;
    for (size_t k = 0; k < ESS_ARRAY_SIZE(msgs); k++) {
        size_t len;
        uint8_t *full = pack(msgs[k], &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* A copy of exactly cut bytes, so ASan sees any read past it. */
            uint8_t *p = ess_xmalloc(cut ? cut : 1);
            memcpy(p, full, cut);
            ess_buf_t out = {0};
            ess_buf_append(&out, "x", 1);
            int rc = ess_protobuf_render(msgs[k]->descriptor, p, cut, &out);
            CHECK(rc == ESS_OK || rc == ESS_EINVAL);
            if (rc == ESS_EINVAL) {
                CHECK_EQ_STR(out.data, "x");
                failures++;
            } else {
                successes++;
            }
            ess_buf_free(&out);
            free(p);
        }
        free(full);
    }
    /* The double comes first (a tag and 8 bytes): every cut inside it fails. */
    size_t len;
    uint8_t *full = pack(&ev.base, &len);
    ess_buf_t out = {0};
    for (size_t cut = 1; cut < 9; cut++)
        CHECK_EQ_INT(ess_protobuf_render(&esstest__everything__descriptor, full, cut, &out),
                     ESS_EINVAL);
    CHECK_EQ_INT(ess_protobuf_render(&esstest__everything__descriptor, full, 9, &out), ESS_OK);
    CHECK_EQ_STR(out.data, "d: 2.5");
    ess_buf_free(&out);
    free(full);
    CHECK(failures > 20);
    CHECK(successes > 5);
}

/* ---- Lua ------------------------------------------------------------------- */

/* Run a chunk that returns true when its checks hold. */
static void check_lua(lua_State *L, const char *chunk)
{
    if (luaL_loadstring(L, chunk) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        CHECK(0);
    } else {
        if (!lua_toboolean(L, -1))
            fprintf(stderr, "lua: false: %s\n", chunk);
        CHECK(lua_toboolean(L, -1));
    }
    lua_pop(L, 1);
}

static void test_lua(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    int top = lua_gettop(L);

    processing_t m =
        INFORMATICSMATTERS__PROTOBUF__ACCOUNTSERVER__MERCHANT_PROCESSING_CHARGE_MESSAGE__INIT;
    m.timestamp = "2021-12-31T00:00:00.00Z";
    m.merchant_kind = "DATA_MANAGER";
    m.merchant_id = 4000000000u;
    m.sqn = 3;
    size_t len;
    uint8_t *p = pack(&m.base, &len);
    CHECK_EQ_INT(ess_protobuf_push_lua(L, "MerchantProcessingCharge", 24, p, len), ESS_OK);
    CHECK_EQ_INT(lua_gettop(L), top + 1);
    lua_getfield(L, -1, "merchant_kind");
    CHECK_EQ_STR(lua_tostring(L, -1), "DATA_MANAGER");
    lua_pop(L, 1);
    lua_getfield(L, -1, "merchant_id");
    CHECK(lua_tonumber(L, -1) == 4000000000.0);
    lua_pop(L, 1);
    lua_setglobal(L, "t");
    /* Defaults are present (eoc false, name ""), every field is there. */
    check_lua(L, "return t.sqn == 3 and t.eoc == false and t.name == '' and t.auth_code == 0 "
                 "and t.timestamp == '2021-12-31T00:00:00.00Z'");
    free(p);

    /* Errors push nothing. */
    CHECK_EQ_INT(ess_protobuf_push_lua(L, "Nope", 4, (const uint8_t *)"", 0), ESS_ENOTFOUND);
    CHECK_EQ_INT(ess_protobuf_push_lua(L, "Pod", 3, (const uint8_t *)"\x0a\x05", 2), ESS_EINVAL);
    CHECK_EQ_INT(lua_gettop(L), top);

    /* Every field kind through ess.protobuf.decode and .text from Lua. */
    Esstest__Everything ev = ESSTEST__EVERYTHING__INIT;
    Esstest__Inner inner = ESSTEST__INNER__INIT, r1 = ESSTEST__INNER__INIT;
    inner.name = "in";
    inner.colour = ESSTEST__COLOUR__COLOUR_RED;
    ev.inner = &inner;
    ev.i64 = -9007199254740993LL; /* beyond 2^53: a string */
    ev.u64 = 9007199254740992ULL; /* exactly 2^53: a number */
    ev.d = 0.5;
    uint8_t raw[] = {0, 'z'};
    ev.by.data = raw;
    ev.by.len = 2;
    char *rs[] = {"a", "b"};
    ev.rs = rs;
    ev.n_rs = 2;
    r1.n = 9;
    Esstest__Inner *rin[] = {&r1};
    ev.rinner = rin;
    ev.n_rinner = 1;
    ev.choice_case = ESSTEST__EVERYTHING__CHOICE_CHOICE_S;
    ev.choice_s = "picked";
    p = pack(&ev.base, &len);
    CHECK_EQ_INT(ess_protobuf_push_lua_desc(L, &esstest__everything__descriptor, p, len), ESS_OK);
    lua_setglobal(L, "e");
    static const char *const every[] = {
        "e.i64 == '-9007199254740993'",
        "e.u64 == 9007199254740992",
        "e.d == 0.5",
        "e.f == 0",
        "e.by == '\\0z'",
        "#e.rs == 2 and e.rs[2] == 'b'",
        "#e.ri32 == 0",
        "e.inner.name == 'in' and e.inner.colour == 'COLOUR_RED' and e.inner.n == 0",
        "#e.rinner == 1 and e.rinner[1].n == 9 and e.rinner[1].name == ''",
        "e.choice_s == 'picked' and e.choice_i == nil and e.choice_m == nil",
        "e.colour == 'COLOUR_UNSPECIFIED' and e.b == false",
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(every); i++) {
        char chunk[200];
        snprintf(chunk, sizeof chunk, "return %s", every[i]);
        check_lua(L, chunk);
    }
    free(p);

    ess_protobuf_lua_open(L);
    lua_setglobal(L, "protobuf");
    pod_t pod = INFORMATICSMATTERS__PROTOBUF__DATAMANAGER__POD_MESSAGE__INIT;
    pod.pod_name = "job-1";
    pod.exit_code = 3;
    p = pack(&pod.base, &len);
    lua_pushlstring(L, (const char *)p, len);
    lua_setglobal(L, "pod_bytes");
    free(p);
    check_lua(L, "local t = protobuf.decode('datamanager.Pod', pod_bytes) "
                 "return t.pod_name == 'job-1' and t.exit_code == 3 and t.has_exit_code == false");
    check_lua(L, "return protobuf.text('Pod', pod_bytes) == "
                 "'datamanager.Pod|pod_name: \"job-1\" exit_code: 3'");
    check_lua(L, "local t, err = protobuf.decode('Nope', pod_bytes) "
                 "return t == nil and err == \"unknown protobuf message type 'Nope'\"");
    check_lua(L, "local t, err = protobuf.decode('Pod', '\\10\\5ab') "
                 "return t == nil and err == 'bytes do not decode as datamanager.Pod'");
    check_lua(L, "local t, err = protobuf.text('Pod', '\\255') "
                 "return t == nil and err == 'bytes do not decode as datamanager.Pod'");
    check_lua(L, "return not pcall(protobuf.decode, 'Pod', {})");
    CHECK_EQ_INT(lua_gettop(L), top);
    lua_close(L);
}

ESS_TEST_MAIN(ESS_TEST(test_find), ESS_TEST(test_content_type), ESS_TEST(test_type_of),
              ESS_TEST(test_merchant_charge), ESS_TEST(test_merchant_processing_charge),
              ESS_TEST(test_merchant_storage_charge), ESS_TEST(test_merchant_authority),
              ESS_TEST(test_pod), ESS_TEST(test_pod_event), ESS_TEST(test_instance_event),
              ESS_TEST(test_instance_cost), ESS_TEST(test_alert), ESS_TEST(test_everything),
              ESS_TEST(test_raw_bytes), ESS_TEST(test_unknown_type), ESS_TEST(test_garbage),
              ESS_TEST(test_truncation), ESS_TEST(test_lua))
