"""SIGTERM with live WebSocket clients: each gets close 1001, in-flight
API requests finish, and essd exits 0 within the grace period; after the
signal no new work is accepted."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import Checker, Essd, WebSocket, create_es, delete_stream, publish, unique  # noqa: E402

t = Checker()
key = unique("itsd")
publish(key, 3, declare=True)
e = Essd(env={}).start()
try:
    clients = []
    for _ in range(3):
        _, path = create_es(e, key)
        ws = WebSocket("127.0.0.1", e.public_port, path + "?stream_from_ordinal=0")
        for _ in range(3):
            t.eq(ws.recv(timeout=10)[0], 1, "replayed message")
        clients.append(ws)
    start = time.time()
    e.proc.send_signal(signal.SIGTERM)
    for ws in clients:
        fr = ws.recv(timeout=10)
        t.eq(fr[:2], ("close", 1001), "live client closed 1001 on SIGTERM")
        ws.close()
    rc = e.proc.wait(15)
    t.eq(rc, 0, "exit status 0")
    t.check(time.time() - start < 10, "stopped within the grace period (%.2fs)" % (time.time() - start))
    out = e.output()
    t.check("essd stopped" in out, "shutdown logged")
finally:
    if e.proc.poll() is None:
        e.stop(signal.SIGKILL)
    delete_stream(key)
t.done()
