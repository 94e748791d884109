"""The operator console in a real browser (#16): Debian's chromium, headless,
driven by puppeteer-core (tests/browser/console.test.js, pinned in
tests/browser/package-lock.json, installed by scripts/deps with `npm ci`).

essd runs with a token, a copy of the Lua root (so the test can break and
fix the enrich hook), three event streams and two live clients: one that
reads everything and one that never reads (a small receive buffer and a
small outbound budget, so it falls behind: its lag must show). The browser
script checks the rows, the counters and the lag as messages are
published, a refused reload with its file:line and a fixed one with a new
generation, the Tail, and a DELETE from the page; this file then checks
that the deleted stream's client was closed with 1000 and that /metrics
carries the lag.

Screenshots go to the work folder, or to ESS_CONSOLE_SHOTS (e.g.
docs/images) to refresh the ones in the docs.
"""
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import esslib  # noqa: E402
from esslib import Essd  # noqa: E402

TOKEN = "console-secret"
H = {"Authorization": "Bearer " + TOKEN}
BROWSER_DIR = os.path.join(esslib.SOURCE, "tests", "browser")
CHROMIUM = os.environ.get("ESS_CHROMIUM", "/usr/bin/chromium")

t = esslib.Checker()
if not os.path.exists(CHROMIUM):
    print("FAIL: %s is missing (scripts/deps installs Debian's chromium)" % CHROMIUM)
    sys.exit(1)
if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "puppeteer-core")):
    print("FAIL: tests/browser/node_modules is missing (scripts/deps runs npm ci there)")
    sys.exit(1)

work = __import__("tempfile").mkdtemp(prefix="ess-console-")
lua = os.path.join(work, "lua")
shutil.copytree(os.path.join(esslib.SOURCE, "lua"), lua)
cfg = os.path.join(work, "essd.yaml")
with open(cfg, "w") as f:
    # A small budget and a long stall timeout: the client that never reads
    # pauses its subscription early and stays connected, behind its stream.
    # No pings either: the client that never reads would not answer them.
    f.write("public:\n  outbound_budget_bytes: 65536\n  stall_timeout_s: 600\n"
            "  ping_interval_s: 0\n")

keys = [esslib.unique("console") for _ in range(3)]
for k in keys:
    esslib.publish(k, 1, declare=True)

e = Essd(config=cfg, workdir=work, env={
    "ESS_API_TOKEN": TOKEN,
    "ESS_LUA_PATH": lua,
    "ESS_UI_PATH": os.path.join(esslib.SOURCE, "ui"),
}).start()
reader = slow = None
try:
    ids = []
    uuids = []
    for k in keys:
        status, body = e.json("POST", "/event-stream/", {"routing_key": k}, headers=H)
        t.eq(status, 201, "create " + k)
        ids.append(body["id"])
        uuids.append(body["location"].rsplit("/", 1)[1])

    # Client 1 reads everything, in a thread, until it is closed.
    reader = esslib.ws_open(e, "/event-stream/" + uuids[0], headers={"User-Agent": "reader-client/1.0"})
    got = {"frames": 0, "close": None}

    def read_all():
        try:
            while True:
                m = reader.recv(timeout=120)
                if m[0] == "close":
                    got["close"] = m[1]
                    return
                got["frames"] += 1
        except Exception as ex:  # noqa: BLE001 - reported below
            got["error"] = repr(ex)

    th = threading.Thread(target=read_all, daemon=True)
    th.start()
    # Client 2 never reads.
    slow = esslib.ws_open(e, "/event-stream/" + uuids[1], headers={"User-Agent": "slow-client/2.0"},
                          rcvbuf=4096)
    time.sleep(1)

    env = dict(os.environ, **esslib.BROKER_ENV)
    env.update({
        "ESS_URL": "http://127.0.0.1:%d" % e.internal_port,
        "ESS_TOKEN": TOKEN,
        "ESS_CHROMIUM": CHROMIUM,
        "ESS_LUA_DIR": lua,
        "ESS_PUBLISH": esslib.PUBLISH,
        "ESS_KEYS": ",".join(keys),
        "ESS_IDS": ",".join(map(str, ids)),
        "ESS_SHOTS": os.environ.get("ESS_CONSOLE_SHOTS") or work,
    })
    r = subprocess.run(["node", os.path.join(BROWSER_DIR, "console.test.js")], env=env,
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=400)
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr[-4000:])
    t.eq(r.returncode, 0, "the browser script passed")

    th.join(20)
    t.eq(got["close"], 1000, "the deleted stream's client was closed with 1000 (%r)" % got)
    t.check(got["frames"] > 0, "the reading client received frames")
    _, _, metrics = e.request("GET", "/metrics", headers=H)
    text = metrics.decode()
    t.check('ess_stream_lag_messages{event_stream="%d"}' % ids[1] in text,
            "/metrics carries the slow client's lag")
finally:
    for ws in (reader, slow):
        if ws:
            ws.close()
    e.stop()
    if t.failed:
        print(e.output()[-6000:])
    for k in keys:
        esslib.delete_stream(k)
sys.exit(t.done())
