/*
 * Strict, allocation-free JSON validation. Strings must be valid UTF-8
 * with valid escapes (\u surrogates paired); numbers follow the RFC
 * grammar; nesting is bounded by ESS_JSON_MAX_DEPTH with an explicit stack
 * of container kinds, so no input can exhaust the C stack.
 */
#include "util/json.h"
#include "ess.h"
#include "util/utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end, *start;
    const char *err;
} cur_t;

static int fail(cur_t *c, const char *why)
{
    if (c->err == NULL)
        c->err = why;
    return -1;
}

static void ws(cur_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(cur_t *c, unsigned *out)
{
    if (c->end - c->p < 4)
        return fail(c, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = c->p[i];
        v <<= 4;
        if (h >= '0' && h <= '9')
            v |= h - '0';
        else if (h >= 'a' && h <= 'f')
            v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F')
            v |= h - 'A' + 10;
        else
            return fail(c, "bad \\u escape");
    }
    c->p += 4;
    *out = v;
    return 0;
}

/* Nonzero when one of the 8 bytes of w is '"', '\\' or below 0x20 (a
 * false positive only above a true one: the byte loop decides). */
static uint64_t special8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | (w - ones * 0x20)) & ~w & highs;
}

static int string(cur_t *c)
{
    c->p++; /* opening quote */
    const unsigned char *run = c->p;
    while (c->p < c->end) {
        /* Plain string bytes eight at a time (bodies carry long strings). */
        while (c->end - c->p >= 8) {
            uint64_t w;
            memcpy(&w, c->p, 8);
            if (special8(w))
                break;
            c->p += 8;
        }
        if (c->p >= c->end)
            break;
        unsigned char ch = *c->p;
        if (ch == '"') {
            if (!ess_utf8_valid(run, (size_t)(c->p - run)))
                return fail(c, "invalid UTF-8 in string");
            c->p++;
            return 0;
        }
        if (ch < 0x20)
            return fail(c, "control character in string");
        if (ch == '\\') {
            if (!ess_utf8_valid(run, (size_t)(c->p - run)))
                return fail(c, "invalid UTF-8 in string");
            c->p++;
            if (c->p >= c->end)
                return fail(c, "truncated escape");
            unsigned char e = *c->p++;
            if (e == 'u') {
                unsigned u;
                if (hex4(c, &u))
                    return -1;
                if (u >= 0xd800 && u <= 0xdbff) {
                    unsigned lo;
                    if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
                        return fail(c, "unpaired surrogate");
                    c->p += 2;
                    if (hex4(c, &lo))
                        return -1;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return fail(c, "unpaired surrogate");
                } else if (u >= 0xdc00 && u <= 0xdfff) {
                    return fail(c, "unpaired surrogate");
                }
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return fail(c, "bad escape");
            }
            run = c->p;
            continue;
        }
        c->p++;
    }
    return fail(c, "unterminated string");
}

static int digits(cur_t *c)
{
    const unsigned char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > s ? 0 : fail(c, "bad number");
}

static int number(cur_t *c)
{
    if (*c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (digits(c))
        return -1;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (digits(c))
            return -1;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (digits(c))
            return -1;
    }
    return 0;
}

static int literal(cur_t *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return fail(c, "unexpected character");
    c->p += n;
    return 0;
}

/* A member name and its colon; the member's value follows. */
static int member_name(cur_t *c)
{
    ws(c);
    if (c->p >= c->end || *c->p != '"')
        return fail(c, "expected a member name");
    if (string(c))
        return -1;
    ws(c);
    if (c->p >= c->end || *c->p != ':')
        return fail(c, "expected ':'");
    c->p++;
    return 0;
}

