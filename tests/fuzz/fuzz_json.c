/* Fuzz target for util/json: never crashes or reads out of bounds; an
 * accepted object's closing index points at a '}'. */
#include "ess.h"
#include "util/json.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t close = 0, at = 0;
    int empty = 0;
    const char *err = NULL;
    if (ess_json_object((const char *)data, size, &close, &empty, &err, &at) == ESS_OK) {
        ESS_ASSERT(close < size && data[close] == '}');
    } else {
        ESS_ASSERT(err != NULL && at <= size);
    }
    return 0;
}
