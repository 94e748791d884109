"""Resuming across an essd restart (issue 14, item 3).

- SIGTERM under a live client reading a replay: the client gets close 1001
  whose reason carries the last offset handed to its socket,
  "the server is shutting down; last delivered offset N (resume with
  stream_from_ordinal=N+1)", and the last frame it received is offset N.
  A client that had received nothing gets "...; nothing delivered".
- A new essd on the same database, and a client resuming from N+1: the two
  connections together hold every offset of the stream exactly once.
- ess-listen --reconnect, reading a stream that is being published at
  500 msg/s, across a SIGTERM and restart of essd on the same ports: it
  reconnects by itself and ends with every offset exactly once (compared
  with what ess-cat reads from the stream), exit status 0.

Fails on a build whose 1001 reason is the bare "the server is shutting
down" (checked against main before the change).
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (BROKER_ENV, LISTEN, PUBLISH, Checker, Essd, cat_read, create_es,  # noqa: E402
                    publish, recv_close, unique, wait_broker, ws_open)

t = Checker()
wait_broker()
REASON = re.compile(r"^the server is shutting down; last delivered offset (\d+) "
                    r"\(resume with stream_from_ordinal=(\d+)\)$")


def frame_offset(payload):
    return json.loads(payload.decode("utf-8"))["ess_offset"]


# --- 1. the 1001 reason and a resume on a new essd -------------------------
key = unique("itrs")
TOTAL = 20000
publish(key, TOTAL, declare=True)
stored = [m["offset"] for m in cat_read(key, TOTAL)]
t.eq(len(stored), TOTAL, "messages in the stream")

e1 = Essd(env={}).start()
try:
    _, path = create_es(e1, key)
    _, idle_path = create_es(e1, key)  # one live connection per event stream
    # A small receive buffer: the client is still in the middle of the
    # replay when essd stops.
    ws = ws_open(e1, path + "?stream_from_ordinal=0", rcvbuf=16384)
    idle = ws_open(e1, idle_path)  # waits for new messages, gets none
    first = [frame_offset(ws.recv(timeout=10)[1]) for _ in range(100)]
    t.eq(e1.stop(), 0, "essd exits 0 on SIGTERM")
    rest, close = recv_close(ws)
    got1 = first + [frame_offset(f[1]) for f in rest]
    t.check(close is not None and close[0] == 1001, "close 1001: %r" % (close,))
    m = REASON.match(close[1]) if close else None
    if t.check(m is not None, "the 1001 reason carries the offset: %r" % (close,)):
        n = int(m.group(1))
        t.eq(int(m.group(2)), n + 1, "resume ordinal is N+1")
        t.eq(got1[-1], n, "the last frame received is offset N")
        t.check(n < stored[-1], "stopped in the middle of the replay (N=%d)" % n)
    _, iclose = recv_close(idle)
    t.eq(iclose, (1001, "the server is shutting down; nothing delivered"),
         "a client with nothing delivered")
finally:
    e1.stop()

if m is not None:
    e2 = Essd(env={}, db=e1.db, workdir=e1.workdir).start()
    try:
        ws = ws_open(e2, "%s?stream_from_ordinal=%d" % (path, n + 1))
        got2 = []
        while not got2 or got2[-1] < stored[-1]:
            got2.append(frame_offset(ws.recv(timeout=10)[1]))
        ws.close()
        both = got1 + got2
        t.eq(len(both), len(set(both)), "no offset twice across the two connections")
        t.check(sorted(both) == stored, "every offset of the stream, across the restart: "
                "%d received, %d stored" % (len(both), len(stored)))
    finally:
        t.eq(e2.stop(), 0, "second essd exits 0")

# --- 2. ess-listen --reconnect across an essd restart ----------------------
key = unique("itrl")
COUNT = 3000
publish(key, 1, declare=True)
e3 = Essd(env={}).start()
listen = pub = None
try:
    _, path = create_es(e3, key)
    loc = "ws://127.0.0.1:%d%s" % (e3.public_port, path)
    out = open(os.path.join(e3.workdir, "listen.out"), "wb")
    err = open(os.path.join(e3.workdir, "listen.err"), "wb")
    listen = subprocess.Popen([LISTEN, loc, "-o", "0", "--count", str(COUNT + 1), "--reconnect"],
                              stdout=out, stderr=err)
    pub = subprocess.Popen([PUBLISH, "--routing-key", key, "--count", str(COUNT), "--format", "json",
                            "--rate", "500"], env=dict(os.environ, **BROKER_ENV),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    t.eq(e3.stop(), 0, "essd exits 0 on SIGTERM under ess-listen")
    e4 = Essd(env={}, db=e3.db, workdir=e3.workdir)
    e4.public_port, e4.internal_port = e3.public_port, e3.internal_port
    e4.log_path = os.path.join(e3.workdir, "essd2.out")
    e4.start()
    try:
        t.eq(pub.wait(60), 0, "ess-publish exit status")
        st = listen.wait(60)
        t.eq(st, 0, "ess-listen --reconnect exit status")
    finally:
        t.eq(e4.stop(), 0, "restarted essd exits 0")
    out.close()
    err.close()
    with open(out.name, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    with open(err.name, encoding="utf-8", errors="replace") as f:
        errtext = f.read()
    offs = [int(x.split()[0][7:]) for x in lines if x.startswith("offset=")]
    stored = [mm["offset"] for mm in cat_read(key, COUNT + 1)]
    t.check("code=1001" in errtext and "reconnecting" in errtext,
            "ess-listen saw the 1001 and reconnected: %r" % errtext[-400:])
    t.eq(len(offs), len(set(offs)), "ess-listen: no offset twice")
    t.check(offs == stored, "ess-listen: every offset once, in order, across the restart: "
            "%d printed, %d stored, missing %r" % (len(offs), len(stored),
                                                   sorted(set(stored) - set(offs))[:10]))
finally:
    for p in (listen, pub):
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)
    e3.stop()

t.done()
