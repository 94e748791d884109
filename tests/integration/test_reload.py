"""Hot reload: a connected client keeps its connection while the enrich
script is changed and reloaded three ways (SIGHUP, POST /admin/reload, file
watch), sees the new enrichment from some offset on with offsets
contiguous; broken scripts (syntax error, run-time error) are rejected with
file and line and the old behaviour continues; many reloads under load lose
nothing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from esslib import BROKER_ENV, BUILD, SOURCE, Checker, Essd, WebSocket, broker_ctl  # noqa: E402

t = Checker()
work = tempfile.mkdtemp(prefix="ess-reload-")
lua = os.path.join(work, "lua")
shutil.copytree(os.path.join(SOURCE, "lua"), lua)
enrich_path = os.path.join(lua, "ess", "enrich.lua")
with open(enrich_path) as f:
    original = f.read()
cfg = os.path.join(work, "essd.yaml")
with open(cfg, "w") as f:
    f.write("lua:\n  path: %s\n  watch: true\n" % lua)
stream = "it5-reload-" + uuid.uuid4().hex[:8]


def edited(old, new):
    """original with old replaced by new; fails loudly if enrich.lua changed shape."""
    if old not in original:
        raise RuntimeError("lua/ess/enrich.lua no longer contains %r: update this test" % old)
    return original.replace(old, new, 1)


def set_marker(marker):
    """Write an enrich hook that tags text bodies with "|gen: marker" (atomically)."""
    src = edited('names.text_offset or "|offset: "', 'names.text_offset or "|gen: %s|offset: "' % marker)
    tmp = enrich_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(src)
    os.replace(tmp, enrich_path)


def publish(n, rate=0):
    args = [os.path.join(BUILD, "ess-publish"), "--routing-key", stream, "--count", str(n),
            "--format", "text", "--rate", str(rate)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, **BROKER_ENV))


def read_frames(ws, n, deadline_s=60):
    out = []
    end = time.time() + deadline_s
    ws.sock.settimeout(deadline_s)
    while len(out) < n and time.time() < end:
        fr = ws.recv()
        if fr[0] == "close":
            break
        out.append(fr[1].decode())
    return out


def parse(frame):
    gen = None
    if "|gen: " in frame:
        gen = frame.split("|gen: ")[1].split("|")[0]
    off = int(frame.split("|offset: ")[1].split("|")[0])
    return off, gen


r = subprocess.run([os.path.join(BUILD, "ess-publish"), "--routing-key", stream, "--count", "1",
                    "--declare", "--format", "text"], capture_output=True, text=True, timeout=60,
                   env=dict(os.environ, **BROKER_ENV))
t.eq(r.returncode, 0, "declare stream: " + r.stderr)

e = Essd(config=cfg, env={"ESS_LUA_PATH": lua}).start()
try:
    st, body = e.json("POST", "/event-stream/", {"routing_key": stream})
    loc = body["location"].rsplit("/", 1)[1]
    ws = WebSocket("127.0.0.1", e.public_port, "/event-stream/%s?stream_from_ordinal=0" % loc)
    frames = read_frames(ws, 1)
    t.eq(len(frames), 1, "first message")
    total = 1
    seen = [parse(f) for f in frames]

    def round_trip(marker, trigger):
        global total
        set_marker(marker)
        if trigger == "signal":
            e.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
        elif trigger == "api":
            st, res = e.json("POST", "/admin/reload")
            t.eq(st, 200, "reload endpoint 200: %r" % res)
            t.eq(res.get("status"), "reloaded", "reload endpoint status")
        else:
            time.sleep(1.0)  # the watch debounces 200 ms
        p = publish(200)
        p.wait(60)
        got = [parse(f) for f in read_frames(ws, 200)]
        total += 200
        seen.extend(got)
        t.eq(len(got), 200, "%s: all 200 messages after the reload" % trigger)
        t.check(got and got[-1][1] == marker, "%s: new enrichment in use (%r)" % (trigger, got[-1:]))

    round_trip("sig1", "signal")
    round_trip("api2", "api")
    round_trip("watch3", "watch")

    # A syntax error and a run-time error are rejected with file and line.
    with open(enrich_path, "w") as f:
        f.write(edited("return function(msg, es)", "return function(msg, es\n"))
    st, res = e.json("POST", "/admin/reload")
    t.eq(st, 422, "syntax error rejected")
    t.check("enrich.lua:" in json.dumps(res), "syntax error names file and line: %r" % res)
    with open(enrich_path, "w") as f:
        f.write(edited("local body = msg.body", "local body = msg.body\n    error('boom')"))
    st, res = e.json("POST", "/admin/reload")
    t.eq(st, 422, "run-time error rejected")
    t.check("enrich.lua:" in json.dumps(res) and "boom" in json.dumps(res), "run-time error reported: %r" % res)
    time.sleep(0.5)  # the file watch also tried, and kept the old VM
    p = publish(50)
    p.wait(60)
    got = [parse(f) for f in read_frames(ws, 50)]
    total += 50
    seen.extend(got)
    t.check(len(got) == 50 and all(g == "watch3" for _, g in got), "old behaviour continues after rejects")

    # Many reloads while publishing at 5,000 msg/s: nothing lost, RSS flat.
    set_marker("load")
    n_load, reloads = 20000, 100
    p = publish(n_load, rate=5000)
    rss = []
    for i in range(reloads):
        st, res = e.json("POST", "/admin/reload")
        if st != 200:
            t.check(False, "reload %d under load: %d %r" % (i, st, res))
            break
        if i in (10, reloads - 1):
            with open("/proc/%d/status" % e.proc.pid) as f:
                rss.append(int([ln for ln in f if ln.startswith("VmRSS")][0].split()[1]))
        time.sleep(0.02)
    p.wait(120)
    got = [parse(f) for f in read_frames(ws, n_load, deadline_s=120)]
    total += n_load
    seen.extend(got)
    t.eq(len(got), n_load, "every message during %d reloads arrived" % reloads)
    offsets = [o for o, _ in seen]
    t.eq(offsets, list(range(total)), "offsets contiguous across all reloads, no gap, no duplicate")
    print("RSS after 10 reloads: %d KiB, after %d: %d KiB" % (rss[0], reloads, rss[-1]))
    t.check(rss[-1] - rss[0] < 16 * 1024, "RSS flat across reloads (%d KiB growth)" % (rss[-1] - rss[0]))
    st, text = e.request("GET", "/metrics")[0], e.request("GET", "/metrics")[2].decode()
    t.check("ess_reload_failures_total" in text, "reload metrics exported")

    # A hook that passes its self-test but raises on every real message:
    # messages still arrive (unenriched), and /health/ready says so.
    with open(enrich_path, "w") as f:
        f.write(edited("local body = msg.body",
                                 "local body = msg.body\n    if es.routing_key ~= 'selftest' then error('bad hook') end"))
    st, res = e.json("POST", "/admin/reload")
    t.eq(st, 200, "a hook that fails only on real messages passes its self-test")
    p = publish(150)
    p.wait(60)
    got = read_frames(ws, 150)
    total += 150
    t.eq(len(got), 150, "messages still delivered while the hook raises")
    t.check(all("|offset: " not in g for g in got), "they are sent unenriched")
    st, ready = e.json("GET", "/health/ready")
    t.check(isinstance(ready.get("checks", {}).get("enrich"), str) and "failing" in ready["checks"]["enrich"],
            "/health/ready reports the failing hook: %r" % ready)
    with open(enrich_path, "w") as f:
        f.write(original)
    st, res = e.json("POST", "/admin/reload")
    st, ready = e.json("GET", "/health/ready")
    t.eq(ready.get("checks", {}).get("enrich"), True, "a good reload clears the report")
    ws.close()
finally:
    t.eq(e.stop(), 0, "essd stops cleanly")
    broker_ctl("delete_queue", stream, timeout=60)
t.done()
