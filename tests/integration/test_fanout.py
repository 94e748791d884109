"""Shared subscriptions (issue 15 item 1), end to end against the shared broker.

1. Shared: N event streams routed to one broker stream, connected live (no
   selector). /metrics shows N sessions subscribed and one broker
   subscription; every client receives every published offset exactly
   once, in order, and the same frame bytes; the enrich hook (declared
   per_stream = false, counting its calls with ess.count) runs once per
   message, not once per client.
2. Slow member: with a 256 KiB budget, one client stops reading while the
   others keep reading 30,000 messages (~12 MB). The others get all of
   them while it is stalled; it leaves the shared subscription (metrics:
   ess_fanout_leaves_total, two broker subscriptions); when it reads again
   it gets every offset once, in order, the same frames; then, reading
   live, it rejoins (ess_fanout_rejoins_total, one broker subscription).
3. per_stream = true (a hook that writes es.uuid into each frame): the
   same stream's clients do not share; each gets its own uuid in every
   frame and there is one broker subscription per client.
4. A reload that turns per_stream from false to true: the shared clients
   move to their own subscriptions at the next message and still get every
   offset once, in order; the frames after the reload carry each client's
   own uuid.
"""
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (SOURCE, Checker, Essd, create_es, delete_stream, metrics,  # noqa: E402
                    publish, sanitizer_report, unique, wait_ready, ws_open)

t = Checker()
work = tempfile.mkdtemp(prefix="ess-fanout-")
lua = os.path.join(work, "lua")
shutil.copytree(os.path.join(SOURCE, "lua"), lua)
os.makedirs(os.path.join(lua, "fanouttest"))
with open(os.path.join(lua, "fanouttest", "count.lua"), "w") as f:
    f.write("""local default = require("ess.enrich").enrich
return {
    per_stream = false,
    enrich = function(msg, es)
        ess.count("fanout_enrich_calls")
        return default(msg, es)
    end,
}
""")
with open(os.path.join(lua, "fanouttest", "perstream.lua"), "w") as f:
    f.write("""return {
    per_stream = true,
    enrich = function(msg, es)
        return msg.body .. "|es: " .. es.uuid .. "|offset: " .. string.format("%d", msg.offset)
    end,
}
""")


def config(name, enrich, budget=None, stall=None):
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        f.write("lua:\n  path: %s\n  enrich: \"%s\"\n" % (lua, enrich))
        if budget or stall:
            f.write("public:\n")
            if budget:
                f.write("  outbound_budget_bytes: %d\n" % budget)
            if stall:
                f.write("  stall_timeout_s: %d\n" % stall)
    return path


def offset_of(payload):
    """The ess_offset the default hook splices into a JSON body."""
    s = payload.decode()
    return int(s.rsplit('"ess_offset":', 1)[1].split(",")[0])


def read_n(ws, n, timeout=60):
    """n data frames (payload bytes), or fewer if the connection closes."""
    out = []
    for _ in range(n):
        f = ws.recv(timeout=timeout)
        if f[0] == "close":
            print("closed early: %r" % (f,))
            break
        out.append(f[1])
    return out


def read_all(clients, n):
    """Read n frames from every client at once (one thread each), as
    browsers would: a client read after the others would lag on purpose."""
    res = [None] * len(clients)

    def run(i):
        try:
            res[i] = read_n(clients[i], n)
        except Exception as x:  # noqa: BLE001 - reported as a short read
            print("reader %d: %r" % (i, x))
            res[i] = []
    th = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for x in th:
        x.start()
    for x in th:
        x.join(300)
    return [r or [] for r in res]


def explain(got, others):
    """Where frame lists differ (printed for the log)."""
    for i, ref in enumerate(others + [got]):
        offs = [offset_of(p) for p in ref]
        gaps = [(a, b) for a, b in zip(offs, offs[1:]) if b != a + 1][:5]
        print("client %d: %d frames, first %s last %s, breaks %s" % (
            i, len(ref), offs[:1], offs[-1:], gaps))
    for ref in others:
        for k, (x, y) in enumerate(zip(got, ref)):
            if x != y:
                print("first difference at frame %d:\n  %r\n  %r" % (k, x[:300], y[:300]))
                break


