/*
 * Date/time selector parsing: turns the strings users give as
 * X-StreamOffsetFromDatetime / stream_from_datetime into epoch milliseconds
 * UTC. The service this gateway replaces used python-dateutil 2.8's
 * parser.parse (default parserinfo, not fuzzy), and clients depend on its
 * answers, so this is a port of that algorithm rather than a grammar of our
 * own: the same tokenizer (including its dot and comma splitting), the same
 * per-token rules in the same order, the same year/month/day resolution and
 * the same Decimal rounding for fractional hours and minutes. The few
 * deliberate differences (unknown zone names, offsets of 60 minutes or
 * more, NUL and non-ASCII bytes, a length cap, what fills omitted fields)
 * are listed in docs/datetime.md.
 *
 * This file also owns the civil-calendar arithmetic (Howard Hinnant's
 * days_from_civil). It does no I/O, allocates nothing, keeps no static
 * mutable state and never consults the locale or TZ. It knows nothing about
 * streams or offsets; turning the instant into a stream offset is the
 * caller's job.
 */
#include "util/datetime.h"

#include "ess.h"

#include <stdbool.h>
#include <string.h>

/* Numbers saturate here: far above any valid field, far below overflow. */
#define SAT INT64_C(1000000000000000)
/* Python's default decimal context precision, used for hour/minute fractions. */
#define DEC_PREC 28
#define MS_PER_DAY INT64_C(86400000)
/* 0001-01-01 and 9999-12-31 as days since the epoch. */
#define MIN_DAYS INT64_C(-719162)
#define MAX_DAYS INT64_C(2932896)

typedef struct {
    uint16_t off, len;
} tok_t;

enum { LBL_NONE, LBL_Y, LBL_M, LBL_D };

/* dateutil's _ymd: up to three date numbers and which of them are labelled. */
typedef struct {
    int64_t v[3];
    int n;
    int yi, mi, di; /* index of the labelled year/month/day, or -1 */
    bool century;   /* a year was written with three or more digits */
} ymd_t;

/* dateutil's _result; has_* stand for "is not None". */
typedef struct {
    bool has_year, has_month, has_day, has_hour, has_minute, has_second, has_us;
    bool has_weekday, has_ampm, has_tzname, has_off;
    int64_t year, month, day, hour, minute, second, us;
    int weekday;
    int tzname;      /* token index of the zone name */
    bool tzname_utc; /* validate() renamed the zone to "UTC" */
    int off_sign;
    int64_t off_h, off_m;
} res_t;

typedef struct {
    char buf[ESS_DATETIME_MAX_LEN];
    tok_t tok[ESS_DATETIME_MAX_LEN];
    int n;
    ymd_t ymd;
    res_t r;
    int64_t now_y; /* now's year: fills an omitted year, pivots two-digit ones */
    const char *err;
} ps_t;

/* A token Python's float() accepts: digits, optionally '.' and digits. */
typedef struct {
    int64_t ip;       /* integer part, saturated at SAT */
    int ip_sig;       /* significant digits in the integer part */
    const char *frac; /* fraction digits, frac_len of them */
    size_t frac_len;
    bool frac_nz; /* the fraction is not zero */
} num_t;

static const char *const JUMP[] = {" ",   ".",  ",", ";", "-",  "/",  "'",  "at", "on",
                                   "and", "ad", "m", "t", "of", "st", "nd", "rd", "th"};
static const char *const WEEKDAYS[][2] = {
    {"mon", "monday"}, {"tue", "tuesday"},  {"wed", "wednesday"}, {"thu", "thursday"},
    {"fri", "friday"}, {"sat", "saturday"}, {"sun", "sunday"}};
static const char *const MONTHS[][3] = {
    {"jan", "january", NULL}, {"feb", "february", NULL}, {"mar", "march", NULL},
    {"apr", "april", NULL},   {"may", NULL, NULL},       {"jun", "june", NULL},
    {"jul", "july", NULL},    {"aug", "august", NULL},   {"sep", "sept", "september"},
    {"oct", "october", NULL}, {"nov", "november", NULL}, {"dec", "december", NULL}};
static const char *const HMS[][3] = {
    {"h", "hour", "hours"}, {"m", "minute", "minutes"}, {"s", "second", "seconds"}};
static const char *const AMPM[][2] = {{"am", "a"}, {"pm", "p"}};

static int fail(ps_t *ps, const char *reason)
{
    if (ps->err == NULL)
        ps->err = reason;
    return ESS_EINVAL;
}

/* ---- calendar ---------------------------------------------------------- */

int64_t ess_datetime_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void ess_datetime_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static int64_t month_days(int64_t y, int64_t m)
{
    static const int8_t days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return days[m - 1] + (m == 2 && is_leap(y));
}

