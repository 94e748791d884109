/*
 * Fuzz target for the date/time selector parser (core/util/datetime.c): any
 * bytes must be parsed without crashing or reading past the input, the
 * answer must not depend on anything but the input and now, and an
 * accepted value must lie within years 1..9999 UTC. Each input is tried
 * with an ordinary "now" and with extreme ones, which feed the omitted
 * fields and the two-digit-year pivot.
 */
#include "ess.h"
#include "util/datetime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_MS INT64_C(-62135596800000) /* 0001-01-01T00:00:00.000Z */
#define MAX_MS INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t nows[] = {INT64_C(1735689600000), 0, MIN_MS, MAX_MS, INT64_MIN, INT64_MAX};
    const char *s = (const char *)data;

    for (size_t i = 0; i < ESS_ARRAY_SIZE(nows); i++) {
        int64_t a = 0, b = 0;
        const char *ea = NULL, *eb = NULL;
        int ra = ess_datetime_parse(s, size, nows[i], &a, &ea);
        int rb = ess_datetime_parse(s, size, nows[i], &b, &eb);
        if (ra != rb || (ra == ESS_OK && a != b) || (ra != ESS_OK && ea != eb))
            abort(); /* the parser must be a pure function */
        if (ra == ESS_OK && (a < MIN_MS || a > MAX_MS))
            abort();
        if (ra != ESS_OK && (ra != ESS_EINVAL || ea == NULL || ea[0] == '\0'))
            abort();
    }
    return 0;
}
