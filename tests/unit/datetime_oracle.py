#!/usr/bin/python3
"""Expected values for tests/unit/test_datetime.c, from the real python-dateutil.

core/util/datetime.c ports python-dateutil's parser.parse; this script asks
dateutil itself what each test string means, so the C table is never typed by
hand. It needs Debian's python3-dateutil (apt-get install -y python3-dateutil)
and /usr/bin/python3; the C test does not need Python at all.

    /usr/bin/python3 tests/unit/datetime_oracle.py            # print the table
    /usr/bin/python3 tests/unit/datetime_oracle.py --update   # rewrite it in test_datetime.c

"Now" is 2025-01-01T00:00:00Z on both sides: dateutil gets it as its default
datetime (with UTC as the zone for strings that name none) and its two-digit
year pivot is pinned to 2025; the C test passes it as now_ms. With that now,
our rules for omitted fields (docs/datetime.md) give exactly dateutil's answers.
"""
import os
import re
import sys
import warnings
from datetime import datetime, timezone

from dateutil import parser, tz

NOW = datetime(2025, 1, 1, tzinfo=tz.UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Strings dateutil accepts; the C parser must give the same instant.
ACCEPT = [
    # ISO 8601 extended
    "2025-04-30T13:33:00Z",
    "2025-04-30T13:33:00.123Z",
    "2025-04-30T13:33:00.123456789Z",
    "2025-04-30T13:33:00,5Z",
    "2025-04-30T13:33:00.9999",
    "2025-04-30T13:33",
    "2025-04-30 13:33:07",
    "2025-04-30t13:33z",
    "2025-04-30T13:33+02:00",
    "2025-04-30T13:33:00+0200",
    "2025-04-30T13:33:00+02",
    "2025-04-30T13:33:00-05:30",
    "2025-04-30T13:33:00.250-0930",
    "2025-04-30T00:00:00+14:00",
    "2025-04-30",
    "2025-04",
    # ISO 8601 basic
    "20250430T133300Z",
    "20250430T133300.5Z",
    "20250430T133300,123+0200",
    "20250430T1333",
    "20250430T13",
    "20250430 133300",
    "20250430",
    "20250430133300",
    "202504301333",
    # RFC 2822 and friends
    "Wed, 30 Apr 2025 13:33:00 GMT",
    "Wed, 30 Apr 2025 13:33:00 +0000",
    "Wed, 30 Apr 2025 13:33:00 -0700",
    "wed, 30 apr 2025 13:33:00 UTC",
    "Wednesday, 30 April 2025 13:33:00 Z",
    "30 Apr 2025 13:33",
    "30 Apr 2025",
    "30-Apr-2025",
    "Apr-30-2025",
    "30 april 2025 1:33 pm",
    "April 30, 2025 1:33 PM",
    "April 30, 2025 1:33:45 p.m.",
    "April 30 2025 12:05 AM",
    "April 30th, 2025",
    "Apr 30 2025",
    "APR 30 2025 13:33:00",
    "Sept 3 2025",
    "September 3, 2025 at 9am",
    "Sep.20.2009",
    "Thu Apr 30 13:33:00 2025",
    # numeric dates
    "2025/04/30",
    "2025/4/3",
    "30.04.2025 13:33",
    "30.04.2025",
    "06/05/2025",
    "13/05/2025",
    "05/13/2025",
    "6/5/25",
    "25-04-30",
    "30/04/25",
    "250430",
    "1.2.2025",
    # partial: filled from "now" (2025-01-01)
    "13:33",
    "13:33:59.5",
    "1:33 PM",
    "12 am",
    "12pm",
    "Apr 30",
    "Apr 2025",
    "April",
    "2025",
    "30",
    "Jan of 25",
    "Wed",
    "Friday",
    "Fri 13:00",
    "12h30m15s",
    "1.5h",
    "10 minutes",
    # zones
    "2025-04-30 13:33 UTC",
    "2025-04-30 13:33 GMT",
    "2025-04-30 13:33:00 -0300 (BRST)",
    "2025-04-30 13:33 UTC+3",
    "2025-04-30 13:33 GMT-02:00",
    "2025-04-30 13:33 UTC +0200",
    # extremes
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "1970-01-01",
    "1969-12-31T23:59:59.999",
    "2024-02-29",
    "2000-02-29T12:00",
    "  2025-04-30  ",
]

# Strings dateutil rejects; the C parser must reject them too.
REJECT = [
    "2025-04-31",
    "2025-02-29",
    "1900-02-29",
    "25:61",
    "24:00",
    "13:60",
    "13:33:60",
    "2025-13-45",
    "2025-00-10",
    "0000-01-01",
    "10000-01-01",
    "not a date",
    "   ",
    "2025-04-30 garbage",
    "2025-04-30T13:33:00Zx",
    "2025-04-30T13:33 EST",
    "13:33 +99",
    "13:33 +123",
    "2025-04-30T13:33:",
    "2025-04-",
    "13 pm pm",
    "pm",
    "1 2 3 4",
    "April 2025 May",
    "2025-04-30 inf",
    "2025-04-30 nan",
    "1:33.99999999999999999999999999999",
    "13:33 utc",
    "32/13/2025",
    "30/30/2025",
    "Z",
    "T",
    ",",
]

# Where we deliberately differ from dateutil (docs/datetime.md): C rejects.
DIFFER = [
    "13:33 +0299",
    "2025-04-30T13:33:00+05:75",
    "2025-04-30\x0013:33",
    "2025-04-30\x00",
    "2025-04-30\u00a013:33",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2025-04-30T13:33:00" + " " * 240,
]


class _PinnedInfo(parser.parserinfo):
    """Default parserinfo with the two-digit-year pivot pinned to 2025."""

    def __init__(self):
        super().__init__()
        self._year = 2025
        self._century = 2000


_PARSER = parser.parser(_PinnedInfo())


def oracle(s):
    """Epoch ms UTC as dateutil reads s (naive means UTC), or None if it rejects."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dt = _PARSER.parse(s, default=NOW)
        if any("tzname" in str(w.message) for w in caught):
            return None  # dateutil would fall back to naive; that is not an acceptance
        d = dt - EPOCH
        return d.days * 86400000 + d.seconds * 1000 + d.microseconds // 1000
    except Exception:  # ParserError, ValueError, OverflowError alike
        return None


def c_string(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            for b in ch.encode("utf-8"):
                out.append('\\x%02x""' % b)
    return '"' + "".join(out) + '"'


def table():
    lines = ["/* BEGIN ORACLE TABLE (tests/unit/datetime_oracle.py --update) */"]
    lines.append("static const accept_t ACCEPT[] = {")
    for s in ACCEPT:
        ms = oracle(s)
        if ms is None:
            sys.exit("dateutil rejects accepted case %r" % s)
        lines.append("    A(%s, INT64_C(%d))," % (c_string(s), ms))
    lines.append("};")
    lines.append("static const reject_t REJECT[] = {")
    for s in REJECT:
        if oracle(s) is not None:
            sys.exit("dateutil accepts rejected case %r" % s)
        lines.append("    R(%s)," % c_string(s))
    lines.append("};")
    lines.append("/* dateutil's answer, which we deliberately reject (docs/datetime.md) */")
    lines.append("static const reject_t DIFFER[] = {")
    for s in DIFFER:
        ms = oracle(s)
        note = "rejects too" if ms is None else "accepts: %d" % ms
        if len(s) > 40:
            lines.append("    /* dateutil %s */ R(%s)," % (note, c_string(s)))
        else:
            lines.append("    R(%s), /* dateutil %s */" % (c_string(s), note))
    lines.append("};")
    lines.append("/* END ORACLE TABLE */")
    return "\n".join(lines) + "\n"


def main():
    text = table()
    if "--update" not in sys.argv:
        sys.stdout.write(text)
        return
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_datetime.c")
    with open(path) as f:
        src = f.read()
    pat = re.compile(r"/\* BEGIN ORACLE TABLE.*?/\* END ORACLE TABLE \*/\n", re.S)
    if not pat.search(src):
        sys.exit("no ORACLE TABLE markers in " + path)
    with open(path, "w") as f:
        f.write(pat.sub(lambda m: text, src, count=1))


if __name__ == "__main__":
    main()