/* ---- tokenizer (dateutil's _timelex) ------------------------------------ */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Python's str.isspace() over ASCII, which includes \x1c..\x1f. */
static bool is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static void emit(ps_t *ps, size_t off, size_t len)
{
    ps->tok[ps->n].off = (uint16_t)off;
    ps->tok[ps->n].len = (uint16_t)len;
    ps->n++;
}

/*
 * Split buf[0..len) into tokens exactly as _timelex does: runs of letters,
 * runs of digits, one token per other character (each whitespace character
 * becomes " "), with dotted runs like "4.30.21" or "Sep.20" split at their
 * dots and commas but "13.5" or "00,123" (read as "00.123") kept whole.
 * Every token is at least one byte, so there are at most len of them.
 */
static void lex(ps_t *ps, size_t len)
{
    char *b = ps->buf;
    size_t pos = 0;

    ps->n = 0;
    while (pos < len) {
        size_t start = pos;
        char state; /* 'a' letters, '0' digits, 'A' letters and dots, 'N' digits and dots */
        bool seen_letters = false;

        if (is_alpha(b[pos])) {
            state = 'a';
        } else if (is_digit(b[pos])) {
            state = '0';
        } else {
            if (is_space(b[pos]))
                b[pos] = ' ';
            emit(ps, pos++, 1);
            continue;
        }
        for (pos++; pos < len; pos++) {
            char c = b[pos];
            if (state == 'a' || state == 'A')
                seen_letters = true;
            if (state == 'a') {
                if (c == '.')
                    state = 'A';
                else if (!is_alpha(c))
                    break;
            } else if (state == '0') {
                if (c == '.' || (c == ',' && pos - start >= 2))
                    state = 'N';
                else if (!is_digit(c))
                    break;
            } else if (state == 'A') {
                if (is_digit(c) && b[pos - 1] == '.')
                    state = 'N';
                else if (c != '.' && !is_alpha(c))
                    break;
            } else {
                if (is_alpha(c) && b[pos - 1] == '.')
                    state = 'A';
                else if (c != '.' && !is_digit(c))
                    break;
            }
        }
        if (state == 'A' || state == 'N') {
            int dots = 0;
            for (size_t k = start; k < pos; k++)
                dots += b[k] == '.';
            if (seen_letters || dots > 1 || b[pos - 1] == '.' || b[pos - 1] == ',') {
                size_t piece = start;
                for (size_t k = start; k < pos; k++) {
                    if (b[k] != '.' && b[k] != ',')
                        continue;
                    if (k > piece)
                        emit(ps, piece, k - piece);
                    emit(ps, k, 1);
                    piece = k + 1;
                }
                if (piece < pos)
                    emit(ps, piece, pos - piece);
                continue;
            }
            if (state == 'N' && dots == 0) {
                for (size_t k = start; k < pos; k++)
                    if (b[k] == ',')
                        b[k] = '.';
            }
        }
        emit(ps, start, pos - start);
    }
}

/* ---- token helpers ------------------------------------------------------ */

static const char *tp(const ps_t *ps, int i)
{
    return ps->buf + ps->tok[i].off;
}

static size_t tl(const ps_t *ps, int i)
{
    return ps->tok[i].len;
}

static bool ieq(const char *p, size_t n, const char *word)
{
    size_t k = 0;
    for (; k < n; k++) {
        char c = p[k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (word[k] == '\0' || word[k] != c)
            return false;
    }
    return word[k] == '\0';
}

/* Exact comparison of token i with a one-character string. */
static bool teq(const ps_t *ps, int i, char c)
{
    return tl(ps, i) == 1 && tp(ps, i)[0] == c;
}

static bool all_digits(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t k = 0; k < n; k++)
        if (!is_digit(p[k]))
            return false;
    return true;
}

static bool is_jump(const ps_t *ps, int i)
{
    for (size_t k = 0; k < ESS_ARRAY_SIZE(JUMP); k++)
        if (ieq(tp(ps, i), tl(ps, i), JUMP[k]))
            return true;
    return false;
}

static int weekday_of(const ps_t *ps, int i)
{
    for (int k = 0; k < 7; k++)
        if (ieq(tp(ps, i), tl(ps, i), WEEKDAYS[k][0]) || ieq(tp(ps, i), tl(ps, i), WEEKDAYS[k][1]))
            return k;
    return -1;
}

/* 1..12, or 0 when token i is not a month name. */
static int month_of(const ps_t *ps, int i)
{
    for (int k = 0; k < 12; k++)
        for (int a = 0; a < 3 && MONTHS[k][a] != NULL; a++)
            if (ieq(tp(ps, i), tl(ps, i), MONTHS[k][a]))
                return k + 1;
    return 0;
}

/* 0 hour, 1 minute, 2 second, or -1. */
static int hms_of(const ps_t *ps, int i)
{
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 3; a++)
            if (ieq(tp(ps, i), tl(ps, i), HMS[k][a]))
                return k;
    return -1;
}