def wait_metric(e, name, want, tries=100):
    for _ in range(tries):
        if metrics(e).get(name) == want:
            return True
        time.sleep(0.1)
    return False


def open_clients(e, stream, n, **kw):
    paths = [create_es(e, stream)[1] for _ in range(n)]
    return [ws_open(e, p, timeout=60, **kw) for p in paths]


def shared():
    n, count = 20, 2000
    stream = unique("it15-fan")
    publish(stream, 0, declare=True)
    try:
        with Essd(config=config("shared", "fanouttest.count"), env={"ESS_LUA_PATH": lua}) as e:
            t.check(wait_ready(e), "essd ready")
            clients = open_clients(e, stream, n)
            t.check(wait_metric(e, "ess_subscriptions", float(n)), "%d sessions subscribed" % n)
            m = metrics(e)
            t.eq(m.get("ess_broker_subscriptions"), 1.0, "one broker subscription for %d clients" % n)
            time.sleep(0.5)  # the shared subscription is established before the first message
            calls0 = metrics(e).get("ess_script_fanout_enrich_calls_total", 0)  # the reload self-test's
            publish(stream, count)
            frames = read_all(clients, count)
            offs = [offset_of(p) for p in frames[0]]
            t.eq(len(offs), count, "client 0 got %d frames" % count)
            t.eq(offs, list(range(offs[0], offs[0] + count)) if offs else [], "client 0: contiguous offsets")
            same = sum(fr == frames[0] for fr in frames)
            t.eq(same, n, "all %d clients got the same %d frames" % (n, count))
            m = metrics(e)
            t.eq(m.get("ess_script_fanout_enrich_calls_total", 0) - calls0, float(count),
                 "the hook ran once per message (%d), not per client" % count)
            t.eq(m.get("ess_messages_out_total"), float(n * count), "frames out: clients x messages")
            for c in clients:
                c.close()
            t.check(wait_metric(e, "ess_broker_subscriptions", 0.0), "broker subscription released")
        t.eq(sanitizer_report(e), "", "shared: no sanitizer report")
    finally:
        delete_stream(stream)


def slow_member():
    fast_n, count, size = 4, 30000, 400
    stream = unique("it15-slow")
    publish(stream, 0, declare=True)
    try:
        with Essd(config=config("slow", "ess.enrich", budget=256 * 1024, stall=300),
                  env={"ESS_LUA_PATH": lua}) as e:
            t.check(wait_ready(e), "essd ready")
            fast = open_clients(e, stream, fast_n)
            slow = open_clients(e, stream, 1, rcvbuf=4096)[0]
            t.check(wait_metric(e, "ess_subscriptions", float(fast_n + 1)), "all sessions subscribed")
            t.eq(metrics(e).get("ess_broker_subscriptions"), 1.0, "one broker subscription at first")
            time.sleep(0.5)
            publish(stream, count, size=size)
            frames = read_all(fast, count)
            t.check(all(len(f) == count for f in frames),
                    "the others got all %d while one client did not read: %s"
                    % (count, [len(f) for f in frames]))
            offs0 = [offset_of(p) for p in frames[0]]
            t.eq(offs0, list(range(offs0[0], offs0[0] + count)) if offs0 else [], "client 0: contiguous offsets")
            t.check(all(f == frames[0] for f in frames), "the others got the same frames")
            if not all(f == frames[0] for f in frames):
                explain(frames[0], frames[1:])
            m = metrics(e)
            t.check(m.get("ess_fanout_leaves_total", 0) >= 1, "the slow client left the shared subscription")
            t.check(m.get("ess_broker_subscriptions", 0) >= 2,
                    "it reads on its own subscription: %s broker subscriptions"
                    % m.get("ess_broker_subscriptions"))
            got = read_n(slow, count)
            t.eq(len(got), count, "the slow client then got all %d" % count)
            t.check(got == frames[0], "the same frames, in order, none lost or repeated")
            if got != frames[0]:
                explain(got, frames)
            offs = [offset_of(p) for p in got]
            t.eq(offs, list(range(offs[0], offs[0] + count)) if offs else [], "slow: contiguous offsets")
            # Live again: it catches up with the group and rejoins.
            publish(stream, 300, rate=100)
            more = read_all(fast + [slow], 300)
            if not all(x == more[0] for x in more):
                explain(more[-1], more[:-1])
            t.check(all(x == more[0] and len(x) == 300 for x in more), "300 more to everyone, same frames")
            m = metrics(e)
            t.check(m.get("ess_fanout_rejoins_total", 0) >= 1, "the slow client rejoined at the tail")
            t.eq(m.get("ess_broker_subscriptions"), 1.0, "one broker subscription again")
            if os.environ.get("ESS_FANOUT_DEBUG"):
                print("\n".join(x for x in e.output().splitlines() if "shared" in x or "session" in x))
        t.eq(sanitizer_report(e), "", "slow: no sanitizer report")
    finally:
        delete_stream(stream)


