"""A broker restart during a live run, end to end.

A client reads an event stream from ordinal 0 while ess-publish publishes to
it at 2,000 msg/s. The broker is restarted (`scripts/broker ctl stop_app`,
3 s, `start_app`); ess-publish fails while the broker is away and is
started again (bounded retries) until it has published again after the
broker returned. Checks:
- while the broker is away, essd reports it (ess_broker_connected 0) and a
  new WebSocket connection is closed with 1013 and a reason;
- the live client is never closed, and after the run it has seen exactly the
  stream's offsets 0..N-1 in order: no gap, no duplicate, where N is what the
  stream holds (read back with ess-cat once publishing has stopped);
- after the broker returns, new connections work again.
The broker is shared: the outage is kept to a few seconds, and the stream
(it4-brk-<random>) is deleted at the end.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (BROKER_ENV, CAT, PUBLISH, Checker, Essd, broker_ctl, create_es,  # noqa: E402
                    delete_stream, metrics, recv_close, unique, ws_open, sanitizer_report, wait_broker, wait_ready)

t = Checker()
RATE = 2000


def frame_offset(payload):
    try:
        return json.loads(payload)["ess_offset"]
    except (ValueError, KeyError, TypeError):
        return None


class Reader(threading.Thread):
    """Reads one WebSocket until told to stop (after an idle period) or closed."""

    def __init__(self, ws):
        super().__init__(daemon=True)
        self.ws = ws
        self.offsets = []
        self.close = None
        self.error = None
        self.stop = threading.Event()

    def run(self):
        idle = 0
        for _ in range(10 ** 7):
            try:
                f = self.ws.recv(timeout=1)
            except socket.timeout:
                if self.stop.is_set():
                    idle += 1
                    if idle >= 5:
                        return
                continue
            except (OSError, ConnectionError) as x:
                self.error = str(x)
                return
            idle = 0
            if f[0] == "close":
                self.close = (f[1], f[2])
                return
            self.offsets.append(frame_offset(f[1]))


class Publisher(threading.Thread):
    """ess-publish at RATE msg/s; restarted (bounded) when it fails, until
    `after_ok` runs have completed after `resume` is set."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.resume = threading.Event()
        self.runs = []  # (returncode, stdout tail)
        self.ok_after_resume = 0
        self.proc = None

    def run(self):
        env = dict(os.environ, **BROKER_ENV)
        for _ in range(60):
            count = 4000  # 2 s per run at 2,000 msg/s
            self.proc = subprocess.Popen([PUBLISH, "--routing-key", self.stream, "--count", str(count),
                                          "--rate", str(RATE)], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env)
            out, err = self.proc.communicate(timeout=120)
            resumed = self.resume.is_set()
            self.runs.append((self.proc.returncode, (out + err).decode(errors="replace")[-200:]))
            if self.proc.returncode == 0 and resumed:
                self.ok_after_resume += 1
                if self.ok_after_resume >= 2:
                    return
            if self.proc.returncode != 0:
                time.sleep(0.5)


def wait_metric(e, name, value, tries):
    for _ in range(tries):
        try:
            if metrics(e).get(name) == value:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def stream_offsets(stream, idle_s=3, limit_s=60):
    """Offsets the stream holds: ess-cat from the first message until nothing
    new has come for idle_s seconds (bounded by limit_s), then SIGINT."""
    p = subprocess.Popen([CAT, stream, "--from", "first", "--format", "json"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, **BROKER_ENV))
    offs = []
    last = [time.time()]

    def pump():
        for line in p.stdout:
            if line.startswith(b"{"):
                offs.append(json.loads(line)["offset"])
                last[0] = time.time()

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    deadline = time.time() + limit_s
    while time.time() < deadline and time.time() - last[0] < idle_s:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    th.join(timeout=10)
    return offs