/* 0 am, 1 pm, or -1. */
static int ampm_of(const ps_t *ps, int i)
{
    for (int k = 0; k < 2; k++)
        if (ieq(tp(ps, i), tl(ps, i), AMPM[k][0]) || ieq(tp(ps, i), tl(ps, i), AMPM[k][1]))
            return k;
    return -1;
}

static bool is_utczone(const char *p, size_t n)
{
    return ieq(p, n, "utc") || ieq(p, n, "gmt") || ieq(p, n, "z");
}

/* dateutil's _could_be_tzname, with the offset test left to the caller. */
static bool could_be_tzname(const ps_t *ps, int i)
{
    const char *p = tp(ps, i);
    size_t n = tl(ps, i);
    if (!ps->r.has_hour || ps->r.has_tzname || n > 5)
        return false;
    if (n == 1 && p[0] == 'z')
        return true;
    for (size_t k = 0; k < n; k++)
        if (p[k] < 'A' || p[k] > 'Z')
            return false;
    return true;
}

/* Python's int() of a string: all ASCII digits here, saturated at SAT. */
static bool int_of(const char *p, size_t n, int64_t *out)
{
    int64_t v = 0;
    if (!all_digits(p, n))
        return false;
    for (size_t k = 0; k < n; k++)
        v = v >= SAT / 10 ? SAT : v * 10 + (p[k] - '0');
    *out = v > SAT ? SAT : v;
    return true;
}

/* int(s[a:b]) with Python's clamping slice semantics; b < 0 means the end. */
static bool slice_int(const char *s, size_t n, size_t a, long b, int64_t *out)
{
    size_t e = b < 0 || (size_t)b > n ? n : (size_t)b;
    if (a > e)
        a = e;
    return int_of(s + a, e - a, out);
}

/*
 * Classify a token the way float() would: 1 for digits[.digits] (filling
 * *v), -1 for the words float() also takes (inf, infinity, nan), which
 * dateutil then rejects, 0 for anything else.
 */
static int num_of(const char *p, size_t n, num_t *v)
{
    size_t k = 0;
    int64_t ip = 0;
    int sig = 0;

    if (ieq(p, n, "inf") || ieq(p, n, "infinity") || ieq(p, n, "nan"))
        return -1;
    while (k < n && is_digit(p[k])) {
        ip = ip >= SAT / 10 ? SAT : ip * 10 + (p[k] - '0');
        if (sig > 0 || p[k] != '0')
            sig++;
        k++;
    }
    if (k == 0)
        return 0;
    v->ip = ip > SAT ? SAT : ip;
    v->ip_sig = sig;
    v->frac = p + n;
    v->frac_len = 0;
    v->frac_nz = false;
    if (k == n)
        return 1;
    if (p[k] != '.' || k + 1 == n || !all_digits(p + k + 1, n - k - 1))
        return 0;
    v->frac = p + k + 1;
    v->frac_len = n - k - 1;
    for (size_t j = 0; j < v->frac_len; j++)
        v->frac_nz |= v->frac[j] != '0';
    return 1;
}

static bool num_gt(const num_t *v, int64_t x)
{
    return v->ip > x || (v->ip == x && v->frac_nz);
}

/* Round the digit string a[0..n) to DEC_PREC significant digits, half-even. */
static void round_sig(uint8_t *a, size_t n)
{
    size_t z = 0, c;
    bool up, sticky = false;

    while (z < n && a[z] == 0)
        z++;
    if (n - z <= DEC_PREC)
        return;
    c = z + DEC_PREC;
    for (size_t k = c + 1; k < n; k++)
        sticky |= a[k] != 0;
    up = a[c] > 5 || (a[c] == 5 && (sticky || (a[c - 1] & 1)));
    memset(a + c, 0, n - c);
    for (size_t k = c; up && k-- > 0;) {
        up = a[k] == 9;
        a[k] = up ? 0 : (uint8_t)(a[k] + 1);
    }
}

/*
 * int(60 * (value % 1)) as Python computes it for a Decimal: the remainder
 * and the product are each rounded to 28 significant digits, so
 * 59.99...9 with enough nines becomes 60. Needs frac_len <= MAX_LEN.
 */
static int64_t sixty_times_frac(const num_t *v)
{
    uint8_t a[3 + ESS_DATETIME_MAX_LEN];
    size_t n = 3 + v->frac_len;
    unsigned carry = 0;

    a[0] = a[1] = a[2] = 0;
    for (size_t k = 0; k < v->frac_len; k++)
        a[3 + k] = (uint8_t)(v->frac[k] - '0');
    round_sig(a, n);
    for (size_t k = n; k-- > 0;) {
        unsigned t = a[k] * 60u + carry;
        a[k] = (uint8_t)(t % 10);
        carry = t / 10;
    }
    round_sig(a, n);
    return a[0] * 100 + a[1] * 10 + a[2];
}

