/*
 * AMQP URL parser. Owns the split of an amqp:// or amqps:// URL into user,
 * password, host, port and vhost, percent-decoding each part. It does not
 * resolve host names or open connections; query parameters are ignored.
 */
#include "mq/url.h"
#include "util/hex.h"

#include <string.h>

#include "ess.h"

/* Percent-decodes s[0..n) into a new string; NULL on a bad escape or a NUL. */
static char *decode(const char *s, size_t n)
{
    char *out = ess_xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (n - i < 3 || ess_hexval((unsigned char)s[i + 1]) < 0 ||
            ess_hexval((unsigned char)s[i + 2]) < 0)
            goto fail;
        char c =
            (char)(ess_hexval((unsigned char)s[i + 1]) * 16 + ess_hexval((unsigned char)s[i + 2]));
        if (c == '\0')
            goto fail;
        *o++ = c;
        i += 2;
    }
    *o = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

void ess_url_free(ess_url_t *u)
{
    free(u->user);
    free(u->pass);
    free(u->host);
    free(u->vhost);
    memset(u, 0, sizeof *u);
}

int ess_url_parse(const char *s, ess_url_t *out)
{
    memset(out, 0, sizeof *out);
    if (s == NULL)
        return ESS_EINVAL;
    if (strncmp(s, "amqp://", 7) == 0) {
        s += 7;
        out->port = 5672;
    } else if (strncmp(s, "amqps://", 8) == 0) {
        s += 8;
        out->port = 5671;
        out->tls = 1;
    } else {
        return ESS_EINVAL;
    }
    size_t auth_end = strcspn(s, "/?#");
    const char *path = s + auth_end;
    const char *at = memchr(s, '@', auth_end);
    const char *hp = s;
    if (at != NULL) {
        for (const char *q = at + 1; q < path; q++)
            if (*q == '@')
                goto fail;
        const char *colon = memchr(s, ':', (size_t)(at - s));
        size_t ulen = colon ? (size_t)(colon - s) : (size_t)(at - s);
        out->user = decode(s, ulen);
        out->pass = colon ? decode(colon + 1, (size_t)(at - colon - 1)) : ess_xstrdup("guest");
        if (out->user == NULL || out->pass == NULL)
            goto fail;
        hp = at + 1;
    } else {
        out->user = ess_xstrdup("guest");
        out->pass = ess_xstrdup("guest");
    }
    const char *hend = path, *port = NULL;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(path - hp));
        if (rb == NULL)
            goto fail;
        out->host = ess_xstrndup(hp + 1, (size_t)(rb - hp - 1));
        if (rb + 1 < path) {
            if (rb[1] != ':')
                goto fail;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', (size_t)(path - hp));
        if (colon) {
            port = colon + 1;
            hend = colon;
        }
        out->host = decode(hp, (size_t)(hend - hp));
    }
    if (out->host == NULL || out->host[0] == '\0')
        goto fail;
    if (port != NULL) {
        long v = 0;
        if (port == path)
            goto fail;
        for (const char *q = port; q < path; q++) {
            if (*q < '0' || *q > '9')
                goto fail;
            v = v * 10 + (*q - '0');
            if (v > 65535)
                goto fail;
        }
        if (v == 0)
            goto fail;
        out->port = (int)v;
    }
    if (*path == '/') {
        size_t vlen = strcspn(path + 1, "?#");
        out->vhost = vlen ? decode(path + 1, vlen) : ess_xstrdup("/");
    } else {
        out->vhost = ess_xstrdup("/");
    }
    if (out->vhost == NULL)
        goto fail;
    return ESS_OK;
fail:
    ess_url_free(out);
    return ESS_EINVAL;
}
