/*
 * Event-stream ids. Owns only the encoding and the entropy source; the
 * registry decides uniqueness (a UNIQUE column, retried on collision).
 */
#include "util/uuid.h"
#include "ess.h"

#include <errno.h>
#include <sys/random.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void ess_uuid_encode(const unsigned char raw[16], char out[ESS_UUID_LEN + 1])
{
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < 16; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64url[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = b64url[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    ESS_ASSERT(o == ESS_UUID_LEN);
}

int ess_uuid_new(char out[ESS_UUID_LEN + 1])
{
    unsigned char raw[16];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return ESS_EIO;
        }
        got += (size_t)n;
    }
    ess_uuid_encode(raw, out);
    return ESS_OK;
}

int ess_uuid_valid(const char *s, size_t len)
{
    if (len != ESS_UUID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}
