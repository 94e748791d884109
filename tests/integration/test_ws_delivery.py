"""Delivery over the public WebSocket, end to end against the real broker.

One stream (it4-dlv-<random>) is filled in four phases, each at least 1.1 s
after the previous one so that their chunk timestamps differ:
  A. 10,000 JSON messages through the event-streams exchange (ess-publish --declare)
  B. 10,000 text messages through the exchange (ess-publish --format text)
  C. 10,000 JSON messages written directly (ess-cat --publish), in varied
     formatting: whitespace, escapes, non-ASCII, odd numbers, nesting, {}
  D. 10,000 text messages directly (ess-cat --publish), then one binary
     (non-UTF-8) body.
What the stream holds is read back with ess-cat; the client then checks:
- from ordinal 0: all 40,001 arrive once, in order; JSON gains ess_offset and
  ess_timestamp as its last members and is otherwise byte-identical to the
  stored body; text gains "|offset: N|timestamp: T"; the binary body arrives
  as a binary frame, unchanged;
- from ordinal 12,345 exactly (header and query forms);
- from a timestamp (phase C's first timestamp) and from a date/time (ISO with
  milliseconds as a query parameter, RFC 2822 as a header): the first frame
  is the first message at or after it;
- from nothing: only messages published after the connection;
- an ordinal past the end waits for that message and starts exactly there.
"""
import json
import os
import socket
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from email.utils import format_datetime

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (CAT, Checker, Essd, StreamAdmin, cat_publish, cat_read, create_es,  # noqa: E402
                    delete_stream, publish, tool, unique, ws_open, sanitizer_report, wait_broker, wait_ready)

t = Checker()
PHASE = 10000
BINARY = b"\xff\xfe\x00\x01 not utf-8 \xc3\x28"


def json_lines(n):
    """Varied JSON objects, one per line, none re-encodable to the same bytes by accident."""
    forms = [
        '{"i":%d}',
        '{ "i" : %d , "s" : "caf\\u00e9 \\"q\\" \\\\ /" }',
        '{"i":%d,"f":1.50,"e":1E+3,"neg":-0.0,"big":12345678901234567890}',
        '{"i":%d,"nested":{"a":[1,2,{"b":null}]},"t":true,"u":"\u00e9\u20ac\U0001F600"}',
        '{"i":%d, "ws_before_close":1   }',
        '\t{"i":%d,"tab":"\\t"}',
    ]
    out = []
    for k in range(n):
        f = forms[k % len(forms)]
        out.append(f % k)
    out[-1] = "{}"  # an empty object gains members without a leading comma
    return out


def expected_frame(body, offset, ts):
    """What the default enrichment makes of a stored (text) body."""
    s = body
    first = s.lstrip(" \t\r\n")
    if first.startswith("{"):
        try:
            obj = json.loads(s)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            last = len(s.rstrip(" \t\r\n"))
            inner = s[:last - 1]
            sep = "" if inner.rstrip(" \t\r\n").endswith("{") else ","
            return "%s%s\"ess_offset\":%d,\"ess_timestamp\":%d%s" % (inner, sep, offset, ts, s[last - 1:])
        return s
    return "%s|offset: %d|timestamp: %d" % (s, offset, ts)


def frame_offset(payload):
    """ess_offset of a JSON frame, N of a text frame's suffix, or None."""
    try:
        return json.loads(payload)["ess_offset"]
    except (ValueError, KeyError, TypeError):
        pass
    i = payload.rfind(b"|offset: ")
    if i >= 0:
        try:
            return int(payload[i + 9:].split(b"|", 1)[0])
        except ValueError:
            return None
    return None


def recv_n(ws, n, timeout=20):
    frames = []
    try:
        for _ in range(n):
            f = ws.recv(timeout=timeout)
            if f[0] == "close":
                t.check(False, "unexpected close %r after %d frames" % (f, len(frames)))
                break
            frames.append(f)
    except (socket.timeout, OSError, ConnectionError) as x:
        t.check(False, "receiving %d frames: %s after %d" % (n, x, len(frames)))
    return frames


def fill(stream):
    publish(stream, PHASE, fmt="json", declare=True)
    time.sleep(1.1)
    publish(stream, PHASE, fmt="text")
    time.sleep(1.1)
    cat_publish(stream, json_lines(PHASE))
    time.sleep(1.1)
    cat_publish(stream, ["direct text %d: caf\u00e9 \u20ac" % k for k in range(PHASE)] + [BINARY])


