/*
 * A strict JSON validator (RFC 8259) that allocates nothing: the
 * enrichment hot path checks that a body is a JSON object without
 * building a Lua table for it.
 */
#ifndef ESS_JSON_H
#define ESS_JSON_H

#include <stddef.h>

#include "util/buf.h"

#define ESS_JSON_MAX_DEPTH 512

/**
 * If s[0..len) is exactly one JSON object (surrounding white space
 * allowed), return ESS_OK and set *close to the index of its closing '}'
 * and *empty to 1 when it has no members. Otherwise ESS_EINVAL, with *err
 * (may be NULL) set to a short static reason and *at to the byte offset.
 */
int ess_json_object(const char *s, size_t len, size_t *close, int *empty, const char **err,
                    size_t *at);

/**
 * The default enrichment's splice (lua/ess/enrich.lua): if s[0..len) is one
 * JSON object, append to out its bytes up to the closing '}', then `first`
 * (no members) or `more`, the number a, `mid`, the number b, and the rest
 * of s from the '}' on; return ESS_OK. Otherwise ESS_EINVAL as
 * ess_json_object, and out is unchanged. Numbers print as the hook's int():
 * integral values (|v| < 2^63) exactly, NaN as null, others as %.17g.
 */
int ess_json_splice(const char *s, size_t len, const char *first, const char *more, const char *mid,
                    double a, double b, ess_buf_t *out, const char **err, size_t *at);

/** Write v as ess_json_splice prints numbers; dst needs 32 bytes. Returns the length. */
size_t ess_json_number(char *dst, double v);

#endif
