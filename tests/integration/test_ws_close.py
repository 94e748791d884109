"""Every row of SPEC.md's close-code table against the real essd and broker.

- two or more start selectors (header+header, query+query, header+query): 1002
  "only one ...";
- each of the six selectors with an invalid value (negative, non-numeric,
  overflowing, empty; for the date/time ones unparsable dates): the upgrade
  succeeds (101, never 403) and the close is 1002 (never 1006: a close frame
  arrives) with a reason naming the selector;
- unknown uuid (well-formed and malformed): 1000 "the event stream is unknown";
- DELETE of the event stream: the live client is closed with 1000 "The stream
  has been deleted" at once (no further action needed for the close to come);
- POISON: 1000 after exactly the messages before it;
- a second client replaces the first at once (1000 "replaced by a newer
  connection") and keeps receiving;
- ess-listen: prints messages and the close, exit 0; exit 2 on bad arguments
  and on a refused connection;
- the stream missing in the broker: 1013 "the event stream cannot be found"
  (last, in its own essd, so a crash there does not hide the other rows).

Streams are named it4-close-<random> and deleted at the end.
"""
import json
import os
import socket
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (LISTEN, Checker, Essd, StreamAdmin, cat_read, create_es, delete_stream,  # noqa: E402
                    recv_close, unique, ws_open, sanitizer_report, wait_broker, wait_ready)

t = Checker()
SELECTORS = [("X-StreamOffsetFromOrdinal", "header"), ("X-StreamOffsetFromTimestamp", "header"),
             ("X-StreamOffsetFromDatetime", "header"), ("stream_from_ordinal", "query"),
             ("stream_from_timestamp", "query"), ("stream_from_datetime", "query")]


def connect(e, path, sel=None):
    """Open a WebSocket with sel = [(name, where, value)]; return ws or the handshake error."""
    headers, query = {}, []
    for name, where, value in sel or []:
        if where == "header":
            headers[name] = value
        else:
            query.append("%s=%s" % (name, urllib.parse.quote(value, safe="")))
    if query:
        path += "?" + "&".join(query)
    return ws_open(e, path, headers=headers)


def expect_close(e, path, sel, code, reason_has, what):
    try:
        ws = connect(e, path, sel)
    except ConnectionError as x:
        t.check(False, "%s: handshake refused (%s)" % (what, x))
        return
    t.eq(ws.status, 101, what + ": upgrade status")
    frames, close = recv_close(ws, limit=10, timeout=10)
    t.eq(frames, [], what + ": no data frames")
    t.check(close is not None, what + ": a close frame arrives (not 1006)")
    if close:
        t.eq(close[0], code, what + ": close code (reason %r)" % close[1])
        for part in reason_has:
            t.check(part in close[1], "%s: reason %r contains %r" % (what, close[1], part))
    ws.sock.close()


def selector_rows(e, path):
    # Two or more selectors, in every combination of where they come from.
    combos = [
        [("X-StreamOffsetFromOrdinal", "header", "1"), ("X-StreamOffsetFromTimestamp", "header", "1")],
        [("stream_from_ordinal", "query", "1"), ("stream_from_datetime", "query", "2025-04-30")],
        [("X-StreamOffsetFromDatetime", "header", "2025-04-30"), ("stream_from_ordinal", "query", "0")],
        [(n, w, "1" if "Datetime" not in n and "datetime" not in n else "2025-04-30") for n, w in SELECTORS],
    ]
    for i, sel in enumerate(combos):
        expect_close(e, path, sel, 1002, ["only one"], "two selectors #%d" % i)

    bad_numbers = [("-1", "negative"), ("abc", "not an integer"), ("12x", "not an integer"),
                   ("1.5", "not an integer"), ("99999999999999999999", "too large"),
                   ("9223372036854775808", "too large"), ("", "empty")]
    bad_dates = [("not a date", None), ("2025-04-31", None), ("25:61", None), ("2025-13-45", None),
                 ("", None)]
    for name, where in SELECTORS:
        values = bad_dates if "atetime" in name else bad_numbers
        for value, why in values:
            what = "%s %s=%r" % (where, name, value)
            expect_close(e, path, [(name, where, value)], 1002, [name] + ([why] if why else []), what)

    # Unknown uuids: well-formed and not.
    for p in ["/event-stream/AAAAAAAAAAAAAAAAAAAAAA", "/event-stream/nope", "/event-stream/",
              "/event-stream/" + "A" * 200]:
        expect_close(e, p, None, 1000, ["the event stream is unknown"], "unknown uuid %s" % p[:40])
    # A bad selector on an unknown uuid still names the selector (validated first).
    expect_close(e, "/event-stream/AAAAAAAAAAAAAAAAAAAAAA", [("stream_from_ordinal", "query", "x")],
                 1002, ["stream_from_ordinal"], "bad selector on unknown uuid")


