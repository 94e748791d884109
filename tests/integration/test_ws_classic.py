"""Version 1 (classic queue) mode of the public WebSocket, end to end.

essd runs with broker.version: 1: each connection gets an exclusive,
auto-delete, server-named queue bound to the direct exchange event-streams
with its routing key, and messages reach the client raw (no ess_offset or
ess_timestamp: a classic queue has neither).

1. Delivery: 1,000 JSON and 1,000 text messages published with ess-publish
   arrive once, in order, raw (JSON without the enrichment members, text
   without the |offset:| suffix).
2. POISON closes 1000 "The stream has been deleted" after the messages
   before it; DELETE of the event stream closes the same way; a second
   client replaces the first (1000, replaced) and then gets the messages.
3. Slow client: with public.outbound_budget_bytes = 64 KiB, a client that
   does not read while 20,000 messages of 1,000 bytes are published leaves
   them in the broker (messages_ready grows, messages_unacknowledged stays
   within the prefetch window of 500), essd's RSS stays within baseline +
   budget + prefetch x size + a fixed overhead, and when the client reads
   again all 20,000 arrive, in order.
4. Connection loss (rabbitmqctl close_connection on essd's AMQP
   connection, not a broker restart: the broker is shared) and a queue
   deleted behind essd's back: the client stays connected, essd declares a
   new queue, and messages published after that arrive. (What was published
   in between is lost: a classic queue has no history.)
5. A broker that cannot be reached: a new connection closes 1013.
6. After every client has left, none of the queues essd declared is left
   in the broker, and no binding of the test's routing keys remains.

Needs the shared RabbitMQ on 127.0.0.1 (scripts/broker). Bounded waits.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (sanitized,  # noqa: E402
    AMQP_PORT, BROKER_ENV, PUBLISH, Checker, Essd, broker_ctl, create_es, free_port,  # noqa: E402
                    recv_close, sanitizer_report, unique, vm_rss_kib, wait_broker, ws_open)

t = Checker()
EXCHANGE = "event-streams"
BUDGET = 64 * 1024
SLOW_TOTAL = 20000
SLOW_SIZE = 1000
PREFETCH = 500
# Fixed overhead allowed above baseline + budget + one prefetch window of
# messages while the client does not read: lws and socket buffers,
# allocator slack, librabbitmq's frame pools. The stream-mode flow test
# measured under 1 MiB; 8 MiB is allowed. Without flow control essd would
# hold all 20 MB.
OVERHEAD_KIB = 8 * 1024

keys_used = []
queues_seen = set()


def publish(key, count, fmt="json", poison=False, size=None):
    args = [PUBLISH, "--routing-key", key, "--count", str(count), "--format", fmt]
    if poison:
        args.append("--poison")
    if size:
        args += ["--size", str(size)]
    r = subprocess.run(args, capture_output=True, timeout=300, env=dict(os.environ, **BROKER_ENV))
    return r.returncode, r.stderr.decode(errors="replace")


def bindings(key):
    """Queues bound to event-streams with routing key `key`, or None if rabbitmqctl failed."""
    r = broker_ctl("list_bindings", "-q", "source_name", "routing_key", "destination_name")
    if r.returncode != 0:
        return None
    out = []
    for line in r.stdout.splitlines():
        p = line.split("\t")
        if len(p) == 3 and p[0] == EXCHANGE and p[1] == key:
            out.append(p[2])
    return out


def wait_bound(key, not_in=(), tries=40):
    """Wait until a queue other than those in not_in is bound with key; return its name."""
    for _ in range(tries):
        b = bindings(key) or []
        fresh = [q for q in b if q not in not_in]
        if fresh:
            queues_seen.update(fresh)
            return fresh[0]
        time.sleep(0.25)
    return None


def queue_counts(name):
    """(messages_ready, messages_unacknowledged) of a queue, or None."""
    r = broker_ctl("list_queues", "-q", "name", "messages_ready", "messages_unacknowledged")
    if r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        p = line.split("\t")
        if len(p) == 3 and p[0] == name:
            return int(p[1]), int(p[2])
    return None


def new_key(prefix):
    k = unique(prefix)
    keys_used.append(k)
    return k


def seq_of(payload, fmt):
    s = payload.decode("utf-8")
    if fmt == "json":
        return json.loads(s)["seq"]
    return int(s.rsplit("seq: ", 1)[1].split()[0])


def delivery(e):
    key = new_key("it4c-dlv")
    _, path = create_es(e, key)
    ws = ws_open(e, path, timeout=30)
    q = wait_bound(key)
    t.check(q is not None and q.startswith("amq.gen-"), "a server-named queue is bound with the key: %r" % q)
    for fmt in ("json", "text"):
        rc, err = publish(key, 1000, fmt)
        t.eq(rc, 0, "published 1,000 %s messages (%s)" % (fmt, err[-200:]))
        frames = []
        try:
            for _ in range(1000):
                f = ws.recv(timeout=30)
                if f[0] == "close":
                    break
                frames.append(f)
        except (OSError, ConnectionError):
            pass
        t.eq(len(frames), 1000, "%s: all 1,000 arrive" % fmt)
        t.check(all(f[0] == 1 for f in frames), "%s: every frame is a text frame" % fmt)
        seqs = []
        raw = True
        for f in frames:
            body = f[1].decode("utf-8", "replace")
            try:
                seqs.append(seq_of(f[1], fmt))
            except (ValueError, KeyError, IndexError):
                seqs.append(None)
            if fmt == "json":
                raw = raw and body.startswith('{"message_type":"MerchantProcessingCharge","seq":') \
                    and "ess_offset" not in body and "ess_timestamp" not in body and body.endswith('"DATA_MANAGER"}')
            else:
                raw = raw and body.startswith("accountserver.MerchantProcessingCharge|timestamp: ") \
                    and "|offset:" not in body and body.endswith("seq: %d" % seqs[-1] if seqs[-1] is not None else "")
        t.eq(seqs, list(range(1000)), "%s: once each, in publishing order" % fmt)
        t.check(raw, "%s: bodies arrive raw (not enriched)" % fmt)
    try:
        extra = ws.recv(timeout=1)
    except (OSError, ConnectionError):
        extra = None
    t.eq(extra, None, "nothing more arrives")
    ws.close()


def poison(e):
    key = new_key("it4c-poi")
    _, path = create_es(e, key)
    ws = ws_open(e, path, timeout=30)
    t.check(wait_bound(key) is not None, "poison: queue bound")
    rc, err = publish(key, 5, "json", poison=True)
    t.eq(rc, 0, "published 5 + POISON (%s)" % err[-200:])
    frames, close = recv_close(ws, limit=100, timeout=30)
    t.eq(len(frames), 5, "the 5 messages before POISON arrive")
    t.eq(close, (1000, "The stream has been deleted"), "POISON closes 1000")
    ws.sock.close()


def delete(e):
    key = new_key("it4c-del")
    es_id, path = create_es(e, key)
    ws = ws_open(e, path, timeout=30)
    t.check(wait_bound(key) is not None, "delete: queue bound")
    st, _, _ = e.request("DELETE", "/event-stream/%d" % es_id)
    t.eq(st, 204, "DELETE answers 204")
    frames, close = recv_close(ws, limit=10, timeout=30)
    t.eq(close, (1000, "The stream has been deleted"), "DELETE closes the live client 1000")
    ws.sock.close()


def replace(e):
    key = new_key("it4c-rep")
    _, path = create_es(e, key)
    ws1 = ws_open(e, path, timeout=30)
    q1 = wait_bound(key)
    t.check(q1 is not None, "replace: first client's queue bound")
    ws2 = ws_open(e, path, timeout=30)
    _, close = recv_close(ws1, limit=10, timeout=30)
    t.eq(close, (1000, "replaced by a newer connection"), "a second client replaces the first")
    ws1.sock.close()
    q2 = wait_bound(key, not_in=(q1,))
    t.check(q2 is not None and q2 != q1, "the second client has its own queue")
    gone = None
    for _ in range(40):
        gone = q1 not in (bindings(key) or [q1])
        if gone:
            break
        time.sleep(0.25)
    t.check(gone, "the first client's queue is gone")
    rc, _ = publish(key, 10, "text")
    t.eq(rc, 0, "published 10")
    got = []
    try:
        for _ in range(10):
            got.append(seq_of(ws2.recv(timeout=30)[1], "text"))
    except (OSError, ConnectionError, ValueError, IndexError):
        pass
    t.eq(got, list(range(10)), "the second client gets the messages, once each")
    ws2.close()


def recv_seqs(ws, n, fmt):
    got = []
    try:
        for _ in range(n):
            f = ws.recv(timeout=30)
            if f[0] == "close":
                break
            got.append(seq_of(f[1], fmt))
    except (OSError, ConnectionError, ValueError, IndexError, KeyError):
        pass
    return got


def essd_amqp_ports(pid):
    """Local ports of essd's established TCP connections to the AMQP port."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(tab) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            p = row.split()
            if len(p) > 9 and p[9] in inodes and p[3] == "01" and int(p[2].rsplit(":", 1)[1], 16) == AMQP_PORT:
                ports.add(int(p[1].rsplit(":", 1)[1], 16))
    return ports


