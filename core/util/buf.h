/*
 * A growable byte buffer. The buffer owns its memory; free with
 * ess_buf_free. Growth aborts on out-of-memory (ess_xrealloc).
 */
#ifndef ESS_BUF_H
#define ESS_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} ess_buf_t;

void ess_buf_reserve(ess_buf_t *b, size_t extra);
void ess_buf_append(ess_buf_t *b, const void *p, size_t n);
void ess_buf_appendf(ess_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ess_buf_reset(ess_buf_t *b);
void ess_buf_free(ess_buf_t *b);

#endif
