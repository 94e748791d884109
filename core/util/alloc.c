/*
 * The out-of-memory policy (abort with a message) and the result-code
 * strings. Everything that allocates in the core goes through here.
 */
#include "ess.h"

#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "essd: out of memory allocating %zu bytes\n", n);
    abort();
}

void *ess_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *ess_xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p == NULL)
        oom(count * n);
    return p;
}

void *ess_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *ess_xstrdup(const char *s)
{
    return ess_xstrndup(s, strlen(s));
}

char *ess_xstrndup(const char *s, size_t n)
{
    char *p = ess_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

const char *ess_strerror(int code)
{
    switch (code) {
    case ESS_OK: return "ok";
    case ESS_ENOMEM: return "out of memory";
    case ESS_EINVAL: return "invalid argument or input";
    case ESS_ETRUNC: return "input truncated";
    case ESS_ETOOBIG: return "input too large";
    case ESS_ENOTFOUND: return "not found";
    case ESS_EIO: return "I/O error";
    case ESS_ECORRUPT: return "corrupt data";
    case ESS_EPROTO: return "protocol error";
    case ESS_EAUTH: return "authentication refused";
    case ESS_ESTATE: return "invalid state";
    case ESS_ESCRIPT: return "script error";
    case ESS_ECONN: return "connection error";
    case ESS_ENOTSUP: return "not supported by the peer";
    }
    return "unknown error";
}
