#!/usr/bin/env python3
"""The tail probe (ess_stream_tail) through `ess-cat --tail`, against the
broker under test (esslib.py: ESS_TEST_AMQP_URL, ESS_TEST_STREAM_PORT).

The probe must give the offset of the stream's last committed message on
any broker version (3.10 has no StreamStats): checked against what was
published, after one batch (several chunks: ess-cat publishes 1,000 per
frame) and after more; the answer is the last offset exactly, not the first
offset of the last chunk. An empty stream answers -1, a missing one
"does not exist" (exit 2). Every probe leaves no consumer behind: the
stream's messages are then read whole from the start by a normal reader.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import esslib  # noqa: E402

t = esslib.Checker()
TAG = "ess-tail-it-%d-%d" % (os.getpid(), int(time.time()))


def cat(*args, stdin=None):
    r = esslib.tool(esslib.CAT, *args, stdin=stdin, timeout=120, check=False)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def publish(stream, first, n, create):
    lines = "".join('{"i":%d}\n' % i for i in range(first, first + n)).encode()
    rc, _, err = cat("--publish", stream, *(["--create"] if create else []), stdin=lines)
    t.eq(rc, 0, "published %d messages to %s (%s)" % (n, stream, err.strip()))


def tail(stream):
    rc, out, err = cat("--tail", stream)
    if rc != 0:
        return rc, None, err
    return rc, json.loads(out.strip().splitlines()[-1])["last_offset"], err


def main():
    stream = TAG
    empty = TAG + "-empty"
    try:
        publish(stream, 0, 2500, True)
        rc, last, err = tail(stream)
        t.check(rc == 0 and last == 2499, "tail after 2,500 messages is 2499 (got %r, %s)" %
              (last, err.strip()))
        publish(stream, 2500, 1, False)
        rc, last, err = tail(stream)
        t.check(rc == 0 and last == 2500, "one more message moves the tail to 2500 (got %r)" % last)
        publish(stream, 2501, 1499, False)
        rc, last, _ = tail(stream)
        t.check(rc == 0 and last == 3999, "a 1,499-message batch: tail 3999 (got %r)" % last)

        rc, _, err = cat("--publish", "--create", empty, stdin=b"")
        t.check(rc == 0, "created an empty stream (%s)" % err.strip())
        rc, last, _ = tail(empty)
        t.check(rc == 0 and last == -1, "an empty stream answers -1 (got %r)" % last)

        rc, _, err = cat("--tail", TAG + "-missing")
        t.check(rc == 2 and "does not exist" in err,
              "a missing stream: exit 2, does not exist (rc %d, %s)" % (rc, err.strip()))

        rc, out, err = cat(stream, "--from", "first", "--count", "4000", "--format", "json")
        offs = [json.loads(line)["offset"] for line in out.splitlines() if line.startswith("{")]
        t.check(rc == 0 and offs == list(range(4000)),
              "a reader after the probes gets all 4,000 offsets in order (%d)" % len(offs))
    finally:
        for s in (stream, empty):
            cat("--delete", s)
    t.done()


if __name__ == "__main__":
    main()
