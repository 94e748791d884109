/* Fuzz target for util/json: never crashes or reads out of bounds; an
 * accepted object's closing index points at a '}'. ess_json_splice agrees
 * with ess_json_object on every input, leaves out unchanged when it
 * refuses, and when it accepts writes the object up to its '}', the
 * inserted text, then the rest of the input from the '}' on. The numbers
 * come from the input's first bytes, so NaN, infinities and huge values
 * are reached too. */
#include "ess.h"
#include "util/buf.h"
#include "util/json.h"

#include <stdint.h>
#include <string.h>

static double number_from(const uint8_t *data, size_t size, size_t skip)
{
    double v = 0;
    if (size >= skip + sizeof v)
        memcpy(&v, data + skip, sizeof v);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t close = 0, at = 0;
    int empty = 0;
    const char *err = NULL;
    int rc = ess_json_object((const char *)data, size, &close, &empty, &err, &at);
    if (rc == ESS_OK) {
        ESS_ASSERT(close < size && data[close] == '}');
    } else {
        ESS_ASSERT(err != NULL && at <= size);
    }

    double a = number_from(data, size, 0), b = number_from(data, size, 8);
    ess_buf_t out = {0};
    ess_buf_append(&out, "pre", 3);
    const char *serr = NULL;
    size_t sat = 0;
    int src = ess_json_splice((const char *)data, size, ",\"f\":", ",\"m\":", ",\"t\":", a, b, &out,
                              &serr, &sat);
    ESS_ASSERT(src == rc);
    if (src == ESS_OK) {
        /* "pre" + s[0..close) + inserted + s[close..size) */
        ESS_ASSERT(out.len > 3 + size);
        ESS_ASSERT(memcmp(out.data, "pre", 3) == 0);
        ESS_ASSERT(memcmp(out.data + 3, data, close) == 0);
        size_t tail = size - close;
        ESS_ASSERT(memcmp(out.data + out.len - tail, data + close, tail) == 0);
        /* the inserted text: separator, a, mid, b as ess_json_number prints them */
        char na[32], nb[32];
        size_t la = ess_json_number(na, a), lb = ess_json_number(nb, b);
        ESS_ASSERT(out.len == 3 + size + 5 + la + 5 + lb);
        const char *ins = out.data + 3 + close;
        ESS_ASSERT(memcmp(ins, empty ? ",\"f\":" : ",\"m\":", 5) == 0);
        ESS_ASSERT(memcmp(ins + 5, na, la) == 0);
        ESS_ASSERT(memcmp(ins + 5 + la, ",\"t\":", 5) == 0);
        ESS_ASSERT(memcmp(ins + 10 + la, nb, lb) == 0);
    } else {
        ESS_ASSERT(out.len == 3 && serr != NULL && sat <= size);
    }
    ess_buf_free(&out);
    return 0;
}