def replay_all(e, path, stored, total):
    ws = ws_open(e, path + "?stream_from_ordinal=0", timeout=30)
    frames = recv_n(ws, total)
    t.eq(len(frames), total, "replay from 0: frame count")
    wrong_order, wrong_body, wrong_kind = [], [], []
    for i, (op, payload) in enumerate(frames):
        if frame_offset(payload) != i and i < total - 1:
            wrong_order.append(i)
        if i == total - 1:
            t.eq(op, 2, "binary body arrives as a binary frame")
            t.eq(payload, BINARY, "binary body arrives unchanged")
            continue
        m = stored[i]
        if op != 1:
            wrong_kind.append(i)
        want = expected_frame(m["body"], m["offset"], m["timestamp"]).encode("utf-8")
        if payload != want:
            wrong_body.append((i, payload[:200], want[:200]))
    t.eq(wrong_order[:5], [], "replay from 0: every frame at its own offset, in order, once")
    t.eq(wrong_kind[:5], [], "replay from 0: UTF-8 bodies arrive as text frames")
    t.eq(wrong_body[:3], [], "replay from 0: enriched bodies byte-identical to stored + members")
    # The JSON ones really end with the two members, in that order.
    ok = 0
    for i in (0, 1, 2, 3, 20000, 20001, 20002, 20003, 20004, 20005, 29999):
        obj = json.loads(frames[i][1])
        keys = list(obj.keys())
        ok += keys[-2:] == ["ess_offset", "ess_timestamp"] and obj["ess_offset"] == i \
            and obj["ess_timestamp"] == stored[i]["timestamp"]
    t.eq(ok, 11, "JSON frames end with ess_offset, ess_timestamp (sampled through the exchange and direct)")
    jsons = sum(1 for i in list(range(0, 10000)) + list(range(20000, 30000)) if frames[i][1].startswith((b"{", b"\t{")))
    texts = sum(1 for i in list(range(10000, 20000)) + list(range(30000, 40000))
                if b"|offset: %d|timestamp: " % i in frames[i][1])
    t.eq((jsons, texts), (20000, 20000), "20,000 JSON and 20,000 text frames")
    # Nothing more: the next thing is silence (no duplicate of the last message).
    try:
        extra = ws.recv(timeout=1)
    except socket.timeout:
        extra = None
    t.eq(extra, None, "no frame after the last message")
    ws.close()


def from_ordinal(e, path, stored):
    for how in ("query", "header"):
        if how == "query":
            ws = ws_open(e, path + "?stream_from_ordinal=12345")
        else:
            ws = ws_open(e, path, headers={"X-StreamOffsetFromOrdinal": "12345"})
        frames = recv_n(ws, 100)
        offs = [frame_offset(p) for _, p in frames]
        t.eq(offs[:1], [12345], "from ordinal 12345 (%s): first frame" % how)
        t.eq(offs, list(range(12345, 12445)), "from ordinal 12345 (%s): contiguous" % how)
        ws.close()


def first_at_or_after(stored, ms):
    for m in stored:
        if m["timestamp"] >= ms:
            return m["offset"]
    return None


