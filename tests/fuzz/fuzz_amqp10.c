/*
 * Fuzz target for the AMQP 1.0 decoder: decode, iterate the
 * application-properties and message-annotations maps, copy the body and
 * decode the first value. Aborts if a returned pointer leaves the input or
 * a raw record is not passed through whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "mq/amqp10.h"

static const uint8_t *lo, *hi;

static void inside(const void *p, size_t len)
{
    const uint8_t *q = p;
    if (len == 0)
        return;
    if (q < lo || q > hi || len > (size_t)(hi - q))
        abort();
}

static int on_prop(void *ud, const char *key, size_t klen, const ess_amqp10_value_t *v)
{
    inside(key, klen);
    if (v->s != NULL)
        inside(v->s, v->len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ess_amqp10_msg_t m;
    lo = data;
    hi = data + size;
    if (ess_amqp10_decode(data, size, &m) != ESS_OK)
        abort();
    inside(m.body, m.body_len);
    if (!m.is_amqp && (m.body != data || m.body_len != size))
        abort();
    if (m.content_type)
        inside(m.content_type, m.content_type_len);
    if (m.subject)
        inside(m.subject, m.subject_len);
    if (m.app_props)
        inside(m.app_props, m.app_props_len);
    ess_amqp10_props_each(m.app_props, m.app_props_len, on_prop, NULL);
    ess_amqp10_props_each(m.msg_annotations, m.msg_annotations_len, on_prop, NULL);
    size_t n;
    uint8_t *copy = ess_amqp10_body_copy(data, size, &m, &n);
    if (m.n_data < 2 && (n != m.body_len || (n && memcmp(copy, m.body, n) != 0)))
        abort();
    free(copy);
    ess_amqp10_value_t v;
    size_t used;
    if (ess_amqp10_value_decode(data, size, &v, &used) == ESS_OK && used > size)
        abort();
    return 0;
}
