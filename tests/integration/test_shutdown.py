"""SIGTERM with live WebSocket clients and work in flight.

- Every live client gets close 1001 at once, including clients whose event
  stream ids collide in the gateway's index (ids 1 and 4097: the index has
  4096 buckets; before the fix only the first session of a bucket was closed
  and the other waited out the grace period).
- An internal API request in flight (headers read, body not yet complete)
  is answered, not dropped: it gets a complete HTTP response (503, "Shutting
  down") on its open connection while essd drains.
- No new work is accepted: a new WebSocket upgrade and a new API request
  are refused (connection refused once the listener is closed, or 1001/503
  if they slip in before).
- essd exits 0 within the grace period, once the in-flight request is done.
"""
import os
import signal
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import Checker, Essd, WebSocket, create_es, delete_stream, publish, unique  # noqa: E402

t = Checker()
key = unique("itsd")
publish(key, 3, declare=True)

# First run: create event stream 1, then move the id sequence so that the
# next one is 4097 (same bucket modulo 4096).
e = Essd(env={}).start()
try:
    first_id, first_path = create_es(e, key)
    t.eq(first_id, 1, "first event stream id")
finally:
    t.eq(e.stop(), 0, "first run stops")
db = sqlite3.connect(e.db)
db.execute("UPDATE sqlite_sequence SET seq = 4096 WHERE name = 'event_stream'")
db.commit()
db.close()

e2 = Essd(env={"ESS_LOG_LEVEL": "info"}, db=e.db, workdir=e.workdir)
e2.start()
try:
    paths = [first_path]
    ids = [first_id]
    for _ in range(2):
        es_id, path = create_es(e2, key)
        ids.append(es_id)
        paths.append(path)
    t.eq(ids[1], 4097, "second event stream id collides with the first modulo 4096")
    clients = []
    for path in paths:
        ws = WebSocket("127.0.0.1", e2.public_port, path + "?stream_from_ordinal=0")
        for _ in range(3):
            t.eq(ws.recv(timeout=10)[0], 1, "replayed message")
        clients.append(ws)

    # An API request in flight: headers and half of the body sent.
    body = b'{"routing_key": "%s"}' % key.encode()
    inflight = socket.create_connection(("127.0.0.1", e2.internal_port), timeout=10)
    inflight.sendall(b"POST /event-stream/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
    time.sleep(0.3)  # let essd read the headers

    start = time.time()
    e2.proc.send_signal(signal.SIGTERM)
    for i, ws in enumerate(clients):
        try:
            fr = ws.recv(timeout=10)
        except (OSError, ConnectionError) as ex:
            fr = ("error", type(ex).__name__)
        took = time.time() - start
        t.eq(fr[:2], ("close", 1001), "client of event stream %d closed 1001 on SIGTERM" % ids[i])
        t.check(took < 3, "client of event stream %d closed promptly (%.2fs)" % (ids[i], took))
        ws.close()

    # New work is refused while the in-flight request holds the drain open.
    t.check(e2.proc.poll() is None, "essd still draining while a request is in flight")
    try:
        late = WebSocket("127.0.0.1", e2.public_port, paths[0], timeout=5)
        fr = late.recv(timeout=5)
        t.eq(fr[:2], ("close", 1001), "a new WebSocket after SIGTERM is closed 1001")
        late.close()
    except (OSError, ConnectionError) as ex:
        t.check(True, "a new WebSocket after SIGTERM is refused (%s)" % type(ex).__name__)
    try:
        st, _, data = e2.request("GET", "/event-stream/", timeout=5)
        t.eq(st, 503, "a new API request after SIGTERM gets 503 (%r)" % data[:60])
    except (OSError, ConnectionError) as ex:
        t.check(True, "a new API request after SIGTERM is refused (%s)" % type(ex).__name__)

    # The in-flight request completes and is answered on its connection.
    inflight.sendall(body[5:])
    resp = b""
    deadline = time.time() + 10
    while time.time() < deadline and b"\r\n\r\n" not in resp:
        chunk = inflight.recv(4096)
        if not chunk:
            break
        resp += chunk
    status_line = resp.split(b"\r\n", 1)[0]
    t.check(status_line.startswith(b"HTTP/1.1 "), "in-flight request answered (%r)" % status_line)
    t.check(b" 503" in status_line or b" 201" in status_line,
            "in-flight request gets a real status (%r)" % status_line)
    inflight.close()

    rc = e2.proc.wait(15)
    t.eq(rc, 0, "exit status 0")
    t.check(time.time() - start < 10, "stopped within the grace period (%.2fs)" % (time.time() - start))
    out = e2.output()
    t.check("essd stopped" in out, "shutdown logged")
    t.check("grace period over" not in out, "no request or socket was left to the grace period")
finally:
    if e2.proc is not None and e2.proc.poll() is None:
        e2.stop(signal.SIGKILL)
    delete_stream(key)
t.done()