def per_stream():
    n, count = 3, 200
    stream = unique("it15-per")
    publish(stream, 0, declare=True)
    try:
        with Essd(config=config("per", "fanouttest.perstream"), env={"ESS_LUA_PATH": lua}) as e:
            t.check(wait_ready(e), "essd ready")
            paths = [create_es(e, stream)[1] for _ in range(n)]
            clients = [ws_open(e, p, timeout=60) for p in paths]
            t.check(wait_metric(e, "ess_subscriptions", float(n)), "%d sessions subscribed" % n)
            t.eq(metrics(e).get("ess_broker_subscriptions"), float(n), "per_stream: one subscription each")
            time.sleep(0.5)
            publish(stream, count, fmt="text")
            for p, got in zip(paths, read_all(clients, count)):
                uuid = p.rsplit("/", 1)[1]
                t.eq(len(got), count, "per_stream client got %d" % count)
                t.check(all(("|es: %s|" % uuid).encode() in x for x in got),
                        "every frame carries this client's own es.uuid")
        t.eq(sanitizer_report(e), "", "per_stream: no sanitizer report")
    finally:
        delete_stream(stream)


FLIP = """return {
    per_stream = %s,
    enrich = function(msg, es)
        return msg.body .. "|es: " .. (%s) .. "|offset: " .. string.format("%%d", msg.offset)
    end,
}
"""


def write_flip(per_stream):
    path = os.path.join(lua, "fanouttest", "flip.lua")
    with open(path + ".tmp", "w") as f:
        f.write(FLIP % (("true", "es.uuid") if per_stream else ("false", '"shared"')))
    os.replace(path + ".tmp", path)


def text_offset(payload):
    return int(payload.decode().rsplit("|offset: ", 1)[1])


def reload_flip():
    n, count = 3, 300
    stream = unique("it15-flip")
    publish(stream, 0, declare=True)
    write_flip(False)
    try:
        with Essd(config=config("flip", "fanouttest.flip"), env={"ESS_LUA_PATH": lua}) as e:
            t.check(wait_ready(e), "essd ready")
            paths = [create_es(e, stream)[1] for _ in range(n)]
            clients = [ws_open(e, p, timeout=60) for p in paths]
            t.check(wait_metric(e, "ess_subscriptions", float(n)), "%d sessions subscribed" % n)
            t.eq(metrics(e).get("ess_broker_subscriptions"), 1.0, "flip: shared at first")
            time.sleep(0.5)
            publish(stream, count, fmt="text")
            first = read_all(clients, count)
            t.check(all(len(x) == count and all(b"|es: shared|" in f for f in x) for x in first),
                    "flip: %d shared frames each" % count)
            write_flip(True)
            st, res = e.json("POST", "/admin/reload")
            t.eq(st, 200, "flip: reload accepted (%r)" % (res,))
            publish(stream, count, fmt="text")
            second = read_all(clients, count)
            for p, a, b in zip(paths, first, second):
                uuid = p.rsplit("/", 1)[1].encode()
                offs = [text_offset(f) for f in a + b]
                t.eq(offs, list(range(offs[0], offs[0] + 2 * count)) if offs else [],
                     "flip: every offset once, in order, across the reload")
                t.check(len(b) == count and all((b"|es: " + uuid + b"|") in f for f in b[-10:]),
                        "flip: frames after the reload carry the client's own uuid")
            t.eq(metrics(e).get("ess_broker_subscriptions"), float(n), "flip: one subscription each now")
        t.eq(sanitizer_report(e), "", "flip: no sanitizer report")
    finally:
        delete_stream(stream)


shared()
slow_member()
per_stream()
reload_flip()
t.done()
