/*
 * Start-selector parsing. The reasons it writes become WebSocket close
 * reasons, so they are short, name the selector, and never carry more than
 * a clipped copy of the client's value.
 */
#include "gateway/selector.h"
#include "ess.h"
#include "util/datetime.h"

#include <string.h>

const char *const ess_selector_names[ESS_SEL_SOURCES] = {
    "X-StreamOffsetFromOrdinal", "X-StreamOffsetFromTimestamp", "X-StreamOffsetFromDatetime",
    "stream_from_ordinal",       "stream_from_timestamp",       "stream_from_datetime",
};

int ess_parse_u63(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0')
        return ESS_EINVAL;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return ESS_EINVAL;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_C(0x7fffffffffffffff) - d) / 10)
            return ESS_ETOOBIG;
        v = v * 10 + d;
    }
    *out = v;
    return ESS_OK;
}

/* Copy at most n bytes of s for a reason, cut at a UTF-8 boundary. */
static void clip(char *dst, size_t cap, const char *s, size_t n)
{
    size_t len = strlen(s);
    if (len > n) {
        len = n;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, s, len);
    dst[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)dst[i] < 0x20)
            dst[i] = '?';
}

int ess_selector_parse(const char *const values[ESS_SEL_SOURCES],
                       const unsigned counts[ESS_SEL_SOURCES], int64_t now_ms, ess_selector_t *out,
                       char *reason, size_t reason_len)
{
    int which = -1;
    unsigned count = 0;
    for (int i = 0; i < ESS_SEL_SOURCES; i++) {
        if (values[i] != NULL) {
            count += counts && counts[i] > 1 ? counts[i] : 1;
            if (which < 0)
                which = i;
        }
    }
    memset(out, 0, sizeof *out);
    if (count == 0)
        return ESS_OK;
    if (count > 1) {
        snprintf(reason, reason_len,
                 "only one of the start selectors (ordinal, timestamp, datetime) may be given");
        return ESS_EINVAL;
    }
    const char *name = ess_selector_names[which];
    const char *v = values[which];
    char shown[40];
    clip(shown, sizeof shown, v, 32);
    int kind = which % 3;
    if (kind == 2) {
        const char *why = NULL;
        int64_t ms;
        if (ess_datetime_parse(v, strlen(v), now_ms, &ms, &why) != ESS_OK) {
            snprintf(reason, reason_len, "%s: %s: '%s'", name, why ? why : "not a date/time",
                     shown);
            return ESS_EINVAL;
        }
        out->kind = ESS_SEL_DATETIME;
        out->timestamp_ms = ms;
        return ESS_OK;
    }
    uint64_t n;
    int rc = ess_parse_u63(v, &n);
    if (rc != ESS_OK) {
        const char *why = v[0] == '\0'        ? "is empty"
                          : v[0] == '-'       ? "must not be negative"
                          : rc == ESS_ETOOBIG ? "is too large"
                                              : "is not an integer";
        snprintf(reason, reason_len, "%s %s: '%s'", name, why, shown);
        return ESS_EINVAL;
    }
    if (kind == 0) {
        out->kind = ESS_SEL_ORDINAL;
        out->ordinal = n;
    } else {
        out->kind = ESS_SEL_TIMESTAMP;
        out->timestamp_ms = (int64_t)n;
    }
    return ESS_OK;
}
