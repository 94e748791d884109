/*
 * The request-head check run on the raw bytes of a request before
 * libwebsockets parses them (see reqcheck.h). It owns the rules of what a
 * request head may look like on both listeners: the request line (a method
 * lws serves, an origin-form target with valid percent escapes and no
 * %00, HTTP/1.0 or 1.1), the header lines (syntax, count, one
 * non-negative Content-Length, no Transfer-Encoding, only a WebSocket
 * upgrade) and the size limits. Pure: no I/O, no allocation.
 */
#include "http/reqcheck.h"
#include "util/hex.h"

#include <string.h>

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int ieq(const char *a, size_t alen, const char *b)
{
    size_t n = strlen(b);
    if (alen != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

/* Skip the empty lines a client may send before the request line. */
static size_t skip_leading_eol(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
        i++;
    return i;
}

size_t ess_req_head_end(const char *buf, size_t len, const ess_req_limits_t *lim, size_t *scanned,
                        int *status)
{
    *status = 0;
    size_t start = skip_leading_eol(buf, len);
    size_t i = *scanned > start ? *scanned : start;
    for (; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        /* A line feed ends the head when the line it ends is empty. */
        if ((i >= 1 && buf[i - 1] == '\n') || (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n'))
            return i + 1 > lim->max_head + 2 ? (*status = 431, 0) : i + 1;
    }
    *scanned = len;
    if (len > lim->max_head) {
        const char *nl = memchr(buf + start, '\n', len - start);
        *status = nl == NULL || (size_t)(nl - (buf + start)) > lim->max_head ? 414 : 431;
    }
    return 0;
}

static void refuse(ess_req_head_t *out, int status, const char *detail)
{
    if (out->status == 0) {
        out->status = status;
        out->detail = detail;
    }
}

/* The request line: METHOD SP origin-form SP HTTP/1.x. */
static void check_request_line(const char *line, size_t n, const char *head, ess_req_head_t *out,
                               int *frags)
{
    const char *sp1 = memchr(line, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - line)) : NULL;
    if (sp1 == NULL || sp2 == NULL || memchr(sp2 + 1, ' ', n - (size_t)(sp2 + 1 - line))) {
        refuse(out, 400, "Malformed request line");
        return;
    }
    size_t mlen = (size_t)(sp1 - line);
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((unsigned char)line[i])) {
            refuse(out, 400, "Malformed request line");
            return;
        }
    if (mlen == 0 || mlen >= sizeof out->method) {
        refuse(out, mlen ? 405 : 400, mlen ? "Method Not Allowed" : "Malformed request line");
        return;
    }
    memcpy(out->method, line, mlen);
    out->method[mlen] = '\0';

    const char *t = sp1 + 1;
    size_t tlen = (size_t)(sp2 - t);
    out->target_off = (size_t)(t - head);
    out->target_len = tlen;
    const char *v = sp2 + 1;
    size_t vlen = n - (size_t)(v - line);

    int known = 0;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        known |= strcmp(out->method, methods[i]) == 0;
    if (!known) {
        refuse(out, 405, "Method Not Allowed");
        out->allow = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
        return;
    }
    if (vlen != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1')) {
        if (vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[6] == '.')
            refuse(out, 505, "HTTP Version Not Supported: use HTTP/1.1");
        else
            refuse(out, 400, "Malformed request line");
        return;
    }
    if (tlen == 0 || t[0] != '/') {
        refuse(out, 400,
               tlen == 1 && t[0] == '*'
                   ? "Invalid request target: '*' is not served"
                   : "Invalid request target: absolute-form is not served; send a path");
        return;
    }
    int in_query = 0;
    *frags = 2; /* the path and the start of the query */
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f) {
            refuse(out, 400, "Invalid request target: bytes outside printable ASCII");
            return;
        }
        if (c == '%') {
            int hi = i + 1 < tlen ? ess_hexval((unsigned char)t[i + 1]) : -1;
            int lo = i + 2 < tlen ? ess_hexval((unsigned char)t[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                refuse(out, 400, "Invalid request target: bad percent escape");
                return;
            }
            if (hi == 0 && lo == 0) {
                refuse(out, 400, "Invalid request target: %00");
                return;
            }
            i += 2;
        } else if (c == '?') {
            in_query = 1;
        } else if (in_query && (c == '&' || c == ';')) {
            (*frags)++;
        }
    }
}

void ess_req_check(const char *buf, size_t len, const ess_req_limits_t *lim, ess_req_head_t *out)
{
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    size_t pos = skip_leading_eol(buf, len);
    int frags = 0, nheaders = 0, first = 1, chunked = 0, bad_upgrade = 0;

    while (pos < len) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - line);
        pos += n + 1;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (memchr(line, '\r', n) != NULL || memchr(line, '\0', n) != NULL) {
            refuse(out, 400, "Malformed request head: CR or NUL inside a line");
            continue;
        }
        if (first) {
            first = 0;
            check_request_line(line, n, buf, out, &frags);
            continue;
        }
        if (n == 0)
            break; /* the blank line that ends the head */
        if (line[0] == ' ' || line[0] == '\t') {
            refuse(out, 400, "Malformed header: folded lines are not accepted");
            continue;
        }
        const char *colon = memchr(line, ':', n);
        size_t nlen = colon ? (size_t)(colon - line) : 0;
        int name_ok = colon != NULL && nlen > 0;
        for (size_t i = 0; name_ok && i < nlen; i++)
            name_ok = is_tchar((unsigned char)line[i]);
        if (!name_ok) {
            refuse(out, 400, "Malformed header line");
            continue;
        }
        if (nlen > ESS_REQ_MAX_NAME) {
            refuse(out, 431, "Request Header Fields Too Large: a header name is too long");
            continue;
        }
        if (++nheaders > ESS_REQ_MAX_HEADERS) {
            refuse(out, 431, "Request Header Fields Too Large: too many headers");
            continue;
        }
        const char *val = colon + 1;
        size_t vlen = n - nlen - 1;
        while (vlen && (*val == ' ' || *val == '\t'))
            val++, vlen--;
        while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
            vlen--;
        if (ieq(line, nlen, "content-length")) {
            int64_t v = 0;
            int ok = vlen > 0 && vlen <= 15;
            for (size_t i = 0; ok && i < vlen; i++) {
                ok = val[i] >= '0' && val[i] <= '9';
                v = v * 10 + (val[i] - '0');
            }
            if (out->content_length >= 0)
                refuse(out, 400, "Bad Content-Length: given more than once");
            else if (!ok)
                refuse(out, 400, "Bad Content-Length: not a non-negative decimal integer");
            else
                out->content_length = v;
        } else if (ieq(line, nlen, "transfer-encoding")) {
            chunked = 1;
        } else if (ieq(line, nlen, "upgrade")) {
            if (ieq(val, vlen, "websocket") && !out->upgrade)
                out->upgrade = 1;
            else
                bad_upgrade = 1;
        } else if (ieq(line, nlen, "expect")) {
            out->expect_continue = ieq(val, vlen, "100-continue");
        }
    }
    if (first) {
        refuse(out, 400, "Malformed request line");
        return;
    }
    if (frags > ESS_REQ_MAX_FRAGMENTS)
        refuse(out, 414, "URI Too Long: too many query parameters");
    else if (frags + nheaders > ESS_REQ_MAX_FRAGMENTS)
        refuse(out, 431, "Request Header Fields Too Large: too many headers");
    if (chunked)
        refuse(out, out->content_length >= 0 ? 400 : 411,
               out->content_length >= 0
                   ? "Bad request: both Transfer-Encoding and Content-Length"
                   : "Length Required: chunked request bodies are not supported; send "
                     "Content-Length");
    if (bad_upgrade)
        refuse(out, 400, "Bad request: only an upgrade to websocket is served");
    if (out->content_length > lim->max_body)
        refuse(out, 413, NULL); /* the caller words it with the limit */
}

const char *ess_req_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}
