/*
 * The client frame check (wsguard.h): a byte-at-a-time parser of frame
 * headers, unmasking only what it validates as UTF-8 (text messages across
 * their fragments, close reasons). It changes no byte but the RSV1 bit of
 * a compressed message's first frame when permessage-deflate is on.
 */
#include "http/wsguard.h"

#include <string.h>

void ess_wsguard_init(ess_wsguard_t *g)
{
    memset(g, 0, sizeof *g);
    g->hneed = 2;
}

/* One step of a UTF-8 check: 0 fine, -1 invalid. need/lo/hi: the
 * continuation bytes still due and the range of the next one. */
static int utf8_step(uint8_t *need, uint8_t *lo, uint8_t *hi, uint8_t c)
{
    if (*need == 0) {
        if (c < 0x80)
            return 0;
        if (c >= 0xc2 && c <= 0xdf) {
            *need = 1, *lo = 0x80, *hi = 0xbf;
        } else if (c >= 0xe0 && c <= 0xef) {
            *need = 2, *lo = c == 0xe0 ? 0xa0 : 0x80, *hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            *need = 3, *lo = c == 0xf0 ? 0x90 : 0x80, *hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            return -1;
        }
        return 0;
    }
    if (c < *lo || c > *hi)
        return -1;
    (*need)--;
    *lo = 0x80, *hi = 0xbf;
    return 0;
}

static int fail(ess_wsguard_t *g, int code, const char *reason)
{
    g->code = code;
    g->reason = reason;
    return -1;
}

/* The header is complete: check it and start the payload. */
static int header_done(ess_wsguard_t *g)
{
    uint8_t b0 = g->hdr[0], b1 = g->hdr[1];
    g->fin = b0 >> 7;
    g->opcode = b0 & 0x0f;
    uint64_t len = b1 & 0x7f;
    if (len == 126)
        len = (uint64_t)g->hdr[2] << 8 | g->hdr[3];
    else if (len == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | g->hdr[i];
        if (len >> 63)
            return fail(g, 1002, "protocol error: frame length over 2^63");
    }
    memcpy(g->mask, g->hdr + g->hlen - 4, 4);
    g->mpos = 0;
    g->left = len;
    g->close_pos = 0;
    if (g->opcode == 8) {
        if (len == 1)
            return fail(g, 1002, "protocol error: a one-byte close payload");
        g->c_need = 0;
    }
    if (!(g->opcode & 8)) {
        if (g->opcode != 0)
            g->text = g->opcode == 1, g->u_need = 0, g->compressed = (b0 & 0x40) != 0;
        g->in_msg = !g->fin;
    }
    return 0;
}

/* A data or close frame's payload has ended. */
static int payload_done(ess_wsguard_t *g)
{
    if (g->opcode == 8 && g->c_need)
        return fail(g, 1007, "invalid UTF-8 in the close reason");
    if (!(g->opcode & 8) && g->fin && g->text && !g->compressed && g->u_need)
        return fail(g, 1007, "invalid UTF-8 in a text message");
    return 0;
}

/* The first two header bytes are in: check them, size the rest. */
static int header_start(ess_wsguard_t *g)
{
    uint8_t b0 = g->hdr[0], b1 = g->hdr[1];
    int opcode = b0 & 0x0f, fin = b0 >> 7, len = b1 & 0x7f;
    int rsv1_ok = g->deflate && !(opcode & 8) && opcode != 0;
    if (b0 & (rsv1_ok ? 0x30 : 0x70))
        return fail(g, 1002, "protocol error: RSV bits set without an extension");
    if ((opcode > 2 && opcode < 8) || opcode > 10)
        return fail(g, 1002, "protocol error: reserved opcode");
    if (!(b1 & 0x80))
        return fail(g, 1002, "protocol error: an unmasked client frame");
    if (opcode & 8) {
        if (!fin)
            return fail(g, 1002, "protocol error: a fragmented control frame");
        if (len > 125)
            return fail(g, 1002, "protocol error: a control frame over 125 bytes");
    } else if (opcode == 0 && !g->in_msg) {
        return fail(g, 1002, "protocol error: a continuation frame with nothing to continue");
    } else if (opcode != 0 && g->in_msg) {
        return fail(g, 1002, "protocol error: a new message inside a fragmented one");
    }
    g->hneed = (uint8_t)(2 + (len == 126 ? 2 : len == 127 ? 8 : 0) + 4);
    return 0;
}

size_t ess_wsguard_feed(ess_wsguard_t *g, uint8_t *buf, size_t n)
{
    if (g->code)
        return 0;
    size_t frame_start = 0; /* where the current frame began in buf */
    int started_here = 0;
    size_t i = 0;
    while (i < n) {
        if (g->left == 0 && g->hlen < g->hneed) {
            if (g->hlen == 0) {
                frame_start = i;
                started_here = 1;
            }
            g->hdr[g->hlen++] = buf[i++];
            if (g->hlen == 1 && g->deflate && (buf[i - 1] & 0x40) && (buf[i - 1] & 0x0f) != 0 &&
                !(buf[i - 1] & 8))
                buf[i - 1] &= (uint8_t)~0x40; /* a compressed message: lws must not see RSV1 */
            int bad = 0;
            if (g->hlen == 2)
                bad = header_start(g);
            if (!bad && g->hlen == g->hneed) {
                bad = header_done(g);
                if (!bad && g->left == 0) {
                    bad = payload_done(g);
                    g->hlen = 0, g->hneed = 2;
                }
            }
            if (bad)
                return started_here ? frame_start : i - 1;
            continue;
        }
        /* Payload: only text messages and close frames are looked at. */
        size_t take = n - i < g->left ? n - i : (size_t)g->left;
        int data = !(g->opcode & 8);
        if ((data && g->text && !g->compressed) || g->opcode == 8) {
            for (size_t k = 0; k < take; k++) {
                uint8_t c = buf[i + k] ^ g->mask[g->mpos];
                g->mpos = (g->mpos + 1) & 3;
                int bad;
                if (data)
                    bad = utf8_step(&g->u_need, &g->u_lo, &g->u_hi, c);
                else
                    bad = g->close_pos++ >= 2 && utf8_step(&g->c_need, &g->c_lo, &g->c_hi, c);
                if (bad) {
                    fail(g, 1007,
                         data ? "invalid UTF-8 in a text message"
                              : "invalid UTF-8 in the close reason");
                    return started_here ? frame_start : i + k;
                }
            }
        }
        i += take;
        g->left -= take;
        if (g->left == 0) {
            if (payload_done(g))
                return started_here ? frame_start : i - 1;
            g->hlen = 0, g->hneed = 2;
        }
    }
    return n;
}