def from_time(e, path, stored):
    ts_c = stored[20000]["timestamp"]  # phase C's first message
    t.check(stored[19999]["timestamp"] < ts_c, "phases have distinct timestamps")
    cases = []
    cases.append(("timestamp query", "?stream_from_timestamp=%d" % ts_c, None, ts_c))
    cases.append(("timestamp header", "", {"X-StreamOffsetFromTimestamp": str(ts_c)}, ts_c))
    dt = datetime.fromtimestamp(ts_c / 1000, timezone.utc)
    iso = dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ts_c % 1000)
    cases.append(("datetime query ISO", "?stream_from_datetime=" + urllib.parse.quote(iso, safe=""), None, ts_c))
    ts_d = stored[30000]["timestamp"]
    dt_d = datetime.fromtimestamp(ts_d // 1000, timezone.utc)
    rfc = format_datetime(dt_d, usegmt=True)  # whole seconds
    cases.append(("datetime header RFC 2822", "", {"X-StreamOffsetFromDatetime": rfc}, ts_d // 1000 * 1000))
    iso_plus = (dt_d.replace(tzinfo=None)).strftime("%Y-%m-%dT%H:%M:%S")
    # the same instant written at +02:00
    h = (dt_d.hour + 2) % 24
    if dt_d.hour + 2 < 24:
        iso_plus = dt_d.strftime("%Y-%m-%dT") + "%02d" % h + dt_d.strftime(":%M:%S") + "+02:00"
        cases.append(("datetime query +02:00", "?stream_from_datetime=" + urllib.parse.quote(iso_plus, safe=""),
                      None, ts_d // 1000 * 1000))
    for what, query, headers, ms in cases:
        want = first_at_or_after(stored, ms)
        ws = ws_open(e, path + query, headers=headers)
        frames = recv_n(ws, 3)
        offs = [frame_offset(p) for _, p in frames]
        t.eq(offs[:1], [want], "from %s (%d ms): first message at or after it" % (what, ms))
        ws.close()


def from_nothing(e, adm, stream, end):
    """No selector: only messages published after the connection."""
    es_id, path = create_es(e, stream)
    ws = ws_open(e, path)
    # The subscription is set up asynchronously: publish probes until one
    # arrives (bounded), then five known messages.
    first = None
    for k in range(20):
        tool(CAT, "--publish", stream, stdin=b"probe %d\n" % k)
        try:
            f = ws.recv(timeout=1)
            first = f
            break
        except socket.timeout:
            continue
    t.check(first is not None and first[0] == 1, "from nothing: a message published after connecting arrives")
    if first is None:
        ws.close()
        return 20
    off0 = frame_offset(first[1])
    t.check(off0 is not None and off0 >= end, "from nothing: the first frame (offset %s) is new, not history (< %d)"
            % (off0, end))
    t.check(first[1].startswith(b"probe "), "from nothing: first frame is a probe")
    # Any probes published while waiting follow; then the five known ones.
    cat_publish(stream, ["new %d" % k for k in range(5)])
    seen = []
    for _ in range(40):
        try:
            f = ws.recv(timeout=5)
        except socket.timeout:
            break
        seen.append(f[1])
        if f[1].startswith(b"new 4|"):
            break
    news = [p.split(b"|")[0] for p in seen if p.startswith(b"new ")]
    t.eq(news, [b"new %d" % k for k in range(5)], "from nothing: the five new messages, in order")
    offs = [frame_offset(first[1])] + [frame_offset(p) for p in seen]
    t.eq(offs, list(range(off0, off0 + len(offs))), "from nothing: contiguous offsets")
    ws.close()
    return k + 1 + 5


def main():
    t.check(wait_broker(), "the shared broker is up")
    stream = unique("it4-dlv")
    adm = StreamAdmin()
    try:
        fill(stream)
        total = 4 * PHASE + 1
        stored = cat_read(stream, total - 1)  # the binary last one is not JSON-representable
        t.eq(len(stored), total - 1, "ess-cat reads back the stream")
        t.eq([m["offset"] for m in stored[:3]], [0, 1, 2], "stream starts at offset 0")
        with Essd() as e:
            t.check(wait_ready(e), "essd ready (broker reachable)")
            es_id, path = create_es(e, stream)
            replay_all(e, path, stored, total)
            from_ordinal(e, path, stored)
            from_time(e, path, stored)
            # Distinct event streams on the same broker stream for the rest,
            # so the one-connection rule does not interfere.
            _, past_end_path = create_es(e, stream)
            end = total + from_nothing(e, adm, stream, total)
            ws = ws_open(e, past_end_path + "?stream_from_ordinal=%d" % (end + 5))
            try:
                early = ws.recv(timeout=1)
            except socket.timeout:
                early = None
            t.eq(early, None, "past the end: nothing arrives before the message exists")
            cat_publish(stream, ["later %d" % k for k in range(10)])
            frames = recv_n(ws, 5)
            offs = [frame_offset(p) for _, p in frames]
            t.eq(offs, list(range(end + 5, end + 10)), "past the end: starts exactly at the asked ordinal")
            t.check(bool(frames) and frames[0][1].startswith(b"later 5|"), "past the end: the right message")
            ws.close()
        t.eq(e.proc.returncode, 0, "essd exits 0 on SIGTERM")
        t.eq(sanitizer_report(e), "", "no sanitizer report from essd")
    finally:
        delete_stream(stream)
        adm.close()
    t.done()


if __name__ == "__main__":
    main()
