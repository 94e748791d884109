/*
 * UTF-8 validation, shared by the registry (routing keys) and the
 * WebSocket path (text or binary frame).
 */
#ifndef ESS_UTF8_H
#define ESS_UTF8_H

#include <stddef.h>
#include <stdint.h>

/** 1 when s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int ess_utf8_valid(const uint8_t *s, size_t len);

#endif