def delete_row(e, adm, stream):
    es_id, path = create_es(e, stream)
    ws = connect(e, path, [("stream_from_ordinal", "query", "0")])
    f = ws.recv(timeout=10)
    t.eq(f[0], 1, "delete: the live client first receives the stream's message")
    st, _, _ = e.request("DELETE", "/event-stream/%d" % es_id)
    t.eq(st, 204, "delete: 204")
    frames, close = recv_close(ws, limit=10, timeout=10)
    t.eq(close, (1000, "The stream has been deleted"), "delete: close code and reason")
    t.eq(frames, [], "delete: nothing after the message")
    ws.sock.close()
    # The deleted event stream is unknown to new clients.
    expect_close(e, path, None, 1000, ["unknown"], "connect after delete")


def poison_row(e, adm, stream):
    bodies = [b'{"n":%d}' % i for i in range(5)] + [b"POISON"] + [b"after %d" % i for i in range(3)]
    t.eq(adm.publish(stream, bodies), 1, "poison: published")
    es_id, path = create_es(e, stream)
    ws = connect(e, path, [("X-StreamOffsetFromOrdinal", "header", "0")])
    frames, close = recv_close(ws, limit=20, timeout=10)
    offs = []
    for f in frames:
        try:
            offs.append(json.loads(f[1])["ess_offset"])
        except (ValueError, KeyError):
            offs.append(None)
    t.eq(offs, [0, 1, 2, 3, 4], "poison: exactly the five messages before POISON, in order")
    t.eq(close, (1000, "The stream has been deleted"), "poison: close code and reason")
    ws.sock.close()


def replace_row(e, adm, stream):
    t.eq(adm.publish(stream, [b"one", b"two"]), 1, "replace: published")
    es_id, path = create_es(e, stream)
    ws1 = connect(e, path, [("stream_from_ordinal", "query", "0")])
    t.eq(ws1.recv(timeout=10)[1], b"one|offset: 0|timestamp: " + ws1_ts(adm, stream, 0),
         "replace: first client receives")
    ws2 = connect(e, path, [("stream_from_ordinal", "query", "1")])
    frames, close = recv_close(ws1, limit=10, timeout=10)
    t.eq(close, (1000, "replaced by a newer connection"), "replace: first client closed")
    f = ws2.recv(timeout=10)
    t.check(f[0] == 1 and f[1].startswith(b"two|offset: 1|"), "replace: second client receives %r" % (f,))
    t.eq(adm.publish(stream, [b"three"]), 1, "replace: published more")
    f = ws2.recv(timeout=10)
    t.check(f[0] == 1 and f[1].startswith(b"three|offset: 2|"), "replace: second client stays live")
    # And a third replaces the second.
    ws3 = connect(e, path, [("stream_from_ordinal", "query", "2")])
    frames, close = recv_close(ws2, limit=10, timeout=10)
    t.eq(close, (1000, "replaced by a newer connection"), "replace: second client closed by third")
    t.check(ws3.recv(timeout=10)[1].startswith(b"three|offset: 2|"), "replace: third receives")
    for w in (ws1, ws2, ws3):
        w.close()


def ws1_ts(adm, stream, offset):
    return str(cat_read(stream, offset + 1)[offset]["timestamp"]).encode()


