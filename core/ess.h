/*
 * Shared definitions for the whole C core: result codes, assertions,
 * container_of and the allocation wrappers. Nothing here does I/O; every
 * module includes this header first.
 */
#ifndef ESS_H
#define ESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Result codes: 0 on success, a negative ESS_E* value on failure. */
#define ESS_OK 0
#define ESS_ENOMEM (-1)    /* only where the caller can recover; see ess_xmalloc */
#define ESS_EINVAL (-2)    /* bad argument or malformed input */
#define ESS_ETRUNC (-3)    /* input ended early: more bytes are needed */
#define ESS_ETOOBIG (-4)   /* input exceeds a configured or protocol limit */
#define ESS_ENOTFOUND (-5) /* the named thing does not exist */
#define ESS_EIO (-6)       /* an I/O or database error */
#define ESS_ECORRUPT (-7)  /* stored data failed an integrity check */
#define ESS_EPROTO (-8)    /* the peer broke the protocol */
#define ESS_EAUTH (-9)     /* authentication refused */
#define ESS_ESTATE (-10)   /* call not valid in the current state */
#define ESS_ESCRIPT (-11)  /* a Lua script failed */
#define ESS_ECONN (-12)    /* connection lost or refused */
#define ESS_ENOTSUP (-13)  /* the peer does not offer this (e.g. too old a broker) */

/** A short static description of an ESS_E* code; never NULL. */
const char *ess_strerror(int code);

#define ESS_ASSERT(expr)                                                                           \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "essd: assertion failed: %s (%s:%d)\n", #expr, __FILE__, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define ESS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Allocation wrappers: out of memory is not an error this process can
 * handle sensibly, so these abort with a clear message instead of returning
 * NULL. The caller frees with free().
 */
void *ess_xmalloc(size_t n);
void *ess_xcalloc(size_t count, size_t n);
void *ess_xrealloc(void *p, size_t n);
char *ess_xstrdup(const char *s);
char *ess_xstrndup(const char *s, size_t n);

#endif
