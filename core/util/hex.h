/*
 * One hexadecimal digit's value, shared by the percent-decoders of the
 * request check (http/reqcheck.c) and the broker URL (mq/url.c).
 */
#ifndef ESS_HEX_H
#define ESS_HEX_H

/** The value of hex digit c (0-15), or -1 when c is not one. */
static inline int ess_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