/* ---- year/month/day (dateutil's _ymd) ----------------------------------- */

static int ymd_push(ps_t *ps, int64_t v, int label)
{
    ymd_t *y = &ps->ymd;
    if (y->n == 3)
        return fail(ps, "more than three date values");
    y->v[y->n] = v;
    if (label == LBL_M) {
        if (y->mi >= 0)
            return fail(ps, "month given twice");
        y->mi = y->n;
    } else if (label == LBL_D) {
        if (y->di >= 0)
            return fail(ps, "day given twice");
        y->di = y->n;
    } else if (label == LBL_Y) {
        if (y->yi >= 0)
            return fail(ps, "year given twice");
        y->yi = y->n;
    }
    y->n++;
    return ESS_OK;
}

/* ymd.append(string): three or more digits make it a year. */
static int ymd_append_str(ps_t *ps, const char *p, size_t n, int label)
{
    int64_t v;
    if (all_digits(p, n) && n > 2) {
        ps->ymd.century = true;
        label = LBL_Y;
    }
    if (!int_of(p, n, &v))
        return fail(ps, "invalid number");
    return ymd_push(ps, v, label);
}

/* ymd.append(Decimal): a value above 100 is a year. */
static int ymd_append_num(ps_t *ps, const num_t *v)
{
    int label = LBL_NONE;
    if (num_gt(v, 100)) {
        ps->ymd.century = true;
        label = LBL_Y;
    }
    return ymd_push(ps, v->ip, label);
}

static bool could_be_day(const ps_t *ps, const num_t *v)
{
    const ymd_t *y = &ps->ymd;
    int64_t last = 31;
    if (y->di >= 0)
        return false;
    if (y->mi >= 0)
        last = month_days(y->yi >= 0 ? y->v[y->yi] : 2000, y->v[y->mi]);
    return v->ip >= 1 && !num_gt(v, last);
}

/*
 * dateutil's resolve_ymd with dayfirst and yearfirst both false. Date
 * values are never negative, so -1 stands for None.
 */
static void ymd_resolve(const ymd_t *y, int64_t out[3], bool has[3])
{
    int n = y->n, nlab = (y->yi >= 0) + (y->mi >= 0) + (y->di >= 0);
    const int64_t *v = y->v;
    int yi = y->yi, mi = y->mi, di = y->di;
    int64_t yr = -1, mo = -1, dy = -1;

    if ((n == nlab && n > 0) || (n == 3 && nlab == 2)) {
        if (n == 3 && nlab == 2) {
            int missing = 3 - (yi >= 0 ? yi : 0) - (mi >= 0 ? mi : 0) - (di >= 0 ? di : 0);
            if (yi < 0)
                yi = missing;
            else if (mi < 0)
                mi = missing;
            else
                di = missing;
        }
        yr = yi >= 0 ? v[yi] : -1;
        mo = mi >= 0 ? v[mi] : -1;
        dy = di >= 0 ? v[di] : -1;
    } else if (n == 1 || (mi >= 0 && n == 2)) {
        int64_t other = v[0];
        if (mi >= 0) {
            mo = v[mi];
            other = v[mi == 0 ? n - 1 : mi - 1];
        }
        if (n > 1 || mi < 0) {
            if (other > 31)
                yr = other;
            else
                dy = other;
        }
    } else if (n == 2) {
        if (v[0] > 31) {
            yr = v[0], mo = v[1];
        } else if (v[1] > 31) {
            mo = v[0], yr = v[1];
        } else {
            mo = v[0], dy = v[1];
        }
    } else if (n == 3) {
        if (mi == 0) {
            if (v[1] > 31)
                mo = v[0], yr = v[1], dy = v[2];
            else
                mo = v[0], dy = v[1], yr = v[2];
        } else if (mi == 1) {
            if (v[0] > 31)
                yr = v[0], mo = v[1], dy = v[2];
            else
                dy = v[0], mo = v[1], yr = v[2];
        } else if (mi == 2) {
            if (v[1] > 31)
                dy = v[0], yr = v[1], mo = v[2];
            else
                yr = v[0], dy = v[1], mo = v[2];
        } else if (v[0] > 31 || yi == 0) {
            yr = v[0], mo = v[1], dy = v[2];
        } else if (v[0] > 12) {
            dy = v[0], mo = v[1], yr = v[2];
        } else {
            mo = v[0], dy = v[1], yr = v[2];
        }
    }
    out[0] = yr, out[1] = mo, out[2] = dy;
    has[0] = yr >= 0, has[1] = mo >= 0, has[2] = dy >= 0;
}

/* A year below 100 without a century lands within 50 years of now's year. */
static int64_t convert_year(int64_t now_y, int64_t y)
{
    int64_t century = (now_y >= 0 ? now_y : now_y - 99) / 100 * 100;
    if (y >= 100)
        return y;
    y += century;
    if (y >= now_y + 50)
        y -= 100;
    else if (y < now_y - 50)
        y += 100;
    return y;
}