/* One value; containers are walked with an explicit stack of '{' / '['. */
static int value(cur_t *c)
{
    char stack[ESS_JSON_MAX_DEPTH];
    int depth = 0;
    for (;;) {
        ws(c);
        if (c->p >= c->end)
            return fail(c, "unexpected end");
        unsigned char ch = *c->p;
        int scalar = 1;
        if (ch == '{' || ch == '[') {
            if (depth == ESS_JSON_MAX_DEPTH)
                return fail(c, "nesting too deep");
            stack[depth++] = (char)ch;
            c->p++;
            ws(c);
            if (c->p < c->end && *c->p == (ch == '{' ? '}' : ']')) {
                c->p++;
                depth--;
            } else if (ch == '{') {
                if (member_name(c))
                    return -1;
                continue; /* the member's value */
            } else {
                continue; /* the first element */
            }
            scalar = 0;
        }
        if (scalar) {
            int rc;
            if (ch == '"')
                rc = string(c);
            else if (ch == '-' || (ch >= '0' && ch <= '9'))
                rc = number(c);
            else if (ch == 't')
                rc = literal(c, "true");
            else if (ch == 'f')
                rc = literal(c, "false");
            else if (ch == 'n')
                rc = literal(c, "null");
            else
                rc = fail(c, "unexpected character");
            if (rc)
                return -1;
        }
        /* After a value: close containers or move to the next member. */
        for (;;) {
            if (depth == 0)
                return 0;
            ws(c);
            if (c->p >= c->end)
                return fail(c, "unexpected end");
            char open = stack[depth - 1];
            if (*c->p == ',') {
                c->p++;
                if (open == '{' && member_name(c))
                    return -1;
                break; /* parse the next value */
            }
            if (*c->p == (open == '{' ? '}' : ']')) {
                c->p++;
                depth--;
                continue;
            }
            return fail(c, open == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
}

int ess_json_object(const char *s, size_t len, size_t *close, int *empty, const char **err,
                    size_t *at)
{
    cur_t c = {(const unsigned char *)s, (const unsigned char *)s + len, (const unsigned char *)s,
               NULL};
    ws(&c);
    if (c.p >= c.end || *c.p != '{') {
        c.err = "not a JSON object";
        goto bad;
    }
    const unsigned char *open = c.p;
    if (value(&c))
        goto bad;
    const unsigned char *last = c.p - 1; /* the object's '}' */
    ws(&c);
    if (c.p != c.end) {
        c.err = "trailing characters after the object";
        goto bad;
    }
    *close = (size_t)(last - c.start);
    /* Empty when only white space stands between the braces. */
    const unsigned char *q = open + 1;
    while (q < last && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
        q++;
    *empty = q == last;
    return ESS_OK;
bad:
    if (err)
        *err = c.err;
    if (at)
        *at = (size_t)(c.p - c.start);
    return ESS_EINVAL;
}

size_t ess_json_number(char *dst, double v)
{
    if (v != v) {
        memcpy(dst, "null", 4);
        return 4;
    }
    if (v > -9223372036854775808.0 && v < 9223372036854775808.0 && v == (double)(int64_t)v) {
        int64_t i = (int64_t)v;
        uint64_t u = i < 0 ? 0 - (uint64_t)i : (uint64_t)i;
        char tmp[24];
        size_t n = 0, k = 0;
        do {
            tmp[n++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (i < 0)
            dst[k++] = '-';
        while (n)
            dst[k++] = tmp[--n];
        return k;
    }
    return (size_t)snprintf(dst, 32, "%.17g", v);
}

int ess_json_splice(const char *s, size_t len, const char *first, const char *more, const char *mid,
                    double a, double b, ess_buf_t *out, const char **err, size_t *at)
{
    size_t close;
    int empty;
    if (ess_json_object(s, len, &close, &empty, err, at) != ESS_OK)
        return ESS_EINVAL;
    const char *sep = empty ? first : more;
    size_t sep_n = strlen(sep), mid_n = strlen(mid);
    ess_buf_reserve(out, len + sep_n + mid_n + 64);
    char *p = out->data + out->len;
    memcpy(p, s, close);
    p += close;
    memcpy(p, sep, sep_n);
    p += sep_n;
    p += ess_json_number(p, a);
    memcpy(p, mid, mid_n);
    p += mid_n;
    p += ess_json_number(p, b);
    memcpy(p, s + close, len - close);
    p += len - close;
    out->len = (size_t)(p - out->data);
    return ESS_OK;
}
