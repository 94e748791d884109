/*
 * Fuzz target for the Osiris chunk codec: header parsing, size, CRC check
 * and the record walk, with every record fed on to the AMQP 1.0 decoder as
 * the gateway does. Aborts if offsets are not consecutive from the header's
 * first offset or a record count exceeds the header's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "mq/amqp10.h"
#include "mq/chunk.h"

typedef struct {
    uint64_t next;
    uint32_t seen;
    uint32_t max;
} walk_t;

static int count_prop(void *ud, const char *key, size_t klen, const ess_amqp10_value_t *v)
{
    size_t *n = ud;
    *n += klen + v->len;
    return 0;
}

static int on_record(void *ud, uint64_t offset, const uint8_t *data, size_t len)
{
    walk_t *w = ud;
    if (offset != w->next || w->seen >= w->max)
        abort();
    w->next++;
    w->seen++;
    ess_amqp10_msg_t m;
    if (ess_amqp10_decode(data, len, &m) != ESS_OK)
        abort();
    size_t n = 0;
    ess_amqp10_props_each(m.app_props, m.app_props_len, count_prop, &n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ess_chunk_header_t h;
    uint64_t total;
    if (ess_chunk_parse_header(data, size, &h) != ESS_OK)
        return 0;
    if (ess_chunk_total_size(data, size, &total) != ESS_OK)
        abort();
    (void)ess_chunk_verify_crc(data, size);
    walk_t w = {.next = h.first_offset, .seen = 0, .max = h.num_records};
    int rc = ess_chunk_each_record(data, size, on_record, &w);
    if (rc == ESS_OK && h.chunk_type == ESS_CHUNK_TYPE_USER && w.seen != h.num_records)
        abort();
    return 0;
}
