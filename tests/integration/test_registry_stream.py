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
  receiving.

The latencies (DELETE -> close, claim -> replace) are printed, not
asserted: the machine is shared.
"""
import concurrent.futures
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (Checker, Essd, StreamAdmin, metrics, recv_close, sanitizer_report,  # noqa: E402
                    unique, wait_broker, ws_open)

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

    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(one, range(200)))
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
    b = None
    adm = Admin()
    try:
        a.start()
        rows = []
        for i in range(300):
            st, body = post(a, "it-reg-snap-%d" % i)
            if st == 201:
                rows.append(body)
        t.eq(len(rows), 300, "rebuild: 300 POSTs")
        for body in rows[:250]:
            a.json("DELETE", "/event-stream/%d" % body["id"])
        want = listed(a)
        t.eq(len(want), 50, "rebuild: 50 rows live")
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
        st, body = post(b, "it-reg-after-rebuild")
        t.check(st == 201 and body["id"] > max(i for i, _ in want), "rebuild: the fresh replica creates")
    finally:
        for e in (a, b):
            if e is not None:
                e.stop()
                t.eq(sanitizer_report(e), "", "rebuild: no sanitizer report")
        adm.delete(stream)
        adm.delete(stream + "-claims")
        adm.close()


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
    finally:
        for e in reps:
            e.stop()
        for k in list(streams.values()) + [regstream, regstream + "-claims"]:
            adm.delete(k)
        adm.close()
    t.done()


if __name__ == "__main__":
    main()
