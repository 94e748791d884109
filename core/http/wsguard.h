/*
 * The client-to-server WebSocket frame check (RFC 6455 section 5) that
 * libwebsockets 4.1 does not make, or makes only by dropping the socket
 * without a close frame: unmasked frames, control frames over 125 bytes
 * or fragmented, reserved opcodes and RSV bits, continuation errors, a
 * one-byte close payload (1002), and invalid UTF-8 in text messages and
 * close reasons (1007). Pure: bytes in, a verdict out (and, with
 * permessage-deflate, RSV1 cleared in place); ws.c feeds it every
 * byte lws reads from a public WebSocket's socket. Owned by core/http/ws.c.
 */
#ifndef ESS_WSGUARD_H
#define ESS_WSGUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t hdr[14]; /* the frame header read so far */
    uint8_t hlen;    /* its bytes */
    uint8_t hneed;   /* the header's full length once known (2 until then) */
    uint8_t opcode;  /* of the frame whose payload is being read */
    uint8_t fin;
    uint8_t mask[4];
    uint8_t mpos;   /* position in the mask */
    uint64_t left;  /* payload bytes left in the frame; header when 0 and hlen < hneed */
    uint8_t in_msg; /* a fragmented data message is open */
    uint8_t text;   /* the current data message is text */
    uint8_t u_need, u_lo, u_hi; /* UTF-8 of the data message */
    uint8_t c_need, c_lo, c_hi; /* UTF-8 of a close reason */
    uint8_t close_pos;          /* payload bytes of a close frame read */
    uint8_t deflate;            /* permessage-deflate negotiated: RSV1 allowed (set by caller) */
    uint8_t compressed;         /* the current data message has RSV1 */
    int code;                   /* 0, or the close code of the first violation */
    const char *reason;
} ess_wsguard_t;

/** A guard for a new connection (all zero but the header length). */
void ess_wsguard_init(ess_wsguard_t *g);

/**
 * Check the next n bytes from the client. With g->deflate set
 * (permessage-deflate negotiated, RFC 7692), RSV1 is allowed on the first
 * frame of a data message; the guard clears that bit in buf, since
 * lws 4.1 (no extension of its own is active) refuses any RSV bit, and
 * does not check the UTF-8 of a compressed text message (essd drops
 * client messages unread). Returns n when they are fine;
 * else the offset of the first byte not to hand on (the start of the
 * offending frame when it started in buf, else the offending byte), with
 * g->code (1002 or 1007) and g->reason set. After a violation every
 * further call returns 0.
 */
size_t ess_wsguard_feed(ess_wsguard_t *g, uint8_t *buf, size_t n);

#endif
