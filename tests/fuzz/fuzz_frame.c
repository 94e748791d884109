/*
 * Fuzz target for the stream protocol frame splitter and decoder
 * (mq/proto.c): any byte sequence, split into frames as the client's read
 * loop does, must decode or fail with an error code, and every accessor of
 * a decoded frame must stay inside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "mq/proto.h"

static void walk(const ess_proto_frame_t *f)
{
    ess_proto_str_t k, v;
    switch (f->key) {
    case 0x8011:
    case 0x8015:
        for (uint32_t i = 0; i < f->u.kv.count && i < 64; i++)
            ess_proto_kv_at(f->u.kv.p, f->u.kv.len, i, &k, &v);
        break;
    case 0x8012:
        for (uint32_t i = 0; i < f->u.mechs.count && i < 64; i++)
            ess_proto_mech_at(f, i, &k);
        break;
    case 0x800f: {
        ess_proto_broker_t b;
        ess_proto_stream_meta_t m;
        for (uint32_t i = 0; i < f->u.metadata.brokers && i < 64; i++)
            ess_proto_metadata_broker(f, i, &b);
        for (uint32_t i = 0; i < f->u.metadata.streams && i < 64; i++)
            if (ess_proto_metadata_stream(f, i, &m) == ESS_OK)
                for (uint32_t j = 0; j < m.replicas && j < 64; j++)
                    ess_proto_replica_ref(&m, j);
        break;
    }
    case 0x0003:
        for (uint32_t i = 0; i < f->u.pub.count && i < 256; i++)
            ess_proto_confirm_id(f, i);
        break;
    case 0x0004:
        for (uint32_t i = 0; i < f->u.pub.count && i < 256; i++) {
            uint16_t code;
            ess_proto_error_id(f, i, &code);
        }
        break;
    case 0x801b: {
        uint16_t mn, mx;
        ess_proto_version_of(f, ESS_PROTO_DELIVER, &mn, &mx);
        break;
    }
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so an overread past size is caught by ASan. */
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    size_t pos = 0;
    for (int frames = 0; frames < 1000; frames++) {
        size_t flen = 0;
        int rc = ess_proto_split(buf + pos, size - pos, 1u << 20, &flen);
        if (rc != ESS_OK)
            break;
        ess_proto_frame_t f;
        if (ess_proto_decode(buf + pos + 4, flen - 4, &f) == ESS_OK)
            walk(&f);
        pos += flen;
    }
    /* Also decode the whole input as one frame body. */
    ess_proto_frame_t f;
    if (ess_proto_decode(buf, size, &f) == ESS_OK)
        walk(&f);
    free(buf);
    return 0;
}
