/*
 * Unguessable event-stream identifiers: 128 bits from the kernel's CSPRNG
 * (getrandom), written as 22 characters of unpadded base64url.
 */
#ifndef ESS_UUID_H
#define ESS_UUID_H

#include <stddef.h>

#define ESS_UUID_LEN 22 /* characters, without the terminating NUL */

/** Fill out (ESS_UUID_LEN + 1 bytes) with a new NUL-terminated id. ESS_OK or ESS_EIO. */
int ess_uuid_new(char out[ESS_UUID_LEN + 1]);

/** Encode 16 bytes as the 22-character form (exposed for tests). */
void ess_uuid_encode(const unsigned char raw[16], char out[ESS_UUID_LEN + 1]);

/** 1 when s (len bytes) has the shape of an id: 22 base64url characters. */
int ess_uuid_valid(const char *s, size_t len);

#endif