/* ---- per-token rules (dateutil's _parse and _parse_numeric_token) -------- */

static int64_t adjust_ampm(int64_t hour, int ampm)
{
    if (hour < 12 && ampm == 1)
        return hour + 12;
    if (hour == 12 && ampm == 0)
        return 0;
    return hour;
}

/* _parsems: "SS" or "SS.ffffff" into seconds and microseconds. */
static int set_sec_us(ps_t *ps, const char *p, size_t n)
{
    const char *dot = memchr(p, '.', n);
    int64_t sec, us = 0;

    if (dot == NULL) {
        if (!int_of(p, n, &sec))
            return fail(ps, "invalid number");
    } else {
        size_t il = (size_t)(dot - p), fl = n - il - 1;
        char f[6];
        if (memchr(dot + 1, '.', fl) != NULL || !int_of(p, il, &sec))
            return fail(ps, "invalid number");
        memset(f, '0', sizeof f);
        memcpy(f, dot + 1, fl < 6 ? fl : 6);
        if (!int_of(f, sizeof f, &us))
            return fail(ps, "invalid number");
    }
    ps->r.second = sec, ps->r.has_second = true;
    ps->r.us = us, ps->r.has_us = true;
    return ESS_OK;
}

/* _parse_min_sec: minutes with an optional fraction; clears seconds without one. */
static int set_min_sec(ps_t *ps, const num_t *v)
{
    if (v->ip_sig > DEC_PREC)
        return fail(ps, "invalid number"); /* Decimal's % 1 raises here */
    ps->r.minute = v->ip, ps->r.has_minute = true;
    ps->r.has_second = v->frac_nz;
    if (v->frac_nz)
        ps->r.second = sixty_times_frac(v);
    return ESS_OK;
}

static int find_hms(const ps_t *ps, int idx)
{
    int n = ps->n;
    if (idx + 1 < n && hms_of(ps, idx + 1) >= 0)
        return idx + 1;
    if (idx + 2 < n && teq(ps, idx + 1, ' ') && hms_of(ps, idx + 2) >= 0)
        return idx + 2;
    if (idx > 0 && hms_of(ps, idx - 1) >= 0)
        return idx - 1;
    if (idx > 1 && idx == n - 1 && teq(ps, idx - 1, ' ') && hms_of(ps, idx - 2) >= 0)
        return idx - 2;
    return -1;
}

