"""Replay before the first retained offset (issue 17): an ordinal selector
that points at messages retention has removed starts at the first message
still in the stream; essd logs it once per connection and counts it in
ess_replay_truncated_total.

The stream (it4-trunc-<random>) is created through the stream protocol with
100 KB segments and a 300 KB length limit, then filled with 6,000 messages
of about 100 bytes by a *named* publisher: the broker tracks such a writer,
so every new segment starts with a tracking chunk that takes an offset
(the gaps docs/brokers.md describes), and retention removes all but the
last few segments. What is left is read back with ess-cat. Checks:
- ordinal 0: the first frame is the first retained message; the counter
  goes up by one; essd logs "replay truncated" once;
- ordinal = the first retained offset: exact start, counter unchanged;
- ordinal = a missing offset at a segment boundary (one offset before a
  retained message): starts at the next message, counter unchanged;
- ordinal 0 again: counter up by one more (once per connection).
"""
import json
import os
import socket
import struct
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (BROKER_ENV, CAT, Checker, Essd, StreamAdmin, create_es, delete_stream,  # noqa: E402
                    metrics, sanitizer_report, unique, wait_broker, wait_ready, ws_open)

t = Checker()
COUNT = 6000
METRIC = "ess_replay_truncated_total"


def create_small(admin, stream):
    args = {"max-length-bytes": "300000", "stream-max-segment-size-bytes": "100000"}
    body = admin._str(stream) + struct.pack(">i", len(args))
    body += b"".join(admin._str(k) + admin._str(v) for k, v in args.items())
    return admin._call(0x0D, body)


def publish_named(admin, stream, bodies, batch=500):
    """Publish through a named publisher (a tracked writer), waiting for confirms."""
    rc = admin._call(0x01, struct.pack(">B", 7) + admin._str("trunc-writer") + admin._str(stream))
    if rc != 1:
        return rc
    seq = 0
    for i in range(0, len(bodies), batch):
        part = bodies[i:i + batch]
        admin.confirms = 0
        msgs = b"".join(struct.pack(">Q", seq + j)
                        + admin._bytes(b"\x00\x53\x75\xb0" + struct.pack(">I", len(b)) + b)
                        for j, b in enumerate(part))
        seq += len(part)
        admin._send(struct.pack(">HHBi", 0x02, 1, 7, len(part)) + msgs)
        admin.sock.settimeout(30)
        for _ in range(100000):
            if admin.confirms >= len(part):
                break
            chunk = admin.sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream connection closed")
            admin.buf += chunk
            while len(admin.buf) >= 4 and len(admin.buf) >= 4 + struct.unpack(">I", admin.buf[:4])[0]:
                n = struct.unpack(">I", admin.buf[:4])[0]
                f, admin.buf = admin.buf[4:4 + n], admin.buf[4 + n:]
                if struct.unpack(">H", f[:2])[0] == 0x0003:
                    admin.confirms += struct.unpack(">i", f[5:9])[0]
    return admin._call(0x06, struct.pack(">B", 7))


def read_retained(stream, last_i):
    """What the stream still holds, as ess-cat reads it from `first`.
    ess-cat --count would wait for messages retention removed, so ess-cat
    runs for 5 s (ample for a few thousand messages on loopback) and is
    then stopped with SIGTERM, on which it flushes what it printed."""
    p = subprocess.Popen([CAT, stream, "--from", "first", "--format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, **BROKER_ENV))
    try:
        data, _ = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            data, _ = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            data, _ = p.communicate()
    out = [json.loads(x) for x in data.splitlines() if x.strip()]
    t.check(out and json.loads(out[-1]["body"])["i"] == last_i,
            "ess-cat read the stream to its last message")
    return out


def first_offsets(e, path, ordinal, n=5):
    ws = ws_open(e, path, headers={"X-StreamOffsetFromOrdinal": str(ordinal)})
    offs = []
    try:
        for _ in range(n):
            kind, payload = ws.recv(timeout=20)[:2]
            if kind == "close":
                break
            offs.append(json.loads(payload)["ess_offset"])
    except (socket.timeout, OSError, ValueError) as exc:
        t.check(False, "ordinal %d: frames: %s" % (ordinal, exc))
    ws.close()
    return offs


def main():
    if not wait_broker():
        t.check(False, "broker reachable")
        t.done()
    stream = unique("it4-trunc")
    admin = StreamAdmin()
    try:
        t.eq(create_small(admin, stream), 1, "create the small-segment stream")
        bodies = [json.dumps({"i": i, "pad": "x" * 80}).encode() for i in range(COUNT)]
        t.eq(publish_named(admin, stream, bodies), 1, "publish %d messages" % COUNT)
        # Retention runs in the background after a segment rolls over:
        # read until two reads agree on the first offset (bounded).
        stored = read_retained(stream, COUNT - 1)
        for _ in range(10):
            time.sleep(2)
            again = read_retained(stream, COUNT - 1)
            if again and stored and again[0]["offset"] == stored[0]["offset"]:
                break
            stored = again
        t.check(0 < len(stored) < COUNT, "retention removed old segments (%d of %d left)"
                % (len(stored), COUNT))
        offs = [m["offset"] for m in stored]
        first = offs[0]
        t.check(first >= 2, "first retained offset %d is past ordinal 0 + 1" % first)
        # A missing offset just before a retained message: a segment's tracking chunk.
        gaps = [b - 1 for a, b in zip(offs, offs[1:]) if b - a == 2]
        t.check(len(gaps) > 0, "a tracked writer leaves one-offset gaps at segment starts (%d)" % len(gaps))
        t.check(all(b - a <= 2 for a, b in zip(offs, offs[1:])), "no gap wider than one offset")

        with Essd() as e:
            if not wait_ready(e):
                t.check(False, "essd ready")
                t.done()
            _, path = create_es(e, stream)
            m0 = metrics(e).get(METRIC)
            t.eq(m0, 0.0, "%s starts at 0" % METRIC)

            got = first_offsets(e, path, 0)
            t.eq(got[:1], [first], "ordinal 0 starts at the first retained message")
            t.eq(got, offs[:len(got)], "ordinal 0: then the retained messages in order")
            t.eq(metrics(e).get(METRIC), 1.0, "ordinal 0 counted as truncated")

            got = first_offsets(e, path, first)
            t.eq(got[:1], [first], "ordinal = first retained: exact")
            t.eq(metrics(e).get(METRIC), 1.0, "ordinal = first retained: not counted")

            if gaps:
                g = gaps[0]
                got = first_offsets(e, path, g)
                t.eq(got[:1], [g + 1], "ordinal %d (a segment-boundary gap) starts at the next" % g)
                t.eq(metrics(e).get(METRIC), 1.0, "a one-offset gap is not counted")

            got = first_offsets(e, path, 0, n=1)
            t.eq(got[:1], [first], "ordinal 0 again")
            t.eq(metrics(e).get(METRIC), 2.0, "counted once per connection")
            e.stop()
            out = e.output()
            t.eq(out.count("replay truncated"), 2, "logged once per truncated connection")
            t.check("asked for offset 0" in out and ("at offset %d" % first) in out,
                    "the log names the asked and the first offsets")
            t.eq(sanitizer_report(e), "", "sanitizer report")
    finally:
        admin.close()
        delete_stream(stream)
    t.done()


if __name__ == "__main__":
    main()
