/*
 * permessage-deflate (RFC 7692) as essd does it itself: essd frames every
 * WebSocket message and writes it raw, so lws's extension cannot be used.
 * Only the no-context-takeover form is offered: each message is deflated
 * alone, so one compressed frame can serve every client of a shared
 * subscription. Pure (zlib only): the offer check, the compressor, and a
 * bounded inflater for client messages. Owned by core/http/ws.c and the
 * delivery path that frames messages.
 */
#ifndef ESS_DEFLATE_H
#define ESS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

/** The Sec-WebSocket-Extensions value essd answers an acceptable offer with. */
#define ESS_DEFLATE_RESPONSE                                                                       \
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

/** Messages shorter than this go uncompressed (RSV1 clear). */
#define ESS_DEFLATE_MIN 64

/**
 * Whether a Sec-WebSocket-Extensions header value (NULL: none) holds a
 * permessage-deflate offer essd can honour (RFC 7692 section 7): one whose
 * parameters are all known, none repeated, and server_max_window_bits, if
 * given, is 15. 1 yes, 0 no.
 */
int ess_deflate_offer_ok(const char *hdr);

/** A compressor: one zlib raw-deflate state, reset for every message. */
typedef struct {
    z_stream z;
    int ready;
} ess_deflate_t;

/** 0, or -1 when zlib cannot allocate its state. */
int ess_deflate_init(ess_deflate_t *d, int level);
void ess_deflate_free(ess_deflate_t *d);

/** An upper bound of what ess_deflate_message writes for n bytes. */
size_t ess_deflate_bound(const ess_deflate_t *d, size_t n);

/**
 * Deflate one message alone (no context takeover) into out (room for
 * ess_deflate_bound bytes): the raw deflate data, flushed with Z_SYNC_FLUSH
 * and without its trailing 00 00 ff ff, as RFC 7692 section 7.2.1 sends it.
 * Returns the bytes written, or 0 on a zlib error.
 */
size_t ess_deflate_message(ess_deflate_t *d, const uint8_t *in, size_t n, uint8_t *out);

/**
 * Inflate a message received compressed (RFC 7692 section 7.2.2: the
 * 00 00 ff ff is appended here), at most max bytes of output into out.
 * Returns the bytes out, or -1 when the data is not valid deflate or
 * inflates to more than max.
 */
long ess_inflate_message(const uint8_t *in, size_t n, uint8_t *out, size_t max);

#endif
