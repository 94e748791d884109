/* Fuzz target for store/regrec: the records of the shared registry come
 * from the broker, so any bytes must decode to ESS_OK or ESS_EPROTO with a
 * reason, never a crash or a read past the input. An accepted record
 * re-encodes to exactly the input (the codec is canonical), and a
 * snapshot's rows walk without error. */
#include "ess.h"
#include "store/regrec.h"

#include <stdint.h>
#include <string.h>

static int walk(void *ud, const ess_es_row_t *row)
{
    ess_buf_t *b = ud;
    ess_regrec_snapshot_row(b, row);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ess_regrec_t rec;
    const char *why = NULL;
    int rc = ess_regrec_decode(data, size, &rec, &why);
    if (rc != ESS_OK) {
        ESS_ASSERT(rc == ESS_EPROTO && why != NULL);
        return 0;
    }
    char ref[ESS_REGREC_REF_MAX + 1];
    memcpy(ref, rec.ref, rec.ref_len);
    ref[rec.ref_len] = '\0';
    if (memchr(rec.ref, '\0', rec.ref_len) != NULL)
        return 0; /* a NUL in the reference: the encoder takes C strings */
    ess_buf_t b = {0};
    switch (rec.type) {
    case ESS_REGREC_CREATED: ess_regrec_created(&b, ref, &rec.row); break;
    case ESS_REGREC_DELETED: ess_regrec_deleted(&b, ref, rec.id, rec.nonce); break;
    case ESS_REGREC_CLAIM: ess_regrec_claim(&b, ref, rec.id, rec.nonce); break;
    case ESS_REGREC_BARRIER: ess_regrec_barrier(&b, ref, rec.nonce); break;
    case ESS_REGREC_SNAPSHOT:
        ess_regrec_snapshot(&b, ref, rec.at, rec.part, rec.parts, rec.nrows);
        ESS_ASSERT(ess_regrec_rows(&rec, walk, &b) == ESS_OK);
        break;
    }
    ESS_ASSERT(b.len == size && memcmp(b.data, data, size) == 0);
    ess_buf_free(&b);
    return 0;
}
