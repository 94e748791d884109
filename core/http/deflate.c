/*
 * permessage-deflate (deflate.h): the check of a client's
 * Sec-WebSocket-Extensions offer, the per-message compressor
 * (no context takeover, so a reset zlib state per message) and a bounded
 * inflater. No sockets and no lws here: ws.c negotiates, the delivery path
 * compresses the payloads it frames.
 */
#include "http/deflate.h"

#include <ctype.h>
#include <string.h>

/* One token of the header: [*p, *e), skipping spaces around it. */
static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Whether the parameters of one permessage-deflate offer, the text
 * between its first ';' and the end of the offer (',' or NUL), can be
 * honoured. */
static int params_ok(const char *p, const char *end)
{
    int seen_s = 0, seen_c = 0, seen_sb = 0, seen_cb = 0;
    while (p < end) {
        p = skip_ws(p);
        const char *name = p;
        while (p < end && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nl = (size_t)(p - name);
        p = skip_ws(p);
        const char *val = NULL;
        size_t vl = 0;
        if (p < end && *p == '=') {
            p = skip_ws(p + 1);
            int quoted = p < end && *p == '"';
            if (quoted)
                p++;
            val = p;
            while (p < end && *p != ';' && *p != '"' && *p != ' ' && *p != '\t')
                p++;
            vl = (size_t)(p - val);
            if (quoted) {
                if (p >= end || *p != '"')
                    return 0;
                p++;
            }
            p = skip_ws(p);
        }
        if (p < end && *p != ';')
            return 0;
        if (p < end)
            p++;
#define IS(s) (nl == sizeof s - 1 && strncmp(name, s, nl) == 0)
        if (nl == 0 && val == NULL)
            continue; /* "a; ;b" or a trailing ';' */
        if (IS("server_no_context_takeover") || IS("client_no_context_takeover")) {
            int *seen = IS("server_no_context_takeover") ? &seen_s : &seen_c;
            if (val || (*seen)++)
                return 0;
        } else if (IS("server_max_window_bits")) {
            /* essd deflates with a 15-bit window: honour only 15. */
            if (seen_sb++ || !val || vl != 2 || strncmp(val, "15", 2) != 0)
                return 0;
        } else if (IS("client_max_window_bits")) {
            /* A hint the server may ignore; a value must be 8..15. */
            if (seen_cb++)
                return 0;
            if (val) {
                int v = 0;
                for (size_t i = 0; i < vl; i++) {
                    if (!isdigit((unsigned char)val[i]) || vl > 2)
                        return 0;
                    v = v * 10 + (val[i] - '0');
                }
                if (vl == 0 || v < 8 || v > 15)
                    return 0;
            }
        } else {
            return 0;
        }
#undef IS
    }
    return 1;
}

int ess_deflate_offer_ok(const char *hdr)
{
    static const char name[] = "permessage-deflate";
    const char *p = hdr;
    while (p && *p) {
        p = skip_ws(p);
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *ne = semi ? semi : end;
        while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        if ((size_t)(ne - p) == sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0 &&
            params_ok(semi ? semi + 1 : end, end))
            return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

int ess_deflate_init(ess_deflate_t *d, int level)
{
    memset(d, 0, sizeof *d);
    if (deflateInit2(&d->z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    d->ready = 1;
    return 0;
}

void ess_deflate_free(ess_deflate_t *d)
{
    if (d->ready)
        deflateEnd(&d->z);
    d->ready = 0;
}

size_t ess_deflate_bound(const ess_deflate_t *d, size_t n)
{
    /* deflateBound covers a finished stream; a sync flush adds at most
     * one empty stored block (5 bytes) and its alignment. */
    return deflateBound((z_streamp)&d->z, (uLong)n) + 16;
}

size_t ess_deflate_message(ess_deflate_t *d, const uint8_t *in, size_t n, uint8_t *out)
{
    if (!d->ready || deflateReset(&d->z) != Z_OK)
        return 0;
    size_t cap = ess_deflate_bound(d, n);
    d->z.next_in = (Bytef *)in;
    d->z.avail_in = (uInt)n;
    d->z.next_out = out;
    d->z.avail_out = (uInt)cap;
    int rc = deflate(&d->z, Z_SYNC_FLUSH);
    if (rc != Z_OK || d->z.avail_in != 0 || d->z.avail_out == 0)
        return 0;
    size_t len = cap - d->z.avail_out;
    /* A sync flush ends with an empty stored block: 00 00 ff ff. */
    if (len < 4 || memcmp(out + len - 4, "\x00\x00\xff\xff", 4) != 0)
        return 0;
    return len - 4;
}

long ess_inflate_message(const uint8_t *in, size_t n, uint8_t *out, size_t max)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK)
        return -1;
    uint8_t spare; /* output past max lands here, and means too much */
    z.next_out = out;
    z.avail_out = (uInt)max;
    int ok = 1, done = 0;
    for (int part = 0; part < 2 && ok && !done; part++) {
        z.next_in = (Bytef *)(part ? tail : in);
        z.avail_in = (uInt)(part ? sizeof tail : n);
        while (z.avail_in && ok && !done) {
            int full = z.avail_out == 0;
            if (full)
                z.next_out = &spare, z.avail_out = 1;
            int rc = inflate(&z, Z_SYNC_FLUSH);
            if (full && z.avail_out == 0)
                ok = 0; /* more than max */
            else if (full)
                z.avail_out = 0;
            if (rc == Z_STREAM_END)
                done = 1; /* a final block: what follows is ignored */
            else if (rc == Z_BUF_ERROR && full)
                ok = 0; /* no progress even with room */
            else if (rc != Z_OK && !(rc == Z_BUF_ERROR && z.avail_out == 0))
                ok = 0;
        }
    }
    size_t got = z.next_out == &spare || z.next_out == &spare + 1 ? max : max - z.avail_out;
    inflateEnd(&z);
    return ok ? (long)got : -1;
}
