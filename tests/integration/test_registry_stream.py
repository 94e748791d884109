"""The shared registry (registry.backend: stream, issue 14 item 1): three
essd replicas on the one shared broker, each with its own empty database,
following one registry stream (a random name per test, deleted at the end).

- 200 concurrent POSTs spread over the three: 200 distinct ids and uuids,
  and every replica lists all 200;
- POST on A, then at once a WebSocket for it on B: B reads the registry to
  its tail and serves it (not 1000 "the event stream is unknown");
- DELETE on A closes the socket on B (1000 "The stream has been deleted");
- a second connection on B replaces the one on A (1000 "replaced by a
  newer connection"), B keeps receiving;
- a restarted replica replays only the tail (its log names the offset it
  resumes at, and its applied-records counter counts only the new ones);
- a fresh replica with an empty database rebuilds every row from a
  snapshot after retention removed the early segments of the log;
- the registry stream deleted: POST and DELETE answer 503 JSON,
  /health/ready reports registry false, and a live WebSocket keeps
  receiving;
- the broker connection cut while the registry's publisher and follower
  are being located: essd neither crashes nor stays unusable.

The latencies (DELETE -> close, claim -> replace) are printed, not
asserted: the machine is shared.
"""
import concurrent.futures
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (STREAM_PORT, Checker, Essd, StreamAdmin, metrics, recv_close,  # noqa: E402
                    sanitizer_report, unique, wait_broker, ws_open)

t = Checker()


class Admin:
    """StreamAdmin calls, each on a fresh connection (an idle one may be
    closed by the broker's heartbeat while a test waits)."""

    def _do(self, name, *args):
        a = StreamAdmin()
        try:
            return getattr(a, name)(*args)
        finally:
            a.close()

    def create(self, stream):
        return self._do("create", stream)

    def delete(self, stream):
        return self._do("delete", stream)

    def publish(self, stream, bodies):
        return self._do("publish", stream, bodies)

    def close(self):
        pass


def replica(stream, workdir=None, extra=None):
    env = {"ESS_REGISTRY_BACKEND": "stream", "ESS_REGISTRY_STREAM": stream}
    cfg = None
    if extra:
        wd = workdir or __import__("tempfile").mkdtemp(prefix="ess-it-reg-")
        cfg = os.path.join(wd, "essd.yaml")
        with open(cfg, "w") as f:
            f.write("registry:\n" + "".join("  %s: %s\n" % kv for kv in extra.items()))
        workdir = wd
    return Essd(env=env, config=cfg, workdir=workdir)


def post(e, key):
    st, body = e.json("POST", "/event-stream/", {"routing_key": key})
    return st, body


def uuid_of(body):
    return body["location"].rsplit("/", 1)[1]


def listed(e):
    st, body = e.json("GET", "/event-stream/")
    if st != 200:
        return None
    return {(x["id"], uuid_of(x)) for x in body["event_streams"]}


def wait_for(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def first_frame(ws, timeout=10):
    try:
        f = ws.recv(timeout=timeout)
    except (OSError, ConnectionError) as x:
        return ("error", str(x))
    return f


def concurrent_posts(reps):
    keys = ["it-reg-%d" % i for i in range(200)]

    def one(i):
        return post(reps[i % 3], keys[i])

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(one, range(200)))
    print("  200 concurrent POSTs over 3 replicas: %.2f s" % (time.time() - t0))
    statuses = [st for st, _ in results]
    t.eq(statuses.count(201), 200, "200 concurrent POSTs over 3 replicas: all 201 (%r)" %
         sorted(set(statuses)))
    ids = {b["id"] for st, b in results if st == 201}
    uuids = {uuid_of(b) for st, b in results if st == 201}
    t.eq(len(ids), 200, "200 distinct ids")
    t.eq(len(uuids), 200, "200 distinct uuids")
    t.check(all(isinstance(i, int) and i >= 1 for i in ids), "ids are positive integers")
    want = {(b["id"], uuid_of(b)) for st, b in results if st == 201}
    for n, e in enumerate(reps):
        got = wait_for(lambda: want <= (listed(e) or set()) or None)
        t.check(bool(got), "replica %d lists all 200 (has %d)" % (n, len(listed(e) or ())))
    # Ids increase in the order the broker stored the records: a later POST
    # on the same replica gets a larger id.
    st1, b1 = post(reps[0], "it-reg-order")
    st2, b2 = post(reps[0], "it-reg-order")
    t.check(st1 == st2 == 201 and b2["id"] > b1["id"] > max(ids), "ids increase (%r, %r)" % (b1, b2))
    return want


