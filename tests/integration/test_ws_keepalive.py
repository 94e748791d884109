"""Keepalive on the public listener (public.ping_interval_s, docs/websocket.md):
a connection from which nothing was heard for the interval is pinged; one
that stays silent for twice the interval plus 5 s is dropped; a client that
answers the pings (or sends anything) stays, and its messages keep coming;
0 turns pings off. Also: many connections established at once are all
pinged (essd's own sweep, not lws's per-connection timers)."""
import os
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import Checker, Essd, WebSocket, create_es, publish, unique, delete_stream  # noqa: E402

t = Checker()


class Silent:
    """A client that reads frames and never answers (a dead peer's stand-in)."""

    def __init__(self, ws):
        self.ws = ws
        self.sock = ws.sock
        self.buf = bytes(ws.buf[ws.pos:])

    def frame(self, timeout):
        """(opcode, payload), or None at end of input; socket.timeout if none in time."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                hl = 2 + (2 if n == 126 else 8 if n == 127 else 0)
                if len(self.buf) >= hl:
                    if n == 126:
                        n = struct.unpack("!H", self.buf[2:4])[0]
                    elif n == 127:
                        n = struct.unpack("!Q", self.buf[2:10])[0]
                    if len(self.buf) >= hl + n:
                        op, p = self.buf[0] & 0x0F, self.buf[hl:hl + n]
                        self.buf = self.buf[hl + n:]
                        return op, p
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk


def config(ping):
    d = tempfile.mkdtemp(prefix="ess-ka-")
    path = os.path.join(d, "essd.yaml")
    with open(path, "w") as f:
        f.write("public:\n  ping_interval_s: %d\n" % ping)
    return path


key = unique("itka")
publish(key, 1, declare=True)
e = Essd(config=config(1)).start()
try:
    # A silent client: pinged after about 1 s, dropped after 2 x 1 + 5 s.
    s = Silent(WebSocket("127.0.0.1", e.public_port, create_es(e, key)[1] + "?stream_from_ordinal=0"))
    # An answering client on the same stream: esslib's client answers pings.
    a = WebSocket("127.0.0.1", e.public_port, create_es(e, key)[1] + "?stream_from_ordinal=0")
    t.eq(a.recv(timeout=10)[0], 1, "the answering client gets the stored message")
    got, stop = [], threading.Event()

    def answer():
        # esslib's recv answers each ping while it waits for data.
        while not stop.is_set():
            try:
                got.append(a.recv(timeout=0.5))
            except socket.timeout:
                continue
            except (OSError, ConnectionError) as ex:
                got.append(("error", repr(ex)))
                return

    reader = threading.Thread(target=answer)
    reader.start()
    t0 = time.time()
    pings, data, end = 0, 0, None
    while time.time() - t0 < 20:
        try:
            f = s.frame(timeout=20)
        except socket.timeout:
            break
        if f is None:
            end = time.time() - t0
            break
        if f[0] == 0x9:
            pings += 1
        elif f[0] in (1, 2):
            data += 1
    t.eq(data, 1, "the silent client got the stored message")
    t.check(pings >= 1, "the silent client was pinged (%d pings)" % pings)
    t.check(end is not None, "the silent client was dropped (after %s s)" % end)
    # Nothing was heard from it since the upgrade: 2 x 1 + 5 s, give or take
    # the once-a-second sweep. It cannot be dropped earlier than that.
    t.check(end is None or end >= 5.0, "not dropped before twice the interval + 5 s (%s s)" % end)
    s.sock.close()

    # The answering client is still there, past the hang-up time, and live.
    publish(key, 1)
    for _ in range(100):
        if got:
            break
        time.sleep(0.1)
    stop.set()
    reader.join(10)
    t.eq([g[0] for g in got], [1], "the client that answered the pings still receives (%r)" % (got[:2],))
    a.close()

    # Many at once: every one is pinged within a few seconds.
    many = [Silent(WebSocket("127.0.0.1", e.public_port, create_es(e, key)[1])) for _ in range(200)]
    pinged = 0
    for c in many:
        try:
            f = c.frame(timeout=5)
        except socket.timeout:
            f = None
        pinged += bool(f and f[0] == 0x9)
    t.eq(pinged, 200, "200 silent connections opened at once were each pinged")
    for c in many:
        c.sock.close()
    t.eq(e.json("GET", "/health/live")[0], 200, "alive")
finally:
    t.eq(e.stop(), 0, "essd stops cleanly")

# ping_interval_s: 0: no pings, no drop.
e = Essd(config=config(0)).start()
try:
    s = Silent(WebSocket("127.0.0.1", e.public_port, create_es(e, key)[1]))
    try:
        f = s.frame(timeout=3)
    except socket.timeout:
        f = "nothing"
    t.eq(f, "nothing", "with ping_interval_s 0 nothing is sent to an idle client")
    s.sock.close()
finally:
    t.eq(e.stop(), 0, "essd stops cleanly (pings off)")
    delete_stream(key)
t.done()
