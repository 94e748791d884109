#!/usr/bin/env python3
"""Integration test of the stream client through ess-cat, against the real
RabbitMQ on 127.0.0.1 (stream port 5552, or the broker that
ESS_TEST_AMQP_URL, ESS_TEST_STREAM_PORT and ESS_TEST_BROKER_CTL name, as in
esslib.py).

200,000 messages are published with `ess-cat --publish`, then read back:
exactly once and in order from first; from offset 12,345 exactly; from a
timestamp (the first message at or after it); from next; through a broker
restart in the middle of a read (no loss, no duplicate); and messages
published through AMQP 0-9-1 (ess-publish, exchange event-streams) arrive
in the same stream. Every stream it makes has a unique name and is deleted.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

BUILD = os.environ.get("ESS_BUILD_DIR", "build")
SOURCE = os.environ.get("ESS_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CAT = os.path.join(BUILD, "ess-cat")
PUBLISH = os.path.join(BUILD, "ess-publish")
AMQP_URL = os.environ.get("ESS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
AMQP_PORT = urllib.parse.urlsplit(AMQP_URL).port or 5672
STREAM_PORT = int(os.environ.get("ESS_TEST_STREAM_PORT") or 5552)
BROKER_CTL = (os.environ.get("ESS_TEST_BROKER_CTL", "").split()
              or [os.path.join(SOURCE, "scripts", "broker"), "ctl"])
# ess-cat and ess-publish inherit these: the broker under test.
os.environ.update(ESS_AMQP_URL=AMQP_URL, ESS_STREAM_PORT=str(STREAM_PORT))
N = 200_000
TAG = "essA-it-%d-%d" % (os.getpid(), int(time.time()))

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def body_of(i):
    return '{"i":%d,"pad":"%s"}' % (i, "x" * (i % 17))


def publish(stream, lines, create=True):
    args = [CAT, "--publish", stream] + (["--create"] if create else [])
    p = subprocess.run(args, input=("\n".join(lines) + "\n").encode(), capture_output=True,
                       timeout=120)
    return p.returncode, p.stderr.decode(errors="replace")


def read(stream, frm, count, timeout=120):
    p = subprocess.run([CAT, stream, "--from", frm, "--count", str(count), "--format", "json"],
                       capture_output=True, timeout=timeout)
    msgs = [json.loads(line) for line in p.stdout.decode().splitlines() if line]
    return p.returncode, msgs, p.stderr.decode(errors="replace")


class Reader:
    """ess-cat in the background; stdout is drained only when asked to."""

    def __init__(self, stream, frm, count, extra=()):
        self.p = subprocess.Popen(
            [CAT, stream, "--from", frm, "--count", str(count), "--format", "json"] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err = []
        self.subscribed = threading.Event()
        threading.Thread(target=self._drain_err, daemon=True).start()

    def _drain_err(self):
        for line in self.p.stderr:
            line = line.decode(errors="replace")
            self.err.append(line)
            if "subscribed to" in line:
                self.subscribed.set()

    def finish(self, timeout):
        # Not communicate(): it would also read stderr, racing _drain_err.
        chunks = []
        t = threading.Thread(target=lambda: chunks.append(self.p.stdout.read()), daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.p.kill()
            t.join(10)
        self.p.wait(30)
        out = b"".join(chunks)
        return self.p.returncode, [json.loads(l) for l in out.decode().splitlines() if l]


def delete(stream):
    subprocess.run([CAT, "--delete", stream], capture_output=True, timeout=30)


def wait_broker(up, limit_s=90):
    for _ in range(limit_s * 2):
        if port_open(STREAM_PORT) == up:
            return True
        time.sleep(0.5)
    return False


def main():
    if not os.access(CAT, os.X_OK):
        print("FAIL ess-cat not built at", CAT)
        return 1
    if not port_open(STREAM_PORT):
        print("FAIL no RabbitMQ stream listener on 127.0.0.1:%d (scripts/broker start)" % STREAM_PORT)
        return 1
    stream = TAG
    try:
        rc, err = publish(stream, [body_of(i) for i in range(N)])
        check(rc == 0, "publish %d messages via ess-cat --publish (%s)" % (N, err.strip()))

        rc, msgs, err = read(stream, "first", N)
        check(rc == 0, "read from first exits 0")
        check(len(msgs) == N, "read from first returns %d messages (got %d)" % (N, len(msgs)))
        check(all(m["offset"] == i for i, m in enumerate(msgs)), "offsets 0..N-1 in order, once")
        check(all(m["body"] == body_of(i) for i, m in enumerate(msgs)), "bodies match, in order")
        stamps = [m["timestamp"] for m in msgs]
        del msgs
        check(stamps == sorted(stamps) and stamps[0] > 1.5e12, "chunk timestamps are ms, ordered")

        rc, got, _ = read(stream, "12345", 50)
        check(rc == 0 and [m["offset"] for m in got] == list(range(12345, 12395)),
              "from offset 12345 starts exactly there")
        check(all(m["body"] == body_of(m["offset"]) for m in got), "from offset: bodies match")

        # load_balancer_mode: everything on the configured address.
        p = subprocess.run([CAT, "--lb", stream, "--from", "12345", "--count", "5", "--format",
                            "json"], capture_output=True, timeout=60)
        got = [json.loads(l) for l in p.stdout.decode().splitlines() if l]
        check(p.returncode == 0 and [m["offset"] for m in got] == list(range(12345, 12350)),
              "--lb (load_balancer_mode) reads from offset 12345 exactly")

        # A timestamp between two chunks: the first message at or after it.
        ts = next((stamps[i] for i in range(N // 2, N) if stamps[i] > stamps[i - 1]), None)
        if ts is None:
            print("SKIP from timestamp: all messages share one chunk timestamp")
        else:
            want = stamps.index(ts)
            rc, got, _ = read(stream, "timestamp:%d" % ts, 3)
            check(rc == 0 and got and got[0]["offset"] == want and got[0]["timestamp"] >= ts,
                  "from timestamp %d starts at offset %d (got %s)" % (
                      ts, want, got[0]["offset"] if got else None))
            # One ms earlier starts at the first chunk stamped at or after
            # it: the same offset, unless the chunk before is exactly 1 ms
            # older (fast publishing), and then that chunk's first offset.
            want1 = next(i for i, t in enumerate(stamps) if t >= ts - 1)
            rc, got, _ = read(stream, "timestamp:%d" % (ts - 1), 1)
            check(rc == 0 and got and got[0]["offset"] == want1,
                  "from timestamp - 1 ms starts at the first chunk at or after it (%d, got %s)" % (
                      want1, got[0]["offset"] if got else None))

        # 300 subscriptions on one client: more than one connection's 255.
        # Each stops after 1,000 messages by unsubscribing inside on_message.
        p = subprocess.run([CAT, stream, "--from", "first", "--count", "1000", "--fanout", "300"],
                           capture_output=True, timeout=120, env=dict(os.environ, ESS_CAT_DEBUG="1"))
        out = p.stdout.decode()
        # The locator's connection takes subscriptions too (its node's
        # advertised host is the leader's): count every connection.
        conns = p.stderr.decode().count("stream: connected to ")
        check(p.returncode == 0 and "count=300000 first=0 last=999" in out
              and "order_errors=0" in out, "300 subscriptions x 1000 messages, in order (%s)"
              % out.strip())
        check(conns >= 2, "300 subscriptions use more than one connection (%d)" % conns)

        # Flow control: --rate pauses credit and resumes it; nothing is lost.
        p = subprocess.run([CAT, stream, "--from", "first", "--count", str(N), "--rate", "150000",
                            "--quiet"], capture_output=True, timeout=120)
        out = p.stdout.decode()
        check(p.returncode == 0 and out.startswith("count=%d first=0 last=%d " % (N, N - 1)),
              "paused/resumed read returns all %d messages (%s)" % (N, out.strip()))

        # From next: only messages published after the subscription.
        r = Reader(stream, "next", 5)
        check(r.subscribed.wait(30), "next: subscribed")
        rc, _ = publish(stream, ["next-%d" % i for i in range(5)], create=False)
        rc, got = r.finish(60)
        check(rc == 0 and [m["offset"] for m in got] == list(range(N, N + 5))
              and [m["body"] for m in got] == ["next-%d" % i for i in range(5)],
              "from next delivers exactly the 5 new messages")
        total = N + 5

        # Heartbeats: a 1 s heartbeat keeps an idle connection open (the
        # broker drops peers that stay silent), and the reader still gets a
        # message published after several heartbeat periods.
        r = Reader(stream, "next", 1, ["--heartbeat", "1"])
        check(r.subscribed.wait(30), "heartbeat: subscribed")
        time.sleep(4)  # idle for 4 heartbeat periods; the outcome does not depend on the length
        publish(stream, ["after-idle"], create=False)
        rc, got = r.finish(60)
        check(rc == 0 and [m["body"] for m in got] == ["after-idle"]
              and not any("lost" in e for e in r.err),
              "idle connection with 1 s heartbeats stays up (%s)" % " / ".join(
                  e.strip() for e in r.err))
        total += 1

        # AMQP 0-9-1 publishing through the event-streams exchange.
        if os.access(PUBLISH, os.X_OK):
            p = subprocess.run([PUBLISH, "--routing-key", stream, "--count", "100", "--declare"],
                               capture_output=True, timeout=120)
            check(p.returncode == 0, "ess-publish 100 messages to event-streams (%s)" %
                  p.stderr.decode(errors="replace").strip()[:200])
            rc, got, _ = read(stream, str(total), 100)
            seqs = []
            for m in got:
                try:
                    seqs.append(json.loads(m["body"])["seq"])
                except (ValueError, KeyError, TypeError):
                    seqs.append(None)
            check(rc == 0 and [m["offset"] for m in got] == list(range(total, total + 100)),
                  "AMQP 0-9-1 messages read back at the following offsets")
            check(None not in seqs and seqs == list(range(seqs[0], seqs[0] + 100)),
                  "AMQP 0-9-1 bodies decoded from AMQP 1.0 (seq in order)")
            total += 100
        else:
            print("SKIP AMQP 0-9-1 sub-case: %s not built" % PUBLISH)

        # Broker restart in the middle of a read: stdout is not drained, so
        # ess-cat stalls mid-backlog; then the broker restarts, more
        # messages are published, and the reader must see every one once.
        extra = 20_000
        r = Reader(stream, "first", total + extra)
        check(r.subscribed.wait(30), "restart: subscribed")
        time.sleep(1)  # let it fill the pipe; correctness does not depend on it
        subprocess.run([*BROKER_CTL, "stop_app"], capture_output=True, timeout=120)
        check(wait_broker(False, 60), "broker stopped")
        subprocess.run([*BROKER_CTL, "start_app"], capture_output=True, timeout=180)
        check(wait_broker(True, 120), "broker started again")
        rc = 1
        for _ in range(60):  # the stream may need a moment to elect its leader
            rc, err = publish(stream, ["after-%d" % i for i in range(extra)], create=False)
            if rc == 0:
                break
            time.sleep(1)
        check(rc == 0, "publish %d more after the restart" % extra)
        rc, got = r.finish(180)
        offs = [m["offset"] for m in got]
        check(rc == 0, "restart: reader exits 0")
        check(len(offs) == total + extra and offs == list(range(total + extra)),
              "restart: %d messages, no gap, no duplicate (got %d, %d distinct)" % (
                  total + extra, len(offs), len(set(offs))))
        check(all(m["body"] == "after-%d" % (m["offset"] - total) for m in got[total:]),
              "restart: new bodies in order")
        check(any("connection to" in e and "lost" in e for e in r.err),
              "restart: the reader did lose its connection (and resumed)")

        # Chunks larger than the negotiated frame_max (1 MiB): the broker
        # delivers each chunk in one frame anyway, and it must be read.
        big = stream + "-big"
        try:
            lines = [chr(ord("a") + i) * 600_000 for i in range(6)]
            rc, _ = publish(big, lines)
            rc2, got, err = read(big, "first", 6, timeout=60)
            check(rc == 0 and rc2 == 0 and [m["body"] for m in got] == lines,
                  "six 600 KB messages (chunks over frame_max) read back (%s)" % err.strip()[:200])
        finally:
            delete(big)

        # Stream-exists check through Metadata.
        p = subprocess.run([CAT, "--exists", stream], capture_output=True, timeout=30)
        check(p.returncode == 0, "--exists: an existing stream")
        p = subprocess.run([CAT, "--exists", stream + "-missing"], capture_output=True, timeout=30)
        check(p.returncode == 2 and b"does not exist" in p.stderr, "--exists: a missing stream")

        # Deleting the stream under a live reader ends its subscription.
        gone = stream + "-gone"
        publish(gone, ["a", "b"])
        r = Reader(gone, "first", 10)
        check(r.subscribed.wait(30), "delete-under-reader: subscribed")
        delete(gone)
        rc, got = r.finish(60)
        check(rc == 2 and len(got) == 2 and any("ended: stream does not exist" in e for e in r.err),
              "a deleted stream ends the subscription (exit %s, %s)"
              % (rc, " / ".join(e.strip() for e in r.err)))

        # Broker unreachable: the subscription fails at once, no hang.
        p = subprocess.run([CAT, "--stream-port", "1", stream, "--from", "first"],
                           capture_output=True, timeout=60)
        check(p.returncode == 1 and b"cannot connect" in p.stderr, "unreachable broker: exit 1")
        p = subprocess.run([CAT, stream, "--from", "first"], capture_output=True, timeout=60,
                           env=dict(os.environ, ESS_STREAM_PORT="1"))
        check(p.returncode == 1 and b"cannot connect" in p.stderr, "ESS_STREAM_PORT=1: exit 1")
        p = subprocess.run([CAT, stream, "--from", "first"], capture_output=True, timeout=60,
                           env=dict(os.environ, ESS_STREAM_PORT="x"))
        check(p.returncode == 2 and b"ESS_STREAM_PORT" in p.stderr, "bad ESS_STREAM_PORT: exit 2")

        # Errors the user sees.
        rc, _, err = read(TAG + "-missing", "first", 1, timeout=30)
        check(rc == 2 and "does not exist" in err, "missing stream: exit 2 with a clear message")
        p = subprocess.run([CAT, "--url", "amqp://guest:wrong@127.0.0.1:%d/" % AMQP_PORT, stream, "--from",
                            "first", "--count", "1"], capture_output=True, timeout=30)
        check(p.returncode == 2 and b"login refused" in p.stderr, "wrong password: exit 2")
        p = subprocess.run([CAT, stream, "--from", "nonsense"], capture_output=True, timeout=30)
        check(p.returncode == 2, "bad --from: exit 2")
    finally:
        delete(stream)
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