static int numeric(ps_t *ps, int *pidx, const num_t *v)
{
    res_t *r = &ps->r;
    int n = ps->n, idx = *pidx, rc = ESS_OK, hi, a;
    const char *s = tp(ps, idx);
    size_t len = tl(ps, idx);
    const char *dot = memchr(s, '.', len);

    if (ps->ymd.n == 3 && (len == 2 || len == 4) && !r->has_hour &&
        (idx + 1 >= n || (!teq(ps, idx + 1, ':') && hms_of(ps, idx + 1) < 0))) {
        /* 19990101T23[59] */
        if (!slice_int(s, len, 0, 2, &r->hour))
            return fail(ps, "invalid number");
        r->has_hour = true;
        if (len == 4) {
            if (!slice_int(s, len, 2, -1, &r->minute))
                return fail(ps, "invalid number");
            r->has_minute = true;
        }
    } else if (len == 6 || (len > 6 && dot != NULL && dot - s == 6)) {
        /* YYMMDD or HHMMSS[.ss] */
        if (ps->ymd.n == 0 && dot == NULL) {
            if ((rc = ymd_append_str(ps, s, 2, LBL_NONE)) != ESS_OK ||
                (rc = ymd_append_str(ps, s + 2, 2, LBL_NONE)) != ESS_OK ||
                (rc = ymd_append_str(ps, s + 4, len - 4, LBL_NONE)) != ESS_OK)
                return rc;
        } else {
            if (!slice_int(s, len, 0, 2, &r->hour) || !slice_int(s, len, 2, 4, &r->minute))
                return fail(ps, "invalid number");
            r->has_hour = r->has_minute = true;
            if ((rc = set_sec_us(ps, s + 4, len - 4)) != ESS_OK)
                return rc;
        }
    } else if (len == 8 || len == 12 || len == 14) {
        /* YYYYMMDD[hhmm[ss]] */
        if ((rc = ymd_append_str(ps, s, 4, LBL_Y)) != ESS_OK ||
            (rc = ymd_append_str(ps, s + 4, 2, LBL_NONE)) != ESS_OK ||
            (rc = ymd_append_str(ps, s + 6, 2, LBL_NONE)) != ESS_OK)
            return rc;
        if (len > 8) {
            if (!slice_int(s, len, 8, 10, &r->hour) || !slice_int(s, len, 10, 12, &r->minute))
                return fail(ps, "invalid number");
            r->has_hour = r->has_minute = true;
            if (len > 12) {
                if (!slice_int(s, len, 12, -1, &r->second))
                    return fail(ps, "invalid number");
                r->has_second = true;
            }
        }
    } else if ((hi = find_hms(ps, idx)) >= 0) {
        /* HH[ ]h or MM[ ]m or SS[.ss][ ]s */
        int hms;
        if (hi > idx) {
            hms = hms_of(ps, hi);
            idx = hi;
        } else {
            hms = hms_of(ps, hi) + 1;
        }
        if (hms == 0) {
            if (v->ip_sig > DEC_PREC)
                return fail(ps, "invalid number"); /* Decimal's % 1 raises here */
            r->hour = v->ip, r->has_hour = true;
            if (v->frac_nz)
                r->minute = sixty_times_frac(v), r->has_minute = true;
        } else if (hms == 1) {
            rc = set_min_sec(ps, v);
        } else if (hms == 2) {
            rc = set_sec_us(ps, s, len);
        }
        /* hms == 3: a number after "s" gets no unit and dateutil ignores it. */
    } else if (idx + 2 < n && teq(ps, idx + 1, ':')) {
        /* HH:MM[:SS[.ss]] */
        num_t m;
        r->hour = v->ip, r->has_hour = true;
        if (num_of(tp(ps, idx + 2), tl(ps, idx + 2), &m) != 1)
            return fail(ps, "invalid number");
        if ((rc = set_min_sec(ps, &m)) != ESS_OK)
            return rc;
        if (idx + 4 < n && teq(ps, idx + 3, ':')) {
            if ((rc = set_sec_us(ps, tp(ps, idx + 4), tl(ps, idx + 4))) != ESS_OK)
                return rc;
            idx += 2;
        }
        idx += 2;
    } else if (idx + 1 < n &&
               (teq(ps, idx + 1, '-') || teq(ps, idx + 1, '/') || teq(ps, idx + 1, '.'))) {
        /* 01-01[-01], 01-Jan[-01] */
        char sep = tp(ps, idx + 1)[0];
        if ((rc = ymd_append_str(ps, s, len, LBL_NONE)) != ESS_OK)
            return rc;
        if (idx + 2 < n && !is_jump(ps, idx + 2)) {
            if (all_digits(tp(ps, idx + 2), tl(ps, idx + 2))) {
                rc = ymd_append_str(ps, tp(ps, idx + 2), tl(ps, idx + 2), LBL_NONE);
            } else if ((a = month_of(ps, idx + 2)) > 0) {
                rc = ymd_push(ps, a, LBL_M);
            } else {
                return fail(ps, "unrecognised text");
            }
            if (rc != ESS_OK)
                return rc;
            if (idx + 3 < n && teq(ps, idx + 3, sep)) {
                if (idx + 4 >= n)
                    return fail(ps, "incomplete date or time");
                if ((a = month_of(ps, idx + 4)) > 0)
                    rc = ymd_push(ps, a, LBL_M);
                else
                    rc = ymd_append_str(ps, tp(ps, idx + 4), tl(ps, idx + 4), LBL_NONE);
                if (rc != ESS_OK)
                    return rc;
                idx += 2;
            }
            idx += 1;
        }
        idx += 1;
    } else if (idx + 1 >= n || is_jump(ps, idx + 1)) {
        if (idx + 2 < n && (a = ampm_of(ps, idx + 2)) >= 0) {
            /* 12 am */
            r->hour = adjust_ampm(v->ip, a), r->has_hour = true;
            idx += 1;
        } else if ((rc = ymd_append_num(ps, v)) != ESS_OK) {
            return rc;
        }
        idx += 1;
    } else if ((a = ampm_of(ps, idx + 1)) >= 0 && v->ip < 24) {
        /* 12am */
        r->hour = adjust_ampm(v->ip, a), r->has_hour = true;
        idx += 1;
    } else if (could_be_day(ps, v)) {
        if ((rc = ymd_append_num(ps, v)) != ESS_OK)
            return rc;
    } else {
        return fail(ps, "unrecognised text");
    }
    *pidx = idx;
    return rc;
}

