"""What the replica-loss tests share (issue 14, item 3): many `ess-listen
--reconnect` clients reading event streams through HAProxy while something
happens to the essd replicas, then a check that every client ended with
exactly the stream's offsets, each once, in order.

The clients need the shared registry (registry.backend: stream): an event
stream created through one replica must be known on all three, because a
reconnecting client lands on whichever replica HAProxy picks. Without it
the tests exit with SKIP (77) and say why.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from clusterlib import CLUSTER, EP, SOURCE  # noqa: E402 (sets the broker first)
from esslib import BROKER_ENV, CAT, LISTEN, PUBLISH, cat_read, unique  # noqa: E402

SKIP = 77


def http(base, method, path, body=None, timeout=10):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def replica_metric(n, name):
    """A metric of replica n (0-based) from its /metrics, or None."""
    try:
        with urllib.request.urlopen(EP["replicas"][n]["internal"] + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


def connections():
    return [replica_metric(n, "ess_websocket_connections") for n in range(3)]


def shared_registry_or_skip():
    """Exit SKIP unless an event stream created through one replica is
    listed by all three (the shared registry)."""
    key = unique("clreg")
    st, body = http(EP["replicas"][0]["internal"], "POST", "/event-stream/", {"routing_key": key})
    if st != 201:
        print("SKIP: POST on replica 1 gave %s %r" % (st, body))
        sys.exit(SKIP)
    uuid = body["location"].rsplit("/", 1)[1]
    deadline = time.time() + 5
    missing = [1, 2]
    while missing and time.time() < deadline:
        missing = []
        for n in (1, 2):
            st, lst = http(EP["replicas"][n]["internal"], "GET", "/event-stream/")
            locs = [e["location"] for e in (lst or {}).get("event_streams", [])] if st == 200 else []
            if not any(x.endswith("/" + uuid) for x in locs):
                missing.append(n + 1)
        time.sleep(0.2)
    http(EP["replicas"][0]["internal"], "DELETE", "/event-stream/%d" % body["id"])
    if missing:
        print("SKIP: the replicas do not share a registry (an event stream created on replica 1 "
              "is unknown on replica %s; scripts/cluster runs registry: %s). These tests need "
              "registry.backend: stream (issue 14 item 1)." %
              (", ".join(map(str, missing)), EP.get("registry")))
        sys.exit(SKIP)


class Load:
    """A stream, `clients` event streams on it (created through HAProxy's
    internal port), one `ess-listen --reconnect` per event stream through
    HAProxy's public port, and a publisher at `rate` msg/s through node 3."""

    def __init__(self, clients, rate, seconds):
        self.key = unique("clrl")
        self.clients, self.rate, self.count = clients, rate, int(rate * seconds)
        self.work = os.path.join(SOURCE, ".var", "cluster", "test-" + self.key)
        os.makedirs(self.work, exist_ok=True)
        self.listeners, self.files, self.pub = [], [], None
        subprocess.run([PUBLISH, "--routing-key", self.key, "--count", "1", "--declare", "--url",
                        EP["brokers"][2]["amqp"]], check=True, capture_output=True, timeout=60)
        self.paths = []
        for i in range(clients):
            st, body = http(EP["haproxy"]["internal"], "POST", "/event-stream/",
                            {"routing_key": self.key})
            if st != 201:
                raise RuntimeError("POST %d through HAProxy gave %s %r" % (i, st, body))
            self.paths.append("/event-stream/" + body["location"].rsplit("/", 1)[1])

    def start_clients(self):
        for i, p in enumerate(self.paths):
            out = open(os.path.join(self.work, "c%03d.out" % i), "wb")
            err = open(os.path.join(self.work, "c%03d.err" % i), "wb")
            self.files.append((out, err))
            self.listeners.append(subprocess.Popen(
                [LISTEN, EP["haproxy"]["public"] + p, "-o", "0", "--reconnect", "--max-retries",
                 "40"], stdout=out, stderr=err))
        deadline = time.time() + 60
        while time.time() < deadline:
            c = connections()
            if None not in c and sum(c) >= self.clients:
                break
            time.sleep(0.5)
        print("clients connected per replica:", connections())

    def start_publisher(self):
        self.pub = subprocess.Popen([PUBLISH, "--routing-key", self.key, "--count", str(self.count),
                                     "--rate", str(self.rate), "--url", EP["brokers"][2]["amqp"]],
                                    env=dict(os.environ, **BROKER_ENV), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)

    def wait_publisher(self):
        try:
            out = self.pub.communicate(timeout=600)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            self.pub.kill()
            out = self.pub.communicate()[0].decode(errors="replace")
        print("ess-publish (exit %s): %s" % (self.pub.returncode, out.strip()[-200:]))
        return self.pub.returncode

    def last_offsets(self):
        res = []
        for out, _ in self.files:
            last = None
            with open(out.name, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 4096))
                for line in f.read().splitlines():
                    if line.startswith(b"offset="):
                        last = int(line.split()[0][7:])
            res.append(last)
        return res

    def finish(self, t):
        """Wait (bounded) until every client reached the stream's last
        offset, stop them, and check each one's offsets against the stream's."""
        stored_last = last_stored_offset(self.key, self.count + 1)
        deadline = time.time() + 120
        while time.time() < deadline:
            lasts = self.last_offsets()
            if all(x == stored_last for x in lasts):
                break
            time.sleep(1)
        lasts = self.last_offsets()
        behind = [i for i, x in enumerate(lasts) if x != stored_last]
        for p in self.listeners:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.listeners:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for out, err in self.files:
            out.close()
            err.close()
        stored = [m["offset"] for m in cat_read(self.key, self.count + 1)]
        t.eq(len(stored), self.count + 1, "the stream holds every message published")
        bad, reconnects, reasons = [], 0, {}
        for i, (out, err) in enumerate(self.files):
            with open(out.name, encoding="utf-8", errors="replace") as f:
                offs = [int(x.split()[0][7:]) for x in f if x.startswith("offset=")]
            with open(err.name, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if "reconnecting" in line:
                        reconnects += 1
                        why = line.split(";")[0].replace("ess-listen: ", "")
                        why = why.split(" reason=")[0]
                        reasons[why] = reasons.get(why, 0) + 1
            if offs != stored:
                dup = len(offs) - len(set(offs))
                missing = sorted(set(stored) - set(offs))
                bad.append("client %d: %d received, %d duplicates, %d missing (first %r)" %
                           (i, len(offs), dup, len(missing), missing[:3]))
        print("reconnects: %d in all; causes: %r" % (reconnects, reasons))
        t.eq(behind, [], "every client reached the last offset %s" % stored_last)
        t.eq(bad[:10], [], "every client got every offset exactly once, in order (%d clients, "
             "%d offsets each)" % (len(self.files), len(stored)))
        return reconnects

    def kill_all(self):
        for p in self.listeners + ([self.pub] if self.pub else []):
            if p.poll() is None:
                p.kill()
                p.wait(5)


def cluster(*args, timeout=120):
    return subprocess.run([CLUSTER, *args], timeout=timeout, capture_output=True, text=True)


def last_stored_offset(key, count):
    r = subprocess.run([CAT, key, "--from", "first", "--count", str(count), "--format", "json"],
                       capture_output=True, timeout=120, env=dict(os.environ, **BROKER_ENV))
    lines = [x for x in r.stdout.decode().splitlines() if x]
    return json.loads(lines[-1])["offset"] if lines else None