def clients_that_leave(reps):
    """POSTs whose clients close before the answer: the replica neither
    crashes nor leaks the wait, and the rows exist (the records were written)."""
    import socket
    before = len(listed(reps[0]))
    body = b'{"routing_key": "it-reg-gone"}'
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", reps[0].internal_port), timeout=5)
        s.sendall(b"POST /event-stream/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        s.close()
    t.check(wait_for(lambda: len(listed(reps[0])) >= before + 1), "gone: the replica still answers")
    st, _ = post(reps[0], "it-reg-after-gone")
    t.eq(st, 201, "gone: POST after 30 abandoned ones")


def read_your_write(reps, adm, stream):
    t.eq(adm.publish(stream, [b"first", b"second"]), 1, "ryw: published to the event stream")
    st, body = post(reps[0], stream)
    t.eq(st, 201, "ryw: POST on A")
    ws = ws_open(reps[1], "/event-stream/%s?stream_from_ordinal=0" % uuid_of(body))
    f = first_frame(ws)
    t.check(f[0] == 1 and f[1].startswith(b"first|offset: 0|"),
            "ryw: WebSocket on B at once gets the messages, not 1000 unknown (%r)" % (f,))
    ws.sock.close()
    # A uuid nobody created is still unknown (after the tail read).
    ws = ws_open(reps[1], "/event-stream/AAAAAAAAAAAAAAAAAAAAAA")
    frames, close = recv_close(ws, limit=5, timeout=15)
    t.eq(close, (1000, "the event stream is unknown"), "ryw: an unknown uuid is still 1000 unknown")
    ws.sock.close()
    return body


def delete_across(reps, adm, stream):
    t.eq(adm.publish(stream, [b"one"]), 1, "delete: published")
    st, body = post(reps[0], stream)
    t.eq(st, 201, "delete: POST on A")
    ws = ws_open(reps[1], "/event-stream/%s?stream_from_ordinal=0" % uuid_of(body))
    f = first_frame(ws)
    t.check(f[0] == 1, "delete: B serves the event stream (%r)" % (f,))
    t0 = time.time()
    st, _ = reps[0].json("DELETE", "/event-stream/%d" % body["id"])
    t.eq(st, 204, "delete: DELETE on A")
    frames, close = recv_close(ws, limit=100, timeout=10)
    dt = time.time() - t0
    t.eq(close, (1000, "The stream has been deleted"), "delete: the socket on B is closed")
    print("  DELETE on A -> close on B: %.0f ms" % (dt * 1000))
    ws.sock.close()
    for n, e in enumerate(reps):
        t.check(wait_for(lambda: body["id"] not in {i for i, _ in listed(e) or ()}),
                "delete: replica %d no longer lists it" % n)
    st, _ = reps[2].json("DELETE", "/event-stream/%d" % body["id"])
    t.eq(st, 404, "delete: a second DELETE on C is 404")


def replace_across(reps, adm, stream):
    t.eq(adm.publish(stream, [b"one", b"two"]), 1, "replace: published")
    st, body = post(reps[0], stream)
    t.eq(st, 201, "replace: POST on A")
    path = "/event-stream/%s?stream_from_ordinal=0" % uuid_of(body)
    ws_a = ws_open(reps[0], path)
    t.check(first_frame(ws_a)[0] == 1, "replace: A serves the first connection")
    time.sleep(1.0)  # A's own claim is read back
    t0 = time.time()
    ws_b = ws_open(reps[1], path)
    t.check(first_frame(ws_b)[0] == 1, "replace: B serves the second connection")
    frames, close = recv_close(ws_a, limit=100, timeout=10)
    dt = time.time() - t0
    t.eq(close, (1000, "replaced by a newer connection"), "replace: the connection on A is replaced")
    print("  connection on B -> close on A: %.0f ms" % (dt * 1000))
    t.eq(adm.publish(stream, [b"third"]), 1, "replace: published more")
    got = []
    for _ in range(5):
        f = first_frame(ws_b, timeout=10)
        got.append(f)
        if f[0] == 1 and f[1].startswith(b"third|"):
            break
    t.check(any(f[0] == 1 and f[1].startswith(b"third|") for f in got),
            "replace: B stays live (%r)" % (got[-1:],))
    ws_b.sock.close()
    ws_a.sock.close()


def unavailable(reps, adm, regstream, stream):
    st, body = post(reps[0], stream)
    t.eq(st, 201, "unavailable: POST before")
    ws = ws_open(reps[0], "/event-stream/%s" % uuid_of(body))
    time.sleep(0.5)
    t.eq(adm.delete(regstream), 1, "unavailable: the registry stream deleted")
    ok = wait_for(lambda: reps[0].json("GET", "/health/ready")[1]["checks"]["registry"] is False)
    st, rb = reps[0].json("GET", "/health/ready")
    t.check(bool(ok) and st == 503, "unavailable: /health/ready reports registry false (%s %r)" % (st, rb))
    st, b = post(reps[0], stream)
    t.eq((st, b), (503, {"detail": "Event stream registry unavailable"}), "unavailable: POST is 503 JSON")
    st, b = reps[1].json("DELETE", "/event-stream/%d" % body["id"])
    t.eq((st, b), (503, {"detail": "Event stream registry unavailable"}),
         "unavailable: DELETE is 503 JSON")
    t.eq(adm.publish(stream, [b"still-flowing"]), 1, "unavailable: published to the event stream")
    got = None
    for _ in range(20):
        f = first_frame(ws, timeout=10)
        if f[0] == 1 and f[1].startswith(b"still-flowing|"):
            got = f
            break
        if f[0] != 1:
            break
    t.check(got is not None, "unavailable: the live WebSocket keeps flowing")
    st, lst = reps[0].json("GET", "/event-stream/")
    t.check(st == 200 and any(x["id"] == body["id"] for x in lst["event_streams"]),
            "unavailable: the list still answers from the local view")
    ws.sock.close()


def restart_tail(reps, stream_name):
    a = reps[2]
    before = len(listed(a))
    a.stop()
    for i in range(3):
        t.eq(post(reps[0], "it-reg-while-down")[0], 201, "restart: POST while C is down")
    a.start()
    log = a.output()
    m = re.findall(r"registry: following \S+ from offset (\d+) \(the local view has applied up to (\d+)",
                   log)
    t.check(bool(m) and int(m[-1][0]) > 200, "restart: C resumes at its applied offset + 1 (%r)" % (m[-1:],))
    t.check(wait_for(lambda: len(listed(a)) == before + 3), "restart: C lists the 3 new rows")
    n = metrics(a).get("ess_registry_records_applied_total", 0)
    t.check(3 <= n <= 10, "restart: C applied only the tail (%d records, not %d)" % (n, before + 3))


def rebuild_after_retention():
    """A small log: 4 KB segments, 12 KB kept, a snapshot every 20 records."""
    stream = unique("it-reg-snap")
    small = {"max_length_bytes": 12000, "max_segment_size_bytes": 4000, "snapshot_every": 20}
    a = replica(stream, extra=small)
    b = stale = None
    adm = Admin()
    try:
        a.start()
        # A replica that applies the start of the log, then is down while
        # retention removes what it has not read.
        stale = replica(stream, extra=small)
        stale.start()
        for i in range(5):
            post(a, "it-reg-snap-early-%d" % i)
        t.check(wait_for(lambda: len(listed(stale) or ()) == 5), "rebuild: the stale replica has 5 rows")
        stale.stop()
        rows = []
        for i in range(300):
            st, body = post(a, "it-reg-snap-%d" % i)
            if st == 201:
                rows.append(body)
        t.eq(len(rows), 300, "rebuild: 300 POSTs")
        for body in rows[:250]:
            a.json("DELETE", "/event-stream/%d" % body["id"])
        want = listed(a)
        t.eq(len(want), 55, "rebuild: 55 rows live (the 5 early ones and 50 of 300)")
        # Retention runs when a segment rolls over: write more to roll one.
        for i in range(40):
            post(a, "it-reg-snap-more-%d" % i)
        want = listed(a)
        import esslib
        first = esslib.cat_read(stream, 1)
        t.check(bool(first) and first[0]["offset"] > 0,
                "rebuild: retention removed the early records (first offset %r)" %
                (first[0]["offset"] if first else None))
        b = replica(stream, extra=small)
        b.start()
        got = wait_for(lambda: listed(b) == want or None, timeout=20)
        t.check(bool(got), "rebuild: a fresh replica has every live row (%d of %d)" %
                (len(listed(b) or ()), len(want)))
        t.check("rebuilt the view from a snapshot" in b.output(), "rebuild: it used a snapshot")
        stale.start()
        got = wait_for(lambda: listed(stale) == want or None, timeout=20)
        t.check(bool(got), "rebuild: a replica down while its next records were removed catches up "
                "(%d of %d rows)" % (len(listed(stale) or ()), len(want)))
        t.check("records may have been removed by retention" in stale.output(),
                "rebuild: it noticed the gap after its applied offset")
        stale.stop()
        want = listed(a)
        st, body = post(b, "it-reg-after-rebuild")
        t.check(st == 201 and body["id"] > max(i for i, _ in want), "rebuild: the fresh replica creates")
    finally:
        for e in (a, b, stale):
            if e is not None:
                e.stop()
                t.eq(sanitizer_report(e), "", "rebuild: no sanitizer report")
        adm.delete(stream)
        adm.delete(stream + "-claims")
        adm.close()


class FreezeProxy:
    """A TCP proxy to the stream port that, once, stops relaying at the
    first Metadata request after a Create (the registry's start-up: the
    publisher and the follower being located) and cuts every connection
    after `hold` seconds; later connections are relayed."""

    def __init__(self, hold=2.0):
        import socket
        import struct
        import threading
        self.socket, self.struct, self.threading = socket, struct, threading
        self.hold = hold
        self.frozen = self.done = self.created = False
        self.conns = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _pipe(self, src, dst, c2s):
        buf = b""
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if not c2s:
                    if not self.frozen:
                        dst.sendall(d)
                    continue
                buf += d
                out = b""
                while len(buf) >= 4 and len(buf) >= 4 + self.struct.unpack(">I", buf[:4])[0]:
                    n = self.struct.unpack(">I", buf[:4])[0]
                    f, buf = buf[:4 + n], buf[4 + n:]
                    key = self.struct.unpack(">H", f[4:6])[0] & 0x7fff
                    if key == 0x000d:
                        self.created = True
                    elif key == 0x000f and self.created and not self.done:
                        self.frozen = True
                    if not self.frozen:
                        out += f
                if out:
                    dst.sendall(out)
        except OSError:
            pass

    def _serve(self):
        while True:
            try:
                c, _ = self.ls.accept()
                u = self.socket.create_connection(("127.0.0.1", STREAM_PORT))
            except OSError:
                return
            self.conns += [c, u]
            self.threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
            self.threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()

    def cut_when_frozen(self):
        deadline = time.time() + 20
        while not self.frozen and time.time() < deadline:
            time.sleep(0.02)
        was = self.frozen
        time.sleep(self.hold)
        for c in self.conns:
            try:
                c.shutdown(self.socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns = []
        self.done = True
        self.frozen = False
        return was

    def close(self):
        self.ls.close()


def startup_cut():
    """The broker connection lost while the registry's publisher and
    follower are being located (Metadata unanswered): essd must not crash
    (it did: a use-after-free in the stream client's failed Metadata
    requests) and must become usable once the broker is back."""
    stream = unique("it-reg-cut")
    proxy = FreezeProxy()
    e = Essd(env={"ESS_REGISTRY_BACKEND": "stream", "ESS_REGISTRY_STREAM": stream,
                  "ESS_STREAM_PORT": str(proxy.port)})
    adm = Admin()
    try:
        e.start(wait=False)
        t.check(proxy.cut_when_frozen(), "cut: the registry's Metadata request was held")
        ok = wait_for(lambda: e.proc.poll() is None and post(e, "it-reg-cut")[0] == 201, timeout=20)
        t.check(e.proc.poll() is None, "cut: essd is still running (%r)" % (e.proc.returncode,))
        t.check(bool(ok), "cut: POST works once the broker is reachable again")
    finally:
        e.stop()
        t.eq(sanitizer_report(e), "", "cut: no sanitizer report")
        proxy.close()
        adm.delete(stream)
        adm.delete(stream + "-claims")


def main():
    t.check(wait_broker(), "the shared broker is up")
    regstream = unique("it-reg")
    streams = {k: unique("it-reg-es-" + k) for k in ("ryw", "del", "repl", "down")}
    adm = Admin()
    reps = []
    try:
        for k in streams.values():
            t.eq(adm.create(k), 1, "create event stream " + k)
        reps = [replica(regstream).start() for _ in range(3)]
        concurrent_posts(reps)
        clients_that_leave(reps)
        read_your_write(reps, adm, streams["ryw"])
        delete_across(reps, adm, streams["del"])
        replace_across(reps, adm, streams["repl"])
        restart_tail(reps, regstream)
        unavailable(reps, adm, regstream, streams["down"])
        for e in reps:
            t.eq(e.stop(), 0, "essd exits 0 on SIGTERM")
            t.eq(sanitizer_report(e), "", "no sanitizer report")
        rebuild_after_retention()
        startup_cut()
    finally:
        for e in reps:
            e.stop()
        for k in list(streams.values()) + [regstream, regstream + "-claims"]:
            adm.delete(k)
        adm.close()
    t.done()


if __name__ == "__main__":
    main()
