"""permessage-deflate (issue 15 item 4), end to end against the shared broker.

With public.compression on, a raw-socket client offering permessage-deflate
gets `Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;
client_no_context_takeover`, and after inflating every RSV1 frame (each alone:
no context takeover) exactly the frames a client not offering it gets (plain
frames, no header): for solo sessions (the default hook) and for two sessions
in a shared subscription (a per_stream = false hook). A compressed client
message (RSV1) does not close the connection. An offer asking for
server_max_window_bits=10 is not answered. With compression off no header is
sent and the frames are plain.
"""
import os
import shutil
import struct
import sys
import tempfile
import threading
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (SOURCE, Checker, Essd, create_es, delete_stream, metrics,  # noqa: E402
                    publish, unique)
from wsdeflate import Client  # noqa: E402

t = Checker()
work = tempfile.mkdtemp(prefix="ess-deflate-")
lua = os.path.join(work, "lua")
shutil.copytree(os.path.join(SOURCE, "lua"), lua)
os.makedirs(os.path.join(lua, "deflatetest"))
with open(os.path.join(lua, "deflatetest", "shared.lua"), "w") as f:
    f.write('return { per_stream = false, enrich = require("ess.enrich").enrich }\n')
with open(os.path.join(lua, "deflatetest", "solo.lua"), "w") as f:
    f.write('return { per_stream = true, enrich = require("ess.enrich").enrich }\n')
OFFER = "permessage-deflate; client_max_window_bits"


def inflate(frames):
    res = []
    for op, rsv1, p in frames:
        if op == "control":
            res.append((op, rsv1, p))
            continue
        if rsv1:
            d = zlib.decompressobj(-15)  # a fresh one per message: no context takeover
            p = d.decompress(p + b"\x00\x00\xff\xff")
        res.append((op, p))
    return res


def config(name, compression, enrich=None):
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        f.write("public:\n  compression: %s\n" % ("on" if compression else "off"))
        f.write("lua:\n  path: %s\n" % lua)
        if enrich:
            f.write("  enrich: \"%s\"\n" % enrich)
    return path


def read_all(clients, n):
    res = [None] * len(clients)

    def run(i):
        try:
            res[i] = clients[i].frames(n)
        except Exception as x:  # noqa: BLE001 - reported as a short read
            print("reader %d: %r" % (i, x))
            res[i] = []
    th = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for x in th:
        x.start()
    for x in th:
        x.join(300)
    return res


def scenario(name, compression, enrich, nz, nplain, count=300):
    stream = unique("it15-dfl")
    publish(stream, 0, declare=True)
    try:
        with Essd(config=config(name, compression, enrich), env={"ESS_LUA_PATH": lua}) as e:
            zs = [Client(e.public_port, create_es(e, stream)[1], OFFER) for _ in range(nz)]
            plain = [Client(e.public_port, create_es(e, stream)[1]) for _ in range(nplain)]
            for c in zs:
                t.eq(c.status, 101, name + ": 101")
                want = ("permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                        if compression else None)
                t.eq(c.headers.get("sec-websocket-extensions"), want, name + ": extension answer")
            for c in plain:
                t.eq(c.headers.get("sec-websocket-extensions"), None, name + ": no offer, no answer")
            # A compressed client message (RSV1, "hello" deflated) is allowed.
            for c in zs:
                if compression:
                    z = zlib.compressobj(wbits=-15)
                    body = z.compress(b"hello") + z.flush(zlib.Z_SYNC_FLUSH)
                    mask = os.urandom(4)
                    c.sock.sendall(struct.pack("!BB", 0xC1, 0x80 | (len(body) - 4)) + mask +
                                   bytes(b ^ mask[i % 4] for i, b in enumerate(body[:-4])))
            publish(stream, count, size=300)
            got = read_all(zs + plain, count)
            ref = inflate(got[-1])
            t.eq(len(ref), count, name + ": plain client frames")
            t.check(not any(r for _, r, _ in got[-1]), name + ": plain client: no RSV1")
            for i, g in enumerate(got[:nz]):
                t.eq(len(g), count, name + ": client %d frames" % i)
                nrsv = sum(1 for _, r, _ in g if r)
                if compression:
                    t.eq(nrsv, count, name + ": every 300-byte message compressed")
                    wire = sum(len(p) for _, _, p in g)
                    t.check(wire < sum(len(p) for _, p in ref) * 0.7,
                            name + ": compressed bytes %d" % wire)
                else:
                    t.eq(nrsv, 0, name + ": no RSV1 with compression off")
                t.check(inflate(g) == ref, name + ": client %d inflates to the plain frames" % i)
            t.check(got[0] == got[1], name + ": both get the same bytes")
            # Solo: one subscription each; shared: compressing and plain
            # members read separate groups, one group when compression is off.
            want = nz + nplain if enrich == "deflatetest.solo" else 2 if compression else 1
            t.eq(metrics(e).get("ess_broker_subscriptions"), want, name + ": broker subscriptions")
            for c in zs + plain:
                c.close()
            out = e.output()
            t.check("RSV" not in out, name + ": no RSV error in the log")
    finally:
        delete_stream(stream)


def refused_offer():
    with Essd(config=config("refuse", True)) as e:
        stream = unique("it15-dfl")
        c = Client(e.public_port, create_es(e, stream)[1],
                   "permessage-deflate; server_max_window_bits=10")
        t.eq(c.status, 101, "refused offer: still 101")
        t.eq(c.headers.get("sec-websocket-extensions"), None, "server_max_window_bits=10: no answer")
        c.close()


scenario("solo", True, "deflatetest.solo", 2, 1)
scenario("shared", True, "deflatetest.shared", 2, 1)
scenario("off", False, "deflatetest.shared", 2, 1)
refused_offer()
t.done()