def reconnect(e):
    key = new_key("it4c-rec")
    _, path = create_es(e, key)
    ws = ws_open(e, path, timeout=30)
    q1 = wait_bound(key)
    t.check(q1 is not None, "reconnect: queue bound")
    publish(key, 5, "text")
    t.eq(recv_seqs(ws, 5, "text"), list(range(5)), "reconnect: messages before the connection loss")
    ports = essd_amqp_ports(e.proc.pid)
    r = broker_ctl("list_connections", "-q", "pid", "peer_port")
    pids = [ln.split("\t")[0] for ln in r.stdout.splitlines()
            if len(ln.split("\t")) == 2 and ln.split("\t")[1].strip().isdigit() and int(ln.split("\t")[1]) in ports]
    t.eq(len(pids), 1, "essd has one AMQP connection (%r)" % (ports,))
    if pids:
        broker_ctl("close_connection", pids[0], "ess classic test: forced close")
    q2 = wait_bound(key, not_in=(q1,))
    t.check(q2 is not None, "after the connection loss essd declared a new queue")
    publish(key, 5, "text")
    t.eq(recv_seqs(ws, 5, "text"), list(range(5)), "the client stayed connected and gets new messages")
    if q2:
        r = broker_ctl("delete_queue", q2)
        t.eq(r.returncode, 0, "deleted essd's queue behind its back (%s)" % r.stderr.strip()[-200:])
        q3 = wait_bound(key, not_in=(q1, q2))
        t.check(q3 is not None, "after a broker-side cancel essd declared a new queue")
        publish(key, 5, "json")
        t.eq(recv_seqs(ws, 5, "json"), list(range(5)), "the client stays connected and gets new messages")
    ws.close()


