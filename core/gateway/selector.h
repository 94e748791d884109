/*
 * Where a WebSocket client asks to start: at most one of three headers or
 * three query parameters (SPEC.md "Public WebSocket"). Pure: strings in,
 * a selector or a close reason out.
 */
#ifndef ESS_SELECTOR_H
#define ESS_SELECTOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ESS_SEL_NONE = 0,  /* only messages published from now on */
    ESS_SEL_ORDINAL,   /* exactly that offset */
    ESS_SEL_TIMESTAMP, /* first message at or after timestamp_ms */
    ESS_SEL_DATETIME,  /* likewise, from a date/time string */
} ess_sel_kind_t;

typedef struct {
    ess_sel_kind_t kind;
    uint64_t ordinal;
    int64_t timestamp_ms;
} ess_selector_t;

/* The six places a selector may come from, in this order. */
enum { ESS_SEL_SOURCES = 6 };
extern const char *const ess_selector_names[ESS_SEL_SOURCES];

/**
 * Choose the selector from values[i] (NULL when absent) for each of
 * ess_selector_names; counts[i] is how many times each was given (NULL:
 * once when non-NULL), and a name given twice is two selectors. Returns
 * ESS_OK, or ESS_EINVAL with a close reason (at most 123 bytes, for close
 * code 1002) in reason.
 */
int ess_selector_parse(const char *const values[ESS_SEL_SOURCES],
                       const unsigned counts[ESS_SEL_SOURCES], int64_t now_ms, ess_selector_t *out,
                       char *reason, size_t reason_len);

/** Parse a decimal integer 0..INT64_MAX with nothing else around it. */
int ess_parse_u63(const char *s, uint64_t *out);

#endif