/* A "+0200", "-03:00" or "+2" offset after a time, and an optional "(NAME)". */
static int offset(ps_t *ps, int *pidx)
{
    res_t *r = &ps->r;
    int i = *pidx, n = ps->n;
    const char *p;
    size_t len;

    if (i + 1 >= n)
        return fail(ps, "incomplete time zone offset");
    r->off_sign = tp(ps, i)[0] == '+' ? 1 : -1;
    p = tp(ps, i + 1);
    len = tl(ps, i + 1);
    if (len == 4) {
        if (!slice_int(p, len, 0, 2, &r->off_h) || !slice_int(p, len, 2, -1, &r->off_m))
            return fail(ps, "invalid time zone offset");
    } else if (i + 2 < n && teq(ps, i + 2, ':')) {
        if (i + 3 >= n)
            return fail(ps, "incomplete time zone offset");
        if (!int_of(p, len, &r->off_h) || !int_of(tp(ps, i + 3), tl(ps, i + 3), &r->off_m))
            return fail(ps, "invalid time zone offset");
        i += 2;
    } else if (len <= 2) {
        if (!int_of(p, len, &r->off_h))
            return fail(ps, "invalid time zone offset");
        r->off_m = 0;
    } else {
        return fail(ps, "invalid time zone offset");
    }
    r->has_off = true;
    /* -0300 (BRST): the offset decides, the name is only remembered */
    if (i + 5 < n && is_jump(ps, i + 2) && teq(ps, i + 3, '(') && teq(ps, i + 5, ')') &&
        tl(ps, i + 4) >= 3 && could_be_tzname(ps, i + 4)) {
        r->has_tzname = true, r->tzname = i + 4;
        i += 4;
    }
    *pidx = i + 1;
    return ESS_OK;
}

/* dateutil's _parse loop: every token must be used or be a filler word. */
static int parse_tokens(ps_t *ps)
{
    res_t *r = &ps->r;
    int n = ps->n, rc, k;

    for (int i = 0; i < n; i++) {
        num_t v;
        int kind = num_of(tp(ps, i), tl(ps, i), &v);

        if (kind < 0)
            return fail(ps, "unrecognised text");
        if (kind > 0) {
            if ((rc = numeric(ps, &i, &v)) != ESS_OK)
                return rc;
        } else if ((k = weekday_of(ps, i)) >= 0) {
            r->weekday = k, r->has_weekday = true;
        } else if ((k = month_of(ps, i)) > 0) {
            if ((rc = ymd_push(ps, k, LBL_M)) != ESS_OK)
                return rc;
            if (i + 1 < n && (teq(ps, i + 1, '-') || teq(ps, i + 1, '/'))) {
                /* Jan-01[-99] */
                char sep = tp(ps, i + 1)[0];
                if (i + 2 >= n)
                    return fail(ps, "incomplete date or time");
                if ((rc = ymd_append_str(ps, tp(ps, i + 2), tl(ps, i + 2), LBL_NONE)) != ESS_OK)
                    return rc;
                if (i + 3 < n && teq(ps, i + 3, sep)) {
                    if (i + 4 >= n)
                        return fail(ps, "incomplete date or time");
                    rc = ymd_append_str(ps, tp(ps, i + 4), tl(ps, i + 4), LBL_NONE);
                    if (rc != ESS_OK)
                        return rc;
                    i += 2;
                }
                i += 2;
            } else if (i + 4 < n && teq(ps, i + 1, ' ') && teq(ps, i + 3, ' ') &&
                       ieq(tp(ps, i + 2), tl(ps, i + 2), "of")) {
                /* Jan of 01: the number is a year */
                int64_t y;
                if (int_of(tp(ps, i + 4), tl(ps, i + 4), &y)) {
                    y = convert_year(ps->now_y, y);
                    if (y < 0) /* only when now is before year 50; dateutil asserts */
                        return fail(ps, "year is out of range");
                    if (y >= 100)
                        ps->ymd.century = true;
                    if ((rc = ymd_push(ps, y, LBL_Y)) != ESS_OK)
                        return rc;
                }
                i += 4;
            }
        } else if ((k = ampm_of(ps, i)) >= 0) {
            if (!r->has_hour)
                return fail(ps, "AM/PM without an hour");
            if (r->hour > 12)
                return fail(ps, "hour out of range for AM/PM");
            r->hour = adjust_ampm(r->hour, k);
            r->has_ampm = true;
        } else if (!r->has_off && could_be_tzname(ps, i)) {
            r->has_tzname = true, r->tzname = i;
            /* "z" is dateutil's only name with a known offset here */
            r->has_off = teq(ps, i, 'z');
            r->off_sign = 1, r->off_h = r->off_m = 0;
            if (i + 1 < n && (teq(ps, i + 1, '+') || teq(ps, i + 1, '-'))) {
                /* GMT+3 means "my time +3 is GMT", as in POSIX TZ: flip it */
                ps->buf[ps->tok[i + 1].off] = teq(ps, i + 1, '+') ? '-' : '+';
                r->has_off = false;
                if (is_utczone(tp(ps, i), tl(ps, i)))
                    r->has_tzname = false;
            }
        } else if (r->has_hour && (teq(ps, i, '+') || teq(ps, i, '-'))) {
            if ((rc = offset(ps, &i)) != ESS_OK)
                return rc;
        } else if (!is_jump(ps, i)) {
            return fail(ps, "unrecognised text");
        }
    }
    return ESS_OK;
}

/* ---- assembling the instant --------------------------------------------- */