class RssSampler(threading.Thread):
    """Peak VmRSS of a process, sampled every 20 ms until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, vm_rss_kib(self.pid) or 0)
            self.samples += 1
            self.halt.wait(0.02)

    def stop(self):
        self.halt.set()
        self.join(5)
        return self.peak


def slow(e):
    key = new_key("it4c-slow")
    _, path = create_es(e, key)
    ws = ws_open(e, path, timeout=60, rcvbuf=16384)
    q = wait_bound(key)
    t.check(q is not None, "slow: queue bound")
    time.sleep(0.5)
    base = vm_rss_kib(e.proc.pid)
    sampler = RssSampler(e.proc.pid)
    sampler.start()
    pub = subprocess.Popen([PUBLISH, "--routing-key", key, "--count", str(SLOW_TOTAL), "--size", str(SLOW_SIZE)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, **BROKER_ENV))
    ready_max, unacked_max = 0, 0
    # Watch the queue while the client reads nothing (bounded: about 60 s),
    # until the publisher is done and the broker holds most of the messages.
    for _ in range(120):
        c = queue_counts(q) if q else None
        if c:
            ready_max = max(ready_max, c[0])
            unacked_max = max(unacked_max, c[1])
        if pub.poll() is not None and c and c[0] >= SLOW_TOTAL // 2:
            break
        time.sleep(0.25)
    time.sleep(1)  # what was in flight has reached essd
    peak = max(base, sampler.stop())
    samples = sampler.samples
    _, perr = pub.communicate(timeout=300)
    t.eq(pub.returncode, 0, "published %d messages (%s)" % (SLOW_TOTAL, perr.decode()[-200:]))
    print("classic slow client: baseline RSS %d KiB, peak %d KiB (+%d KiB), broker queue ready max %d,"
          " unacked max %d, %d samples" % (base, peak, peak - base, ready_max, unacked_max, samples))
    t.check(ready_max >= SLOW_TOTAL // 2, "the messages wait in the broker (ready up to %d)" % ready_max)
    t.check(unacked_max <= PREFETCH, "unacked stays within the prefetch window (%d)" % unacked_max)
    allowed = BUDGET // 1024 + PREFETCH * SLOW_SIZE // 1024 + OVERHEAD_KIB
    if sanitized(e.proc.pid):
        print("classic slow client: essd runs under AddressSanitizer: RSS bound not checked")
    else:
        t.check(peak - base <= allowed, "RSS stays within baseline + %d KiB: +%d KiB" % (allowed, peak - base))
    seqs = []
    try:
        for _ in range(SLOW_TOTAL):
            f = ws.recv(timeout=60)
            if f[0] == "close":
                break
            seqs.append(seq_of(f[1], "json"))
    except (OSError, ConnectionError, ValueError, KeyError):
        pass
    t.eq(len(seqs), SLOW_TOTAL, "after reading again the client gets all %d" % SLOW_TOTAL)
    t.check(seqs == list(range(SLOW_TOTAL)), "in order, once each")
    c = queue_counts(q)
    t.eq(c, (0, 0) if c is not None else None, "the queue is drained")
    ws.close()




def broker_down(d):
    """essd pointed at a port where no broker listens: a new connection closes 1013."""
    cfg = os.path.join(d, "down.yaml")
    with open(cfg, "w") as f:
        f.write("broker:\n  version: 1\n")
    port = free_port()
    e = Essd(config=cfg, env={"ESS_AMQP_URL": "amqp://guest:guest@127.0.0.1:%d/" % port})
    e.start(ready=False)  # it never becomes ready: no broker
    try:
        key = new_key("it4c-down")
        _, path = create_es(e, key)
        ws = ws_open(e, path, timeout=30)
        _, close = recv_close(ws, limit=10, timeout=30)
        t.check(close is not None and close[0] == 1013, "broker unreachable: 1013 (%r)" % (close,))
        ws.sock.close()
        st, _, _ = e.request("GET", "/health/ready")
        t.eq(st, 503, "not ready without the broker")
        t0 = time.time()
        t.eq(e.stop(), 0, "essd without a broker exits 0 on SIGTERM")
        print("classic: essd without a broker stopped in %.1f s" % (time.time() - t0))
        t.eq(sanitizer_report(e), "", "no sanitizer report (broker down)")
    finally:
        e.stop()


def leftovers():
    r = broker_ctl("list_queues", "-q", "name")
    names = set(r.stdout.split()) if r.returncode == 0 else None
    t.check(names is not None, "rabbitmqctl list_queues works")
    if names is None:
        return
    left = queues_seen & names
    for _ in range(40):
        if not left:
            break
        time.sleep(0.25)
        r = broker_ctl("list_queues", "-q", "name")
        left = queues_seen & set(r.stdout.split())
    t.check(len(queues_seen) >= 5, "the test saw essd's queues (%d)" % len(queues_seen))
    t.eq(sorted(left), [], "no queue of essd is left in the broker")
    b = broker_ctl("list_bindings", "-q", "routing_key")
    bound = set(b.stdout.split()) & set(keys_used) if b.returncode == 0 else None
    t.eq(bound, set(), "no binding of the test's routing keys is left")


def main():
    t.check(wait_broker(), "the shared broker is up")
    with tempfile.TemporaryDirectory(prefix="it4-classic-") as d:
        cfg = os.path.join(d, "classic.yaml")
        with open(cfg, "w") as f:
            f.write("broker:\n  version: 1\npublic:\n  outbound_budget_bytes: %d\n  stall_timeout_s: 300\n"
                    % BUDGET)
        with Essd(config=cfg) as e:
            ready = None
            for _ in range(80):
                ready, _, _ = e.request("GET", "/health/ready")
                if ready == 200:
                    break
                time.sleep(0.25)
            t.eq(ready, 200, "ready once the classic connection is up")
            delivery(e)
            poison(e)
            delete(e)
            replace(e)
            slow(e)
            reconnect(e)
            t.check(e.proc.poll() is None, "essd still running")
            t.eq(e.stop(), 0, "essd exits 0 on SIGTERM")
            t.eq(sanitizer_report(e), "", "no sanitizer report")
        leftovers()
        broker_down(d)
    t.done()


if __name__ == "__main__":
    main()