def listen_rows(e, adm, stream):
    if not os.access(LISTEN, os.X_OK):
        t.check(False, "ess-listen is built at " + LISTEN)
        return
    bodies = [b'{"k":"v"}', b"plain text", b"\xff\xfe\x00bin"]
    t.eq(adm.publish(stream, bodies), 1, "listen: published")
    es_id, path = create_es(e, stream)
    loc = "ws://127.0.0.1:%d%s" % (e.public_port, path)
    for args, how in ([["-o", "0"], "query"], [["-o", "0", "--header"], "header"]):
        r = subprocess.run([LISTEN, loc, *args, "--count", "3"], capture_output=True, timeout=30)
        out = r.stdout.decode("utf-8", "replace")
        t.eq(r.returncode, 0, "listen (%s): exit 0 at --count (%s)" % (how, r.stderr[-300:]))
        lines = [x for x in out.splitlines() if x.startswith("offset=")]
        t.eq(len(lines), 3, "listen (%s): three message lines in %r" % (how, out[:500]))
        if len(lines) == 3:
            t.check(lines[0].startswith("offset=0 ") and " type=text " in lines[0]
                    and '"ess_offset":0' in lines[0], "listen: JSON line %r" % lines[0])
            t.check(lines[1].startswith("offset=1 ") and "plain text|offset: 1|" in lines[1],
                    "listen: text line %r" % lines[1])
            t.check(" type=binary " in lines[2] and "bytes=6" in lines[2], "listen: binary line %r" % lines[2])
            t.check("timestamp=" in lines[0] and "timestamp=-" not in lines[0], "listen: timestamp shown")
        t.check("messages=3" in out and "msgs/s" in out, "listen (%s): statistics line" % how)
    # From ordinal 1 with a count: the first line is offset 1.
    r = subprocess.run([LISTEN, loc, "-o", "1", "--count", "1"], capture_output=True, timeout=30)
    t.check(r.stdout.decode("utf-8", "replace").startswith("offset=1 "), "listen -o 1 starts at 1")
    # The close code and reason are printed; a normal close is exit 0.
    r = subprocess.run([LISTEN, "ws://127.0.0.1:%d/event-stream/AAAAAAAAAAAAAAAAAAAAAA" % e.public_port],
                       capture_output=True, timeout=30)
    out = r.stdout.decode() + r.stderr.decode()
    t.check("1000" in out and "the event stream is unknown" in out, "listen prints the close: %r" % out)
    t.eq(r.returncode, 0, "listen: exit 0 on a normal close")
    r = subprocess.run([LISTEN, loc + "?stream_from_ordinal=-5"], capture_output=True, timeout=30)
    out = r.stdout.decode() + r.stderr.decode()
    t.check("code=1002" in out and "must not be negative" in out, "listen prints 1002 and its reason: %r" % out)
    t.eq(r.returncode, 1, "listen: exit 1 on a close other than 1000")
    # Bad arguments and a refused connection: exit 2.
    for args in ([], [loc, "-o"], [loc, "-o", "1", "-t", "2"], [loc, "--bogus"], ["http://x/y"],
                 [loc, "--count", "x"], [loc, "-o", "-5"], [loc, "-t", "abc"], [loc, loc]):
        r = subprocess.run([LISTEN, *args], capture_output=True, timeout=30)
        t.eq(r.returncode, 2, "listen %r: exit 2" % (args,))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    r = subprocess.run([LISTEN, "ws://127.0.0.1:%d/event-stream/x" % dead], capture_output=True, timeout=30)
    t.eq(r.returncode, 2, "listen: exit 2 on a refused connection")


def missing_stream_row(stream):
    # Its own essd: a crash here must not hide the rows above.
    with Essd() as e:
        t.check(wait_ready(e), "essd ready (broker reachable)")
        es_id, path = create_es(e, stream)
        for sel in (None, [("stream_from_ordinal", "query", "0")]):
            expect_close(e, path, sel, 1013, ["the event stream cannot be found"],
                         "stream missing in the broker (%s)" % ("no selector" if sel is None else "ordinal"))
        t.check(e.proc.poll() is None, "essd is still running after the missing-stream close")
        try:
            st = e.request("GET", "/health/live")[0]
        except OSError as x:
            st = str(x)
        t.eq(st, 200, "essd answers after the missing-stream close")
        if e.proc.poll() is not None:
            print("essd died; the end of its output:\n" + e.output()[-1500:], file=sys.stderr)
    t.eq(e.proc.returncode, 0, "essd exits 0 on SIGTERM")
    t.eq(sanitizer_report(e), "", "no sanitizer report from essd")


def main():
    t.check(wait_broker(), "the shared broker is up")
    names = {k: unique("it4-close-" + k) for k in ("del", "poison", "repl", "listen", "none")}
    adm = StreamAdmin()
    try:
        for k in ("del", "poison", "repl", "listen"):
            t.eq(adm.create(names[k]), 1, "create stream " + names[k])
        t.eq(adm.publish(names["del"], [b"x"]), 1, "delete: published")
        with Essd() as e:
            t.check(wait_ready(e), "essd ready (broker reachable)")
            es_id, path = create_es(e, names["del"] + "-sel")
            selector_rows(e, path)
            delete_row(e, adm, names["del"])
            poison_row(e, adm, names["poison"])
            replace_row(e, adm, names["repl"])
            listen_rows(e, adm, names["listen"])
        t.eq(e.proc.returncode, 0, "essd exits 0 on SIGTERM")
        t.eq(sanitizer_report(e), "", "no sanitizer report from essd")
        missing_stream_row(names["none"])
    finally:
        for n in names.values():
            adm.delete(n)
        adm.close()
    t.done()


if __name__ == "__main__":
    main()