int ess_datetime_parse(const char *s, size_t len, int64_t now_ms, int64_t *out_ms, const char **err)
{
    ps_t ps;
    res_t *r = &ps.r;
    int64_t now_days, now_y, f[3], y, mo, d, days, off_s, ms;
    int now_m, now_d;
    bool has[3];
    int rc;

    memset(&ps, 0, sizeof ps);
    ps.ymd.yi = ps.ymd.mi = ps.ymd.di = -1;
    if (len == 0) {
        rc = fail(&ps, "empty value");
        goto out;
    }
    if (len > ESS_DATETIME_MAX_LEN) {
        rc = fail(&ps, "value too long");
        goto out;
    }
    for (size_t k = 0; k < len; k++) {
        if (s[k] == '\0') {
            rc = fail(&ps, "contains a NUL byte");
            goto out;
        }
        if ((unsigned char)s[k] >= 0x80) {
            rc = fail(&ps, "contains a non-ASCII character");
            goto out;
        }
    }
    memcpy(ps.buf, s, len);
    lex(&ps, len);

    now_days = now_ms / MS_PER_DAY - (now_ms % MS_PER_DAY < 0);
    ess_datetime_civil_from_days(now_days, &now_y, &now_m, &now_d);
    ps.now_y = now_y;

    if ((rc = parse_tokens(&ps)) != ESS_OK)
        goto out;

    ymd_resolve(&ps.ymd, f, has);
    r->has_year = has[0], r->has_month = has[1], r->has_day = has[2];
    y = now_y;
    if (r->has_year)
        y = ps.ymd.century ? f[0] : convert_year(now_y, f[0]);

    /* validate(): Z and a zero offset are UTC; UTC/GMT names win over offsets */
    if ((r->has_off && r->off_h == 0 && r->off_m == 0 && !r->has_tzname) ||
        (r->has_tzname && (teq(&ps, r->tzname, 'Z') || teq(&ps, r->tzname, 'z')))) {
        r->tzname_utc = true;
        r->has_off = true, r->off_h = r->off_m = 0;
    } else if ((!r->has_off || r->off_h != 0 || r->off_m != 0) && r->has_tzname &&
               is_utczone(tp(&ps, r->tzname), tl(&ps, r->tzname))) {
        r->has_off = true, r->off_h = r->off_m = 0;
    }

    if (!(r->has_year || r->has_month || r->has_day || r->has_weekday || r->has_hour ||
          r->has_minute || r->has_second || r->has_us || r->has_tzname || r->has_off ||
          r->has_ampm)) {
        rc = fail(&ps, "no date or time found");
        goto out;
    }

    /* Omitted fields: coarser ones from now, finer ones from the start. */
    mo = r->has_month ? f[1] : r->has_year ? 1 : now_m;
    d = r->has_day ? f[2] : (r->has_year || r->has_month) ? 1 : now_d;
    if (y < 1 || y > 9999) {
        rc = fail(&ps, "year is out of range");
        goto out;
    }
    if (mo < 1 || mo > 12) {
        rc = fail(&ps, "month must be in 1..12");
        goto out;
    }
    if (d < 1 || d > month_days(y, mo)) {
        rc = fail(&ps, "day is out of range for month");
        goto out;
    }
    if (r->has_hour && r->hour > 23) {
        rc = fail(&ps, "hour must be in 0..23");
        goto out;
    }
    if (r->has_minute && r->minute > 59) {
        rc = fail(&ps, "minute must be in 0..59");
        goto out;
    }
    if (r->has_second && r->second > 59) {
        rc = fail(&ps, "second must be in 0..59");
        goto out;
    }
    if (r->has_tzname && !r->has_off) {
        rc = fail(&ps, "unknown time zone name");
        goto out;
    }
    if (r->has_off && (r->off_h > 23 || r->off_m > 59)) {
        rc = fail(&ps, "time zone offset out of range");
        goto out;
    }

    days = ess_datetime_days_from_civil(y, (int)mo, (int)d);
    if (r->has_weekday && !r->has_day) {
        /* the next such weekday on or after the date; 1970-01-01 was a Thursday */
        int64_t wd = ((days % 7) + 7 + 3) % 7;
        days += (r->weekday - wd + 7) % 7;
    }
    off_s = r->has_off ? r->off_sign * (r->off_h * 3600 + r->off_m * 60) : 0;
    ms = days * MS_PER_DAY + (r->has_hour ? r->hour : 0) * 3600000 +
         (r->has_minute ? r->minute : 0) * 60000 + (r->has_second ? r->second : 0) * 1000 +
         (r->has_us ? r->us : 0) / 1000 - off_s * 1000;
    if (ms < MIN_DAYS * MS_PER_DAY || ms >= (MAX_DAYS + 1) * MS_PER_DAY) {
        rc = fail(&ps, "date out of range");
        goto out;
    }
    *out_ms = ms;
    rc = ESS_OK;
out:
    if (rc != ESS_OK && err != NULL)
        *err = ps.err;
    return rc;
}
