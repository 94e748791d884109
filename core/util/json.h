/*
 * A strict JSON validator (RFC 8259) that allocates nothing: the
 * enrichment hot path checks that a body is a JSON object without
 * building a Lua table for it.
 */
#ifndef ESS_JSON_H
#define ESS_JSON_H

#include <stddef.h>

#define ESS_JSON_MAX_DEPTH 512

/**
 * If s[0..len) is exactly one JSON object (surrounding white space
 * allowed), return ESS_OK and set *close to the index of its closing '}'
 * and *empty to 1 when it has no members. Otherwise ESS_EINVAL, with *err
 * (may be NULL) set to a short static reason and *at to the byte offset.
 */
int ess_json_object(const char *s, size_t len, size_t *close, int *empty, const char **err,
                    size_t *at);

#endif
