/*
 * Date/time selector parsing (stream_from_datetime) and the civil-calendar
 * arithmetic behind it. Pure functions: no allocation, no static mutable
 * state, no locale or TZ lookups, safe from any thread. The accepted forms
 * and every deliberate difference from python-dateutil are in
 * docs/datetime.md.
 */
#ifndef ESS_UTIL_DATETIME_H
#define ESS_UTIL_DATETIME_H

#include <stddef.h>
#include <stdint.h>

/* Longest selector accepted, in bytes; longer input is rejected. */
#define ESS_DATETIME_MAX_LEN 256

/**
 * Parse the date/time selector s[0..len) (not necessarily NUL-terminated)
 * the way python-dateutil's parser.parse does, into epoch milliseconds UTC.
 *
 * now_ms (epoch ms, normally the current time) supplies what the string
 * omits: a time alone is on now's UTC date; a date alone is at 00:00 UTC;
 * a year without a month means January, a month without a day means the
 * 1st; a month and day without a year take now's year; a two-digit year is
 * put within 50 years of now's year. Without a zone the time is UTC.
 *
 * Returns ESS_OK and sets *out_ms, or ESS_EINVAL and sets *err (when err is
 * not NULL) to a short static English reason such as "day is out of range
 * for month"; *out_ms is left alone on failure. s may be NULL only when
 * len is 0. Fractions of a second are truncated to whole milliseconds. A
 * result that would fall outside 0001-01-01 .. 9999-12-31 UTC is rejected.
 */
int ess_datetime_parse(const char *s, size_t len, int64_t now_ms, int64_t *out_ms,
                       const char **err);

/**
 * Days since 1970-01-01 of the proleptic Gregorian date y-m-d (Howard
 * Hinnant's days_from_civil). m must be 1..12 and d 1..31; any y that keeps
 * the result within int64 works.
 */
int64_t ess_datetime_days_from_civil(int64_t y, int m, int d);

/** The proleptic Gregorian date of a day count since 1970-01-01 (the inverse). */
void ess_datetime_civil_from_days(int64_t days, int64_t *y, int *m, int *d);

#endif