def main():
    t.check(wait_broker(), "the shared broker is up")
    stream = unique("it4-brk")
    restarted = False
    with tempfile.TemporaryDirectory(prefix="it4-brk-") as d:
        cfg = os.path.join(d, "brk.yaml")
        with open(cfg, "w") as f:
            f.write("broker:\n  reconnect_min_ms: 100\n  reconnect_max_ms: 1000\n")
        try:
            r = subprocess.run([PUBLISH, "--routing-key", stream, "--declare", "--count", "0"],
                               capture_output=True, timeout=60, env=dict(os.environ, **BROKER_ENV))
            t.eq(r.returncode, 0, "stream declared")
            with Essd(config=cfg) as e:
                t.check(wait_ready(e), "essd ready (broker reachable)")
                es_id, path = create_es(e, stream)
                _, path_other = create_es(e, stream)
                reader = Reader(ws_open(e, path + "?stream_from_ordinal=0", timeout=30))
                reader.start()
                pub = Publisher(stream)
                pub.start()
                # Let the live run go for a while.
                for _ in range(120):
                    if len(reader.offsets) >= 4000:
                        break
                    time.sleep(0.25)
                t.check(len(reader.offsets) >= 4000, "live run under way (%d frames)" % len(reader.offsets))

                restarted = True
                r = broker_ctl("stop_app")
                t.eq(r.returncode, 0, "broker stop_app (%s)" % r.stderr[-200:])
                down = wait_metric(e, "ess_broker_connected", 0.0, 40)
                t.check(down, "essd sees the broker gone (ess_broker_connected 0)")
                # A new connection during the outage: 1013 with a reason.
                ws = ws_open(e, path_other + "?stream_from_ordinal=0")
                frames, close = recv_close(ws, limit=10, timeout=15)
                t.check(close is not None and close[0] == 1013 and len(close[1]) > 0,
                        "new connection during the outage closes 1013 with a reason: %r" % (close,))
                ws.sock.close()
                seen_during = len(reader.offsets)
                time.sleep(3)
                r = broker_ctl("start_app")
                restarted = r.returncode != 0
                t.eq(r.returncode, 0, "broker start_app (%s)" % r.stderr[-200:])
                pub.resume.set()
                up = wait_metric(e, "ess_broker_connected", 1.0, 120)
                t.check(up, "essd reconnects to the broker")

                pub.join(timeout=150)
                t.check(not pub.is_alive(), "publisher finished")
                t.check(pub.ok_after_resume >= 1, "publishing resumed after the broker returned: %r" % pub.runs)
                # What the stream holds now. After start_app the stream's
                # log can take a while to come back (longer when other tests
                # restart the shared broker too): retry, bounded.
                held = []
                for _ in range(10):
                    held = stream_offsets(stream)
                    if len(held) > seen_during:
                        break
                    time.sleep(1)
                n = len(held)
                # Then give the live client (bounded) time to catch up.
                for _ in range(240):
                    if len(reader.offsets) >= n or reader.close or reader.error:
                        break
                    time.sleep(0.25)
                reader.stop.set()
                reader.join(timeout=60)
                t.eq(reader.close, None, "the live client was never closed")
                t.eq(reader.error, None, "the live client's connection was never lost")
                offs = reader.offsets
                t.check(len(offs) > seen_during, "the live client received messages after the restart")
                t.check(n > 0 and held == list(range(n)), "ess-cat reads back %d offsets" % n)
                gaps = [i for i, o in enumerate(offs) if o != i]
                t.eq(gaps[:5], [], "offsets contiguous from 0: no gap, no duplicate")
                t.eq(len(offs), n, "the client saw every message the stream holds (%d)" % n)
                print("restart: %d frames, %d publisher runs (%s)"
                      % (len(offs), len(pub.runs), ",".join(str(x[0]) for x in pub.runs)))

                # New connections work again.
                ws = ws_open(e, path_other + "?stream_from_ordinal=%d" % max(n - 3, 0))
                frames, close = recv_close(ws, limit=3, timeout=15)
                t.eq([frame_offset(p) for _, p in frames], list(range(max(n - 3, 0), n)),
                     "a new connection after the restart gets the last messages")
                ws.close()
            t.eq(e.proc.returncode, 0, "essd exits 0 on SIGTERM")
            t.eq(sanitizer_report(e), "", "no sanitizer report from essd")
        finally:
            if restarted:
                broker_ctl("start_app")
            delete_stream(stream)
    t.done()


if __name__ == "__main__":
    main()
