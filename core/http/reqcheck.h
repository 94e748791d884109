/*
 * The request-head check that runs before libwebsockets sees a byte: a
 * pure function over the raw head (no sockets, no lws), so it is unit
 * tested and fuzzable. It refuses, with an HTTP status and a JSON detail,
 * what lws 4.1 would answer with an HTML 403 or a bare close, and what it
 * would accept wrongly (request smuggling). Owned by core/http/edge.c.
 */
#ifndef ESS_REQCHECK_H
#define ESS_REQCHECK_H

#include <stddef.h>
#include <stdint.h>

/* lws 4.1 keeps the URI, each query parameter and each header it knows in
 * one of 95 "fragments" and closes the socket without a word when they run
 * out: the head is refused (414/431) well before that. */
#define ESS_REQ_MAX_HEADERS 64
#define ESS_REQ_MAX_FRAGMENTS 88
#define ESS_REQ_MAX_NAME 256

typedef struct {
    size_t max_head;  /* request line + headers + blank line, bytes */
    int64_t max_body; /* largest Content-Length accepted */
} ess_req_limits_t;

typedef struct {
    int status;             /* 0: pass on to lws; else the status to answer */
    const char *detail;     /* static text for {"detail": ...} when status != 0 */
    const char *allow;      /* Allow header value for a 405, else NULL */
    int64_t content_length; /* -1 when absent */
    int expect_continue;    /* "Expect: 100-continue" */
    int upgrade;            /* "Upgrade: websocket" */
    char method[16];        /* for the access log; "" when unreadable */
    size_t target_off;      /* request target within the head */
    size_t target_len;
} ess_req_head_t;

/**
 * The length of the head at the start of buf (through the blank line that
 * ends it), 0 when it is not complete yet. When 0 and len is over
 * lim->max_head, *status is set to 414 (no full request line yet) or 431.
 * *scanned (0 at first) remembers how far earlier calls looked.
 */
size_t ess_req_head_end(const char *buf, size_t len, const ess_req_limits_t *lim, size_t *scanned,
                        int *status);

/** Check the complete head buf[0..len) and fill *out (out->status 0 = fine). */
void ess_req_check(const char *buf, size_t len, const ess_req_limits_t *lim, ess_req_head_t *out);

/** The reason phrase for the statuses ess_req_check answers. */
const char *ess_req_reason(int status);

#endif
