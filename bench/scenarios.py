"""ESS Gateway benchmarks (issue 6): S1 replay, S2 live latency, S3 connection
burst, S4 slow consumer, and the ceilings (ess-cat raw read, the load
client against a trivial server), each of S1-S3 also against RabbitMQ
Web-STOMP on the same broker. Run through bench/run; Python stdlib only.

Writes bench/results/<date>-<scenario>.json and <date>-summary.md. Every
stream it creates has the prefix "bench-<pid>-" and is deleted at the end.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import esslib  # noqa: E402

STOMP_PORT = 15674
RESULTS = {}
STREAMS = []


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def lc(*args, timeout=600, stdin=None):
    """Run the load client; return its JSON result."""
    r = subprocess.run([LC, *map(str, args)], capture_output=True, text=True, timeout=timeout, input=stdin)
    out = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if not out:
        raise RuntimeError("loadclient %s: exit %d: %s" % (" ".join(map(str, args)), r.returncode, r.stderr))
    res = json.loads(out[-1])
    if r.stderr.strip():
        res["stderr"] = r.stderr.strip()[-600:]
    return res


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rss_kib(pid):
    return esslib.vm_rss_kib(pid)


def beam_pid():
    """The broker process: the one listening on the Web-STOMP port."""
    r = subprocess.run(["ss", "-ltnpH", "sport = :%d" % STOMP_PORT], capture_output=True, text=True)
    m = re.search(r"pid=(\d+)", r.stdout)
    return int(m.group(1)) if m else None


def new_stream(tag):
    name = "%s-%s" % (PREFIX, tag)
    STREAMS.append(name)
    return name


def wait_broker(limit_s=120):
    """Other engineers restart the shared broker's app in their tests: wait for it."""
    import socket
    deadline = time.time() + limit_s
    while time.time() < deadline:
        try:
            for port in (5552, 5672, STOMP_PORT):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return True
        except OSError:
            time.sleep(1)
    return False


def load_stream(name, lines):
    t = time.time()
    data = "".join(x + "\n" for x in lines).encode()
    for attempt in range(3):
        wait_broker()
        r = subprocess.run([CAT, "--publish", "--create", name], input=data, capture_output=True, timeout=900,
                           env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))
        if r.returncode == 0:
            break
        log("ess-cat --publish failed (%s); retrying" % r.stderr.decode(errors="replace").strip())
        time.sleep(3)
        delete_quiet(name)
    if r.returncode != 0:
        raise RuntimeError("ess-cat --publish: %s" % r.stderr.decode(errors="replace"))
    log("loaded %d messages into %s in %.1f s" % (len(lines), name, time.time() - t))


def delete_quiet(name):
    subprocess.run([CAT, "--delete", name], capture_output=True, timeout=60,
                   env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))


def json_lines(n, size):
    head = '{"type":"MerchantProcessingCharge","seq":%d,"t":0,"merchant_kind":"DATA_MANAGER","pad":"'
    out = []
    for i in range(n):
        h = head % i
        out.append(h + "x" * max(1, size - len(h) - 2) + '"}')
    return out


def text_lines(n, size):
    head = ('accountserver.MerchantProcessingCharge|timestamp: "2026-11-28T02:00:00Z" merchant_kind: '
            '"DATA_MANAGER" seq: %d pad: "')
    out = []
    for i in range(n):
        h = head % i
        out.append(h + "x" * max(1, size - len(h) - 1) + '"')
    return out


def ess_cat_rate(stream, count):
    t = time.time()
    r = subprocess.run([CAT, stream, "--from", "first", "--count", str(count), "--quiet"], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))
    wall = time.time() - t
    text = (r.stdout + r.stderr).strip()
    rate = None
    m = re.search(r"([0-9.]+)\s*msgs?/s", text)
    if m:
        rate = float(m.group(1))
    return {"output": text, "msgs_per_s": rate, "wall_s": round(wall, 3)}


def ratio(a, b):
    return round(a / b, 3) if a and b else None


# ---------------------------------------------------------------- scenarios

def ceilings():
    wait_broker()
    port = esslib.free_port()
    srv = subprocess.Popen([LC, "trivial", "--port", str(port), "--count", str(N1)], stdout=subprocess.PIPE,
                           text=True)
    srv.stdout.readline()
    res = lc("ess", "--port", port, "--path", "/", "--count", N1, "--timeout", 60)
    srv.wait(30)
    RESULTS["ceiling_loadclient"] = res
    log("load client ceiling: %.0f msgs/s" % res["msgs_per_s"])


def s1(essd):
    wait_broker()
    out = {"messages": N1, "body_bytes": 250}
    for kind, gen in (("json", json_lines), ("text", text_lines)):
        n = N1 if kind == "json" else N1T
        stream = new_stream("s1-" + kind)
        load_stream(stream, gen(n, 250))
        cat = ess_cat_rate(stream, n)
        log("S1 %s ess-cat: %s" % (kind, cat["msgs_per_s"]))
        _, path = esslib.create_es(essd, stream)
        perf = None
        if kind == "json" and PERF:
            perf_data = os.path.join(OUTDIR, "%s-s1-perf.data" % DATE)
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", perf_data, "-p",
                                     str(essd.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        c0 = cpu_s(essd.proc.pid)
        e = lc("ess", "--port", essd.public_port, "--path", path + "?stream_from_ordinal=0", "--count", n,
               "--timeout", 300)
        c1 = cpu_s(essd.proc.pid)
        # essd's CPU per message: steadier than the rate on a shared, loaded machine.
        e["essd_cpu_us_per_msg"] = round(1e6 * (c1 - c0) / n, 3) if c0 is not None and c1 is not None else None
        if perf:
            perf.send_signal(2)
            perf.wait(60)
        log("S1 %s essd: %.0f msgs/s, ttfm %.2f ms" % (kind, e["msgs_per_s"], (e["first_msg_ms"] or {}).get("p50", -1)))
        s = lc("stomp", "--port", STOMP_PORT, "--stream", stream, "--offset", "first", "--count", n,
               "--prefetch", 2000, "--timeout", 300)
        log("S1 %s web-stomp: %.0f msgs/s" % (kind, s["msgs_per_s"]))
        out[kind] = {"messages": n, "ess_cat": cat, "essd": e, "web_stomp": s,
                     "essd_vs_ess_cat": ratio(e["msgs_per_s"], cat["msgs_per_s"]),
                     "essd_vs_web_stomp": ratio(e["msgs_per_s"], s["msgs_per_s"])}
    RESULTS["s1"] = out


def amqp_load(stream, rate, count):
    """Write a stream the way the account server does: AMQP 0-9-1, one
    message per publish, with confirms (the load client's pub mode); at
    rate msgs/s, or as fast as the broker confirms when rate is 0."""
    admin = esslib.StreamAdmin()
    admin.create(stream)
    admin.close()
    r = rate or 10000000
    pub = lc("pub", "--stream", stream, "--rate", r, "--seconds", "%.6f" % (count / r), "--size", 250,
             timeout=max(60, count / 500))
    log("loaded %d messages into %s through AMQP 0-9-1 at %.0f/s (asked %s), all confirmed after %.1f s" % (
        pub["published"], stream, pub["rate"], rate or "max", pub.get("confirmed_after_s") or -1))
    return pub


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def s1r(essd):
    """S1 on realistic streams (issue 15): written through AMQP 0-9-1 one
    message per publish, at 1k msgs/s (about one message per chunk) and as
    fast as confirms allow; ess-cat, essd, Web-STOMP and ess-cat again read
    each stream from its start in the same run (ess-cat's better read is
    the reference)."""
    wait_broker()
    out = {}
    RESULTS["s1r"] = out
    for kind, rate, n in (("amqp_1k", 1000, N1R_SLOW), ("amqp_max", 0, N1R_FAST)):
        stream = new_stream("s1r-" + kind)
        pub = amqp_load(stream, rate, n)
        n = pub["published"]
        cat = ess_cat_rate(stream, n)
        log("S1r %s ess-cat: %s msgs/s" % (kind, cat["msgs_per_s"]))
        _, path = esslib.create_es(essd, stream)
        c0 = proc_cpu_s(essd.proc.pid)
        e = lc("ess", "--port", essd.public_port, "--path", path + "?stream_from_ordinal=0", "--count", n,
               "--timeout", 300)
        e["essd_cpu_s"] = round(proc_cpu_s(essd.proc.pid) - c0, 3)
        e["essd_cpu_us_per_msg"] = round(e["essd_cpu_s"] * 1e6 / n, 2)
        log("S1r %s essd: %.0f msgs/s, %.2f us CPU/msg" % (kind, e["msgs_per_s"], e["essd_cpu_us_per_msg"]))
        s = lc("stomp", "--port", STOMP_PORT, "--stream", stream, "--offset", "first", "--count", n,
               "--prefetch", 2000, "--timeout", 300)
        log("S1r %s web-stomp: %.0f msgs/s" % (kind, s["msgs_per_s"]))
        # The first read of a stream also warms the broker's caches: ess-cat
        # reads it again after the others, and the faster of its two reads
        # is the one essd is compared with.
        cat2 = ess_cat_rate(stream, n)
        log("S1r %s ess-cat again: %s msgs/s" % (kind, cat2["msgs_per_s"]))
        cat = dict(cat, first_read=dict(cat), second_read=cat2,
                   msgs_per_s=max(cat["msgs_per_s"] or 0, cat2["msgs_per_s"] or 0) or None)
        out[kind] = {"messages": n, "publish": pub, "ess_cat": cat, "essd": e, "web_stomp": s,
                     "essd_vs_ess_cat": ratio(e["msgs_per_s"], cat["msgs_per_s"]),
                     "essd_vs_web_stomp": ratio(e["msgs_per_s"], s["msgs_per_s"])}


def s2r_run(essd, rate):
    """ess-cat --latency, one essd client and one Web-STOMP client subscribed
    to "now" on the same stream at once; one AMQP 0-9-1 publisher."""
    stream = new_stream("s2r-%d" % rate)
    admin = esslib.StreamAdmin()
    admin.create(stream)
    admin.close()
    n = int(rate * S2_SECS)
    _, path = esslib.create_es(essd, stream)
    to = int(S2_SECS) + 15
    cmds = {"ess_cat": ["timeout", to, CAT, stream, "--from", "next", "--credit-window", 262144],
            "essd": [LC, "ess", "--port", essd.public_port, "--path", path, "--timeout", to],
            "web_stomp": [LC, "stomp", "--port", STOMP_PORT, "--stream", stream, "--offset", "next", "--prefetch",
                          2000, "--timeout", to]}
    procs = {k: subprocess.Popen([*map(str, v), "--count", str(n), "--latency"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL)) for k, v in cmds.items()}
    row = {"rate": rate, "seconds": S2_SECS}
    try:
        time.sleep(3.5)  # every subscription is live
        c0 = proc_cpu_s(essd.proc.pid)
        w0 = {"essd": schedstat(essd.proc.pid), "essd_client": schedstat(procs["essd"].pid)}
        pub = lc("pub", "--stream", stream, "--rate", rate, "--seconds", S2_SECS, "--size", 250,
                 timeout=S2_SECS * 4 + 30)
        row["publish"] = pub
        time.sleep(0.5)
        # Seconds essd and its client waited for a CPU while runnable (the
        # two processes ess-cat's path does not have), and their wake-ups.
        for k, pid in (("essd", essd.proc.pid), ("essd_client", procs["essd"].pid)):
            w1 = schedstat(pid)
            if w0[k] and w1:
                row[k + "_runq_wait_ms"] = round(1e3 * (w1[1] - w0[k][1]), 1)
                row[k + "_slices"] = w1[2] - w0[k][2]
        for k, p in procs.items():
            so, se = p.communicate(timeout=S2_SECS + 30)
            res = ess_cat_summary(so) if k == "ess_cat" else json.loads(
                [x for x in so.splitlines() if x.startswith("{")][-1])
            if se.strip():
                res["stderr"] = se.strip()[-600:]
            res["lost"] = pub["published"] - res["frames"]
            row[k] = res
        row["essd_cpu_s"] = round(proc_cpu_s(essd.proc.pid) - c0, 3)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    a = (row["essd"].get("latency_us") or {})
    c = (row["ess_cat"].get("latency_us") or {})
    if a.get("p50") is not None and c.get("p50") is not None:
        row["p50_essd_minus_ess_cat_us"] = a["p50"] - c["p50"]
        row["p99_essd_over_ess_cat"] = ratio(a.get("p99"), c.get("p99"))
    return row


def schedstat(pid):
    """(seconds on a CPU, seconds waiting on a run queue, time slices) of a
    process (/proc/PID/schedstat, readable until it is reaped), or None."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            run, wait, slices = f.read().split()
        return int(run) / 1e9, int(wait) / 1e9, int(slices)
    except (OSError, ValueError):
        return None


def s2r(essd):
    wait_broker()
    out = []
    RESULTS["s2r"] = out
    for rate in (1000, 5000):
        for rep in range(S2R_REPEAT):
            wait_broker()
            try:
                row = s2r_run(essd, rate)
            except Exception as e:  # noqa: BLE001 - keep the other rates
                log("S2r %d/s failed: %r" % (rate, e))
                out.append({"rate": rate, "error": repr(e)})
                continue
            row["repeat"] = rep
            out.append(row)
            log("S2r %d/s: p50 essd - ess-cat %s us, p99 essd / ess-cat %s; run-queue wait ms essd %s "
                "(%s slices), its client %s (%s); %s" % (
                rate, row.get("p50_essd_minus_ess_cat_us"), row.get("p99_essd_over_ess_cat"),
                row.get("essd_runq_wait_ms"), row.get("essd_slices"), row.get("essd_client_runq_wait_ms"),
                row.get("essd_client_slices"),
                {k: (row[k].get("latency_us"), row[k]["lost"]) for k in ("ess_cat", "essd", "web_stomp")}))


def ess_cat_summary(out):
    """ess-cat --latency's summary line as the load client's fields."""
    kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
    lat = {k: int(kv[k + "_us"]) for k in ("p50", "p99", "p999", "max") if k + "_us" in kv}
    return {"frames": int(kv.get("count", 0)), "latency_us": lat or None}


def s2_run(essd, rate, target, n):
    """One live run: subscribe to "now", publish n at rate, measure."""
    # A fresh stream per run: a backlog the broker still ingests from the
    # previous rate must not reach this run's subscriber.
    stream = new_stream("s2-%d-%s" % (rate, target.replace("_", "")))
    admin = esslib.StreamAdmin()
    admin.create(stream)
    admin.close()
    if target == "essd":
        _, path = esslib.create_es(essd, stream)
        args = [LC, "ess", "--port", essd.public_port, "--path", path]
    elif target == "ess_cat":
        # The floor: a direct stream-protocol client (no WebSocket), with
        # the same byte credit window as essd's default.
        args = ["timeout", int(S2_SECS) + 15, CAT, stream, "--from", "next", "--credit-window", 262144]
    else:
        args = [LC, "stomp", "--port", STOMP_PORT, "--stream", stream, "--offset", "next", "--prefetch", 2000]
    if target != "ess_cat":
        args += ["--timeout", int(S2_SECS) + 15]
    cl = subprocess.Popen([*map(str, args), "--count", str(n), "--latency"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.5)  # the subscription is live, and the broker settled after the previous run
        pub = lc("pub", "--stream", stream, "--rate", rate, "--seconds", S2_SECS, "--size", 250,
                 timeout=S2_SECS * 4 + 30)
        so, se = cl.communicate(timeout=S2_SECS + 30)
    finally:
        if cl.poll() is None:
            cl.kill()
            cl.wait()
    if target == "ess_cat":
        res = ess_cat_summary(so)
    else:
        res = json.loads([x for x in so.splitlines() if x.startswith("{")][-1])
    if se.strip():
        res["stderr"] = se.strip()[-600:]
    res["published"] = pub["published"]
    res["publish_rate"] = pub["rate"]
    res["broker_confirmed"] = pub.get("confirmed")
    res["broker_confirmed_after_s"] = pub.get("confirmed_after_s")
    res["lost"] = pub["published"] - res["frames"]
    return res


def s2(essd):
    wait_broker()
    out = []
    RESULTS["s2"] = out
    for rate in RATES:
        row = {"rate": rate, "seconds": S2_SECS}
        for target in ("ess_cat", "essd", "web_stomp"):
            wait_broker()
            try:
                res = s2_run(essd, rate, target, int(rate * S2_SECS))
            except Exception as e:  # noqa: BLE001 - keep the other rates
                log("S2 %d/s %s failed: %r" % (rate, target, e))
                row[target] = None
                row[target + "_error"] = repr(e)
                continue
            row[target] = res
            lat = res["latency_us"] or {}
            log("S2 %d/s %s: p50 %s p99 %s max %s us, lost %d" % (rate, target, lat.get("p50"), lat.get("p99"),
                                                                 lat.get("max"), res["lost"]))
        a = ((row.get("essd") or {}).get("latency_us") or {}).get("p99")
        b = ((row.get("web_stomp") or {}).get("latency_us") or {}).get("p99")
        c = ((row.get("ess_cat") or {}).get("latency_us") or {}).get("p99")
        row["p99_essd_over_web_stomp"] = ratio(a, b)
        row["p99_essd_over_ess_cat"] = ratio(a, c)
        out.append(row)


def wait_metrics_zero(essd, limit_s=30):
    deadline = time.time() + limit_s
    m = {}
    while time.time() < deadline:
        m = esslib.metrics(essd)
        if m.get("ess_websocket_connections", -1) == 0 and m.get("ess_subscriptions", -1) == 0:
            return True, m
        time.sleep(0.25)
    return False, m


def burst(args, pid_for_rss):
    """Start the load client with --hold, measure RSS when all are open, release."""
    before = rss_kib(pid_for_rss)
    p = subprocess.Popen([LC, *map(str, args), "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    held = line.strip() == "HOLDING"
    time.sleep(1.0)
    during = rss_kib(pid_for_rss)
    try:
        p.stdin.write("release\n")
        p.stdin.flush()
    except BrokenPipeError:
        pass  # it ended by itself: every client closed (the broker restarting?)
    so, se = p.communicate(timeout=120)
    res = json.loads([x for x in (line + so).splitlines() if x.startswith("{")][-1])
    res["held"] = held
    res["rss_before_kib"] = before
    res["rss_open_kib"] = during
    opened = max(1, res["opened"])
    res["rss_per_conn_kib"] = round((during - before) / opened, 2) if before and during else None
    return res


def s3_essd(essd, clients, streams):
    paths_file = os.path.join(WORK, "paths-%d" % clients)
    t = time.time()
    with open(paths_file, "w") as f:
        for i in range(clients):
            _, path = esslib.create_es(essd, streams[i % len(streams)])
            f.write(path + "?stream_from_ordinal=0\n")
    log("S3: %d event streams in %.1f s" % (clients, time.time() - t))
    time.sleep(1)
    res = burst(["ess", "--port", essd.public_port, "--paths-file", paths_file, "--clients", clients,
                 "--count", 1, "--timeout", 120], essd.proc.pid)
    ok, m = wait_metrics_zero(essd)
    res["released"] = ok
    res["metrics_after"] = {k: m.get(k) for k in ("ess_websocket_connections", "ess_subscriptions")}
    res["rss_after_kib"] = rss_kib(essd.proc.pid)
    log("S3 essd %d: opened %d failed %d open p99 %s ms, %s KiB/conn, released %s" % (
        clients, res["opened"], res["failed"], (res["open_ms"] or {}).get("p99"), res["rss_per_conn_kib"], ok))
    return res


def s3_floor(clients):
    """The same burst against `loadclient burst-server`, which only accepts,
    reads the head and answers 101 and one frame: what this machine's
    kernel and the load client allow before any server work."""
    port = esslib.free_port()
    srv = subprocess.Popen([LC, "burst-server", "--port", str(port), "--clients", str(clients), "--timeout", "120"],
                           stdout=subprocess.PIPE, text=True)
    try:
        srv.stdout.readline()
        res = lc("ess", "--port", port, "--path", "/", "--clients", clients, "--count", 1, "--timeout", 120,
                 timeout=300)
    finally:
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    log("S3 floor %d: open p99 %s ms, first message p99 %s ms" % (
        clients, (res.get("open_ms") or {}).get("p99"), (res.get("first_msg_ms") or {}).get("p99")))
    out = {k: res.get(k) for k in ("opened", "failed", "open_ms", "first_msg_ms", "client_cpu_s")}
    out.update({"clients": clients, "rss_per_conn_kib": None, "released": "n/a (floor)"})
    return out


def s3():
    wait_broker()
    nstreams = 1000
    admin = esslib.StreamAdmin()
    streams = []
    t = time.time()
    for i in range(nstreams):
        s = new_stream("s3-%04d" % i)
        for attempt in range(3):
            try:
                admin.create(s)
                admin.publish(s, [json_lines(1, 250)[0].encode()])
                break
            except (OSError, ConnectionError, RuntimeError):
                wait_broker()
                admin = esslib.StreamAdmin()
        streams.append(s)
    admin.close()
    log("S3: %d streams with one message each in %.1f s" % (nstreams, time.time() - t))
    out = {"streams": nstreams}
    RESULTS["s3"] = out
    for clients in S3_CLIENTS:
        out["floor_%d" % clients] = s3_floor(clients)
        wd = os.path.join(WORK, "s3-%d" % clients)
        os.makedirs(wd, exist_ok=True)
        essd = esslib.Essd(workdir=wd).start()  # a fresh process: its RSS baseline holds no earlier work
        try:
            out["essd_%d" % clients] = s3_essd(essd, clients, streams)
        finally:
            essd.stop()
    streams_file = os.path.join(WORK, "streams")
    with open(streams_file, "w") as f:
        f.write("\n".join(streams) + "\n")
    bp = beam_pid()
    res = burst(["stomp", "--port", STOMP_PORT, "--paths-file", streams_file, "--clients", nstreams, "--count", 1,
                 "--offset", "first", "--prefetch", 100, "--timeout", 120], bp)
    res["note"] = "rss is the broker's (beam.smp) RSS, which also holds the streams and other engineers' work"
    out["web_stomp_%d" % nstreams] = res
    log("S3 web-stomp %d: opened %d failed %d open p99 %s ms, %s KiB/conn (broker)" % (
        nstreams, res["opened"], res["failed"], (res["open_ms"] or {}).get("p99"), res["rss_per_conn_kib"]))
    e, s = out.get("essd_1000"), res
    if e:
        out["open_p99_essd_over_web_stomp"] = ratio((e["open_ms"] or {}).get("p99"), (s["open_ms"] or {}).get("p99"))
        out["first_msg_p99_essd_over_web_stomp"] = ratio((e["first_msg_ms"] or {}).get("p99"),
                                                         (s["first_msg_ms"] or {}).get("p99"))
    RESULTS["s3"] = out


def burst_split(paths, wd, essd, per_proc=9000):
    """Like burst(), over several load-client processes (each process may hold
    no more descriptors than the hard limit): all open at once, RSS read
    while every one holds."""
    before = rss_kib(essd.proc.pid)
    procs = []
    for i in range(0, len(paths), per_proc):
        pf = os.path.join(wd, "paths-%d" % i)
        with open(pf, "w") as f:
            f.write("\n".join(paths[i:i + per_proc]) + "\n")
        procs.append(subprocess.Popen([LC, "ess", "--port", str(essd.public_port), "--paths-file", pf, "--clients",
                                       str(len(paths[i:i + per_proc])), "--count", "0", "--timeout", "600", "--hold"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    lines = [p.stdout.readline() for p in procs]
    held = all(x.strip() == "HOLDING" for x in lines)
    time.sleep(1.0)
    during = rss_kib(essd.proc.pid)
    outs = []
    for p, line in zip(procs, lines):
        try:
            p.stdin.write("release\n")
            p.stdin.flush()
        except BrokenPipeError:
            pass
        so, se = p.communicate(timeout=300)
        js = [x for x in (line + so).splitlines() if x.startswith("{")]
        if not js:
            raise RuntimeError("loadclient exited with %s: %s" % (p.returncode, se.strip()[-600:]))
        outs.append(json.loads(js[-1]))
    res = {"clients": len(paths), "processes": len(procs), "held": held,
           "opened": sum(o["opened"] for o in outs), "failed": sum(o["failed"] for o in outs),
           "open_ms": {k: max((o["open_ms"] or {}).get(k) or 0 for o in outs) for k in ("p50", "p99", "max")},
           "open_ms_note": "the largest of the processes' percentiles",
           "rss_before_kib": before, "rss_open_kib": during}
    res["rss_per_conn_kib"] = round((during - before) / max(1, res["opened"]), 2) if before and during else None
    return res


def s5():
    """Memory (issue 15): IDLE_N idle connections held at once, each on its
    own event stream (live, from "now", so no message), spread over 100
    streams; a fresh essd whose public.max_connections allows them (the
    bench raises the descriptor limit, not the product's defaults). RSS per
    idle connection = (VmRSS with all open - VmRSS before) / N."""
    wait_broker()
    nstreams = 100
    admin = esslib.StreamAdmin()
    streams = []
    for i in range(nstreams):
        st = new_stream("s5-%03d" % i)
        admin.create(st)
        streams.append(st)
    admin.close()
    wd = os.path.join(WORK, "s5")
    os.makedirs(wd, exist_ok=True)
    cfg = os.path.join(wd, "essd.yaml")
    with open(cfg, "w") as f:
        f.write("public:\n  max_connections: %d\n" % (IDLE_N + 1000))
    essd = esslib.Essd(workdir=wd, config=cfg).start()
    import resource
    out = {"clients": IDLE_N, "streams": nstreams, "max_connections": IDLE_N + 1000,
           "nofile_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE))}
    RESULTS["s5"] = out
    try:
        t = time.time()
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as ex:
            paths = list(ex.map(lambda i: esslib.create_es(essd, streams[i % nstreams])[1], range(IDLE_N)))
        log("S5: %d event streams in %.1f s" % (IDLE_N, time.time() - t))
        time.sleep(1)
        b0 = proc_cpu_s(beam_pid()) if beam_pid() else None
        res = burst_split(paths, wd, essd)
        if b0 is not None:
            res["broker_cpu_s"] = round(proc_cpu_s(beam_pid()) - b0, 2)
        ok, m = wait_metrics_zero(essd, 120)
        res["released"] = ok
        res["metrics_after"] = {k: m.get(k) for k in ("ess_websocket_connections", "ess_subscriptions")}
        out.update(res)
        log("S5 %d idle: opened %d failed %d, open p99 %s ms, %s KiB/conn, released %s" % (
            IDLE_N, res["opened"], res["failed"], (res["open_ms"] or {}).get("p99"), res["rss_per_conn_kib"], ok))
    finally:
        try:
            essd.stop(timeout=60)
        except RuntimeError as e:  # noqa: BLE001 - keep the scenario's own error and figures
            out["stop_error"] = repr(e)


def s4(essd):
    wait_broker()
    stream = new_stream("s4")
    admin = esslib.StreamAdmin()
    admin.create(stream)
    admin.close()
    _, path = esslib.create_es(essd, stream)
    ws = esslib.ws_open(essd, path, rcvbuf=4096)  # never read: a stalled client
    samples = []
    stop = threading.Event()

    def sample():
        t0 = time.time()
        while not stop.is_set():
            samples.append([round(time.time() - t0, 1), rss_kib(essd.proc.pid)])
            stop.wait(1.0)

    th = threading.Thread(target=sample)
    th.start()
    pub = lc("pub", "--stream", stream, "--rate", 10000, "--seconds", S4_SECS, "--size", 250,
             timeout=S4_SECS * 4 + 30)
    time.sleep(2)
    stop.set()
    th.join()
    closed = None
    try:
        ws.sock.settimeout(0.1)
        import socket
        try:
            while True:  # drain what the kernel holds; find the close frame if any
                f = ws.recv(timeout=2)
                if f[0] == "close":
                    closed = [f[1], f[2]]
                    break
        except (OSError, ConnectionError, socket.timeout):
            pass
    finally:
        ws.sock.close()
    rss = [s[1] for s in samples]
    RESULTS["s4"] = {"rate": 10000, "seconds": S4_SECS, "publish": pub, "rss_kib_samples": samples,
                     "rss_min_kib": min(rss), "rss_max_kib": max(rss), "rss_growth_kib": max(rss) - rss[0],
                     "outbound_budget_bytes": 1048576, "stall_timeout_s": 30, "close_seen": closed}
    log("S4: RSS %d..%d KiB over %ds, close %s" % (min(rss), max(rss), S4_SECS, closed))


def cpu_s(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def fanout_run(essd, target, clients, rate, secs):
    """clients on one fresh stream, live; publish rate msgs/s for secs; measure."""
    stream = new_stream("fan-%s-%d" % (target.replace("_", ""), clients))
    admin = esslib.StreamAdmin()
    admin.create(stream)
    admin.close()
    n = int(rate * secs)
    if target == "essd":
        paths_file = os.path.join(WORK, "fan-paths-%d" % clients)
        with open(paths_file, "w") as f:
            for _ in range(clients):
                f.write(esslib.create_es(essd, stream)[1] + "\n")
        args = [LC, "ess", "--port", essd.public_port, "--paths-file", paths_file]
        pid = essd.proc.pid
    else:
        args = [LC, "stomp", "--port", STOMP_PORT, "--stream", stream, "--offset", "next", "--prefetch", 2000]
        pid = beam_pid()
    args += ["--clients", clients, "--count", n, "--latency", "--timeout", int(secs) + 60]
    cl = subprocess.Popen([str(x) for x in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = {}
        for _ in range(300):  # every session subscribed (essd), or a fixed settle time (Web-STOMP)
            time.sleep(0.1)
            if target == "essd":
                m = esslib.metrics(essd)
                if m.get("ess_subscriptions", 0) >= clients + 0:
                    break
        time.sleep(3.0 if target == "essd" else 8.0)
        subs = m.get("ess_broker_subscriptions") if target == "essd" else None
        c0 = cpu_s(pid) if pid else None
        pub = lc("pub", "--stream", stream, "--rate", rate, "--seconds", secs, "--size", 250,
                 timeout=secs * 4 + 120)
        so, se = cl.communicate(timeout=secs + 90)
        c1 = cpu_s(pid) if pid else None
    finally:
        if cl.poll() is None:
            cl.kill()
            cl.wait()
    res = json.loads([x for x in so.splitlines() if x.startswith("{")][-1])
    if se.strip():
        res["stderr"] = se.strip()[-600:]
    res["published"] = pub["published"]
    res["publish_rate"] = pub["rate"]
    res["lost"] = pub["published"] * clients - res["frames"]
    res["broker_subscriptions"] = subs
    res["server_cpu_s"] = round(c1 - c0, 3) if c0 is not None and c1 is not None else None
    res["server_cpu_us_per_frame"] = (round(1e6 * (c1 - c0) / res["frames"], 3)
                                      if res["frames"] and res["server_cpu_s"] is not None else None)
    res.pop("latency_hist", None)
    return res


def fanout(essd):
    """Issue 15: many clients on one stream live (shared subscription), vs
    one client alone, and Web-STOMP with as many subscribers on the same kind
    of stream. Server CPU is essd's (or the shared broker's beam.smp for
    Web-STOMP, which also does other engineers' work)."""
    wait_broker()
    out = {"rate": FAN_RATE, "seconds": FAN_SECS, "clients": FAN_CLIENTS}
    RESULTS["fanout"] = out
    for key, target, clients in (("essd_1", "essd", 1), ("essd_n", "essd", FAN_CLIENTS),
                                 ("web_stomp_n", "web_stomp", FAN_CLIENTS)):
        wait_broker()
        try:
            r = fanout_run(essd, target, clients, FAN_RATE, FAN_SECS)
        except Exception as e:  # noqa: BLE001 - keep the other rows
            log("fan-out %s failed: %r" % (key, e))
            out[key + "_error"] = repr(e)
            continue
        out[key] = r
        lat = r.get("latency_us") or {}
        log("fan-out %s: %d clients, frames %d, lost %d, p50 %s p99 %s us, server CPU %s s (%s us/frame), "
            "broker subs %s" % (key, clients, r["frames"], r["lost"], lat.get("p50"), lat.get("p99"),
                                r["server_cpu_s"], r["server_cpu_us_per_frame"], r["broker_subscriptions"]))
    a = ((out.get("essd_n") or {}).get("latency_us") or {}).get("p99")
    b = ((out.get("essd_1") or {}).get("latency_us") or {}).get("p99")
    out["p99_n_over_1"] = ratio(a, b)


def profile(essd):
    """Where essd's time goes during a replay: syscalls per message (strace -c)
    and the hottest symbols (perf, caller graph folded to self time)."""
    wait_broker()
    n = 200000
    stream = new_stream("prof")
    load_stream(stream, json_lines(n, 250))
    out = {"messages": n}
    _, path = esslib.create_es(essd, stream)
    st_file = os.path.join(WORK, "strace.txt")
    tr = subprocess.Popen(["strace", "-c", "-f", "-o", st_file, "-p", str(essd.proc.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    e = lc("ess", "--port", essd.public_port, "--path", path + "?stream_from_ordinal=0", "--count", n,
           "--timeout", 300)
    tr.send_signal(2)
    tr.wait(60)
    calls = {}
    with open(st_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                try:
                    calls[parts[-1]] = int(parts[3])
                except ValueError:
                    pass
    out["strace_replay"] = e
    # Batched sends leave well under one syscall per message: keep 4 decimals.
    out["syscalls_per_message"] = {k: round(v / n, 4) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                                   if v / n >= 0.0005}
    out["syscalls_per_message_total"] = round(sum(calls.values()) / n, 4)
    log("profile: %.2f syscalls per message: %s" % (out["syscalls_per_message_total"], out["syscalls_per_message"]))
    _, path = esslib.create_es(essd, stream)
    data = os.path.join(WORK, "perf.data")
    pf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-o", data, "-p", str(essd.proc.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    e = lc("ess", "--port", essd.public_port, "--path", path + "?stream_from_ordinal=0", "--count", n,
           "--timeout", 300)
    pf.send_signal(2)
    pf.wait(60)
    out["perf_replay"] = e
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio",
                        "--percent-limit", "0.8", "-g", "none"], capture_output=True, text=True, timeout=300)
    out["perf_self"] = [x.rstrip() for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")][:40]
    r = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "symbol", "--stdio",
                        "--percent-limit", "4", "-g", "none"], capture_output=True, text=True, timeout=300)
    out["perf_children"] = [x.rstrip() for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")][:40]
    RESULTS["profile"] = out


# ---------------------------------------------------------------- report

def versions(essd):
    v = {}
    try:
        v["essd"] = essd.json("GET", "/event-stream/version/")[1]
    except Exception as e:  # noqa: BLE001
        v["essd"] = str(e)
    r = subprocess.run(["git", "-C", SOURCE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    v["git"] = r.stdout.strip()
    r = esslib.broker_ctl("version")
    v["rabbitmq"] = r.stdout.strip()
    for pkg in ("libwebsockets-dev", "libuv1-dev", "librabbitmq-dev"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        v[pkg] = r.stdout.strip()
    return v


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "cpu": cpu, "free_g": free, "kernel": platform.release(),
            "load_start": LOAD_START, "load_end": uptime()}


def fmt(x, nd=0):
    if x is None:
        return "n/a"
    return ("{:,.%df}" % nd).format(x)


def summary(cmd):
    R = RESULTS
    m = R["machine"]
    L = ["# ESS Gateway benchmark, %s" % DATE, "",
         "Errors: %s" % json.dumps(R.get("errors")) if R.get("errors") else "No scenario failed.", "",
         "Command: `%s`" % cmd, "",
         "Machine: %s cores, %s, kernel %s; load (1/5/15 min) at start %s, at end %s." % (
             m["nproc"], m["cpu"], m["kernel"], m["load_start"], m["load_end"]), "",
         "```", m["free_g"].rstrip(), "```", "",
         "Versions: essd %s; RabbitMQ %s; libwebsockets %s; libuv %s; librabbitmq %s." % (
             (R["versions"].get("essd") or {}).get("version") if isinstance(R["versions"].get("essd"), dict) else
             R["versions"].get("essd"), R["versions"]["rabbitmq"], R["versions"]["libwebsockets-dev"],
             R["versions"]["libuv1-dev"], R["versions"]["librabbitmq-dev"]), ""]
    if "ceiling_loadclient" in R:
        c = R["ceiling_loadclient"]
        L += ["## Ceilings", "",
              "- Load client against `loadclient trivial`: %s msgs/s (%s MB/s), client CPU %.2f s." % (
                  fmt(c["msgs_per_s"]), fmt(c["mb_per_s"], 1), c["client_cpu_s"]), ""]
    if "s1" in R:
        L += ["## S1 replay from offset 0 (~250-byte bodies)", "",
              "| body | messages | ess-cat raw | essd | Web-STOMP | essd / ess-cat | essd / Web-STOMP | essd TTFM ms | Web-STOMP TTFM ms | client CPU s (essd run) | essd CPU µs/msg |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for kind in ("json", "text"):
            r = R["s1"].get(kind)
            if not r:
                continue
            e, s = r["essd"], r["web_stomp"]
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %s |" % (
                kind, fmt(r["messages"]), fmt(r["ess_cat"]["msgs_per_s"]), fmt(e["msgs_per_s"]),
                fmt(s["msgs_per_s"]), r["essd_vs_ess_cat"], r["essd_vs_web_stomp"],
                fmt((e["first_msg_ms"] or {}).get("p50"), 2), fmt((s["first_msg_ms"] or {}).get("p50"), 2),
                e["client_cpu_s"], e.get("essd_cpu_us_per_msg")))
        L.append("")
    if "s1r" in R:
        L += ["## S1r replay of streams written through AMQP 0-9-1, one message per publish (~250-byte bodies)", "",
              "| stream | messages | ess-cat | essd | Web-STOMP | essd / ess-cat | essd / Web-STOMP | essd CPU us/msg | essd TTFM ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for kind, r in R["s1r"].items():
            e, s = r["essd"], r["web_stomp"]
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                kind, fmt(r["messages"]), fmt(r["ess_cat"]["msgs_per_s"]), fmt(e["msgs_per_s"]),
                fmt(s["msgs_per_s"]), r["essd_vs_ess_cat"], r["essd_vs_web_stomp"], e.get("essd_cpu_us_per_msg"),
                fmt((e["first_msg_ms"] or {}).get("p50"), 2)))
        L.append("")
    if "s2r" in R:
        L += ["## S2r live latency, ess-cat, essd and Web-STOMP on the same stream at once (µs)", "",
              "| rate/s | published | target | received | lost | p50 | p99 | p99.9 | max | essd p50 - ess-cat | essd p99 / ess-cat |",
              "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in R["s2r"]:
            if "error" in row:
                L.append("| %s | error: %s | | | | | | | | | |" % (fmt(row["rate"]), row["error"]))
                continue
            for t in ("ess_cat", "essd", "web_stomp"):
                r = row.get(t)
                lat = r["latency_us"] or {}
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    fmt(row["rate"]), fmt(row["publish"]["published"]), t, fmt(r["frames"]), r["lost"],
                    fmt(lat.get("p50")), fmt(lat.get("p99")), fmt(lat.get("p999")), fmt(lat.get("max")),
                    fmt(row.get("p50_essd_minus_ess_cat_us")) if t == "essd" else "",
                    row.get("p99_essd_over_ess_cat") if t == "essd" else ""))
        L += ["", "Run-queue wait (ms a process was runnable but waited for a CPU, /proc/PID/schedstat) "
              "during each run, for the two processes on essd's path that ess-cat's path does not have:", "",
              "| rate/s | essd wait ms (time slices) | essd's client wait ms (time slices) |",
              "| ---: | ---: | ---: |"]
        for row in R["s2r"]:
            if "error" not in row:
                L.append("| %s | %s (%s) | %s (%s) |" % (
                    fmt(row["rate"]), row.get("essd_runq_wait_ms"), row.get("essd_slices"),
                    row.get("essd_client_runq_wait_ms"), row.get("essd_client_slices")))
        L.append("")
    if "s2" in R:
        L += ["## S2 live publish-to-receive latency (AMQP 0-9-1 publish, µs)", "",
              "`ess_cat` is the floor: a direct stream-protocol client (`ess-cat --latency`, no WebSocket) "
              "on its own fresh stream with the same publisher.", "",
              "| rate/s | s | target | published (rate) | broker confirmed all after s | received | lost | p50 | p99 | p99.9 | max |",
              "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in R["s2"]:
            for t in ("ess_cat", "essd", "web_stomp"):
                r = row.get(t)
                if not r:
                    continue
                lat = r["latency_us"] or {}
                L.append("| %s | %s | %s | %s (%s/s) | %s | %s | %s | %s | %s | %s | %s |" % (
                    fmt(row["rate"]), row["seconds"], t, fmt(r["published"]), fmt(r["publish_rate"]),
                    fmt(r.get("broker_confirmed_after_s"), 1) if r.get("broker_confirmed") == r["published"] else
                    "%s confirmed" % r.get("broker_confirmed"),
                    fmt(r["frames"]), r["lost"], fmt(lat.get("p50")), fmt(lat.get("p99")), fmt(lat.get("p999")),
                    fmt(lat.get("max"))))
        L.append("")
    if "s3" in R:
        L += ["## S3 connection burst (each client on its own event stream, from ordinal 0, one message each)", "",
              "| target | clients | opened | failed | open p50 ms | open p99 ms | first msg p99 ms | RSS/conn KiB | released |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for k, r in R["s3"].items():
            if not isinstance(r, dict):
                continue
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                k, r["clients"], r["opened"], r["failed"], fmt((r["open_ms"] or {}).get("p50"), 2),
                fmt((r["open_ms"] or {}).get("p99"), 2), fmt((r["first_msg_ms"] or {}).get("p99"), 2),
                r["rss_per_conn_kib"], r.get("released", "n/a (broker)")))
        L += ["", "Web-STOMP's RSS/conn is the broker's beam.smp delta (shared broker: indicative only).", ""]
    if "s5" in R and "opened" in R["s5"]:
        r = R["s5"]
        L += ["## S5 idle connections held (live, no message; %s streams)" % r["streams"], "",
              "| clients | opened | failed | open p50 ms | open p99 ms | RSS before KiB | RSS all open KiB | RSS/conn KiB | broker CPU s | released |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
              "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                  fmt(r["clients"]), fmt(r["opened"]), r["failed"], fmt((r["open_ms"] or {}).get("p50"), 2),
                  fmt((r["open_ms"] or {}).get("p99"), 2), fmt(r["rss_before_kib"]), fmt(r["rss_open_kib"]),
                  r["rss_per_conn_kib"], r.get("broker_cpu_s"), r["released"]), ""]
    if "s4" in R:
        r = R["s4"]
        L += ["## S4 one stalled client at 10k msg/s", "",
              "essd RSS min %s KiB, max %s KiB, growth %s KiB over %s s (outbound budget %s bytes); close frame seen: %s." % (
                  fmt(r["rss_min_kib"]), fmt(r["rss_max_kib"]), fmt(r["rss_growth_kib"]), r["seconds"],
                  fmt(r["outbound_budget_bytes"]), r["close_seen"]), ""]
    if "fanout" in R:
        r = R["fanout"]
        L += ["## Fan-out: clients on one stream, live, %s msg/s for %s s (~250-byte bodies)" % (
                  fmt(r["rate"]), r["seconds"]), "",
              "Server CPU is essd's user+system time during the run; for Web-STOMP it is the shared "
              "broker's (beam.smp, which also serves other work).", "",
              "| target | clients | broker subs | frames | lost | p50 µs | p99 µs | max µs | server CPU s | µs CPU/frame |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k in ("essd_1", "essd_n", "web_stomp_n"):
            x = r.get(k)
            if not x:
                continue
            lat = x.get("latency_us") or {}
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                k, x["clients"], x.get("broker_subscriptions"), fmt(x["frames"]), x["lost"], fmt(lat.get("p50")),
                fmt(lat.get("p99")), fmt(lat.get("max")), x.get("server_cpu_s"), x.get("server_cpu_us_per_frame")))
        L += ["", "p99 of %s clients over one client's: %s." % (r["clients"], r.get("p99_n_over_1")), ""]
    if "profile" in R:
        r = R["profile"]
        L += ["## Profile of essd during a %s-message replay" % fmt(r["messages"]), "",
              "Syscalls per message (strace -c -f, all threads): %s total; %s." % (
                  r["syscalls_per_message_total"], ", ".join("%s %s" % kv for kv in r["syscalls_per_message"].items())),
              "", "perf, self time:", "", "```"] + r["perf_self"][:25] + ["```", "",
              "perf, with children (>= 4%):", "", "```"] + r["perf_children"][:25] + ["```", ""]
    if "perf_top" in R:
        L += ["## perf during S1 (essd, self time)", "", "```", R["perf_top"].rstrip(), "```", ""]
    return "\n".join(L) + "\n"


def perf_report():
    data = os.path.join(OUTDIR, "%s-s1-perf.data" % DATE)
    if not os.path.exists(data):
        return
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio",
                        "--percent-limit", "1.5", "-g", "none"], capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
    RESULTS["perf_top"] = "\n".join(lines[:30])
    os.remove(data)


def main():
    global LC, CAT, N1, N1T, RATES, S2_SECS, S3_CLIENTS, S4_SECS, PREFIX, DATE, OUTDIR, WORK, PERF, LOAD_START
    global N1R_SLOW, N1R_FAST, S2R_REPEAT, IDLE_N
    global FAN_CLIENTS, FAN_RATE, FAN_SECS
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build", required=True)
    ap.add_argument("--loadclient", required=True)
    ap.add_argument("--only", default=None,
                    help="ceiling,s1,s1r,s2,s2r,s3,s4,s5,fanout,profile (default: all; --quick: no profile)")
    ap.add_argument("--fan-clients", type=int, default=1000, help="clients of the fan-out scenario")
    ap.add_argument("--cmd", default="bench/run")
    ap.add_argument("--idle", type=int, default=0, help="S5 idle connections (default 20000; --quick 2000)")
    ap.add_argument("--perf-s1", action="store_true", help="also perf-record essd during S1 (slows it)")
    a = ap.parse_args()
    LC, CAT = a.loadclient, os.path.join(a.build, "ess-cat")
    esslib.ESSD = os.path.join(a.build, "essd")
    esslib.CAT = CAT
    q = a.quick
    N1, N1T = (200000, 50000) if q else (1000000, 200000)
    RATES = [1000, 5000, 20000] if q else [1000, 5000, 20000, 50000]
    S2_SECS = 4 if q else 10
    S3_CLIENTS = [1000] if q else [1000, 5000]
    S4_SECS = 12 if q else 40
    N1R_SLOW, N1R_FAST = (8000, 50000) if q else (20000, 200000)  # 1k msgs/s: 8 s or 20 s of publishing
    S2R_REPEAT = 1 if q else 2
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # essd needs some 200 descriptors besides its clients (listeners, one
    # broker connection per 255 subscriptions, the database): 20,000 when
    # the hard limit allows it, else as many as it does.
    IDLE_N = a.idle or (2000 if q else min(20000, hard - 300 if hard != resource.RLIM_INFINITY else 20000))
    PERF = a.perf_s1
    FAN_CLIENTS, FAN_RATE, FAN_SECS = a.fan_clients, 1000, (5 if q else 10)
    PREFIX = "bench-%d" % os.getpid()
    DATE = datetime.datetime.utcnow().strftime("%Y%m%dT%H%MZ") + ("-quick" if q else "")
    OUTDIR = os.path.join(HERE, "results")
    os.makedirs(OUTDIR, exist_ok=True)
    import tempfile
    WORK = tempfile.mkdtemp(prefix="ess-bench-")
    LOAD_START = uptime()
    only = (a.only or ("ceiling,s1,s1r,s2,s2r,s3,s4,s5,fanout" if q else
                       "ceiling,s1,s1r,s2,s2r,s3,s4,s5,fanout,profile")).split(",")
    essd = esslib.Essd(workdir=os.path.join(WORK, "main"))
    os.makedirs(essd.workdir, exist_ok=True)
    essd.start()
    t0 = time.time()
    try:
        RESULTS["versions"] = versions(essd)
        for name, fn in (("ceiling", ceilings), ("s1", lambda: s1(essd)), ("s1r", lambda: s1r(essd)),
                         ("s2", lambda: s2(essd)), ("s2r", lambda: s2r(essd)),
                         ("s4", lambda: s4(essd)), ("fanout", lambda: fanout(essd)), ("s3", s3), ("s5", s5),
                         ("profile", lambda: profile(essd))):
            if name not in only:
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - one scenario's failure must not lose the others
                log("%s failed: %r" % (name, e))
                RESULTS.setdefault("errors", {})[name] = repr(e)
                if essd.proc.poll() is not None:
                    essd.start()
    finally:
        essd.stop()
        wait_broker()
        try:
            admin = esslib.StreamAdmin()
            bad = [s for s in STREAMS if admin.delete(s) not in (1, 2)]
            admin.close()
            for s in bad:
                delete_quiet(s)
            log("deleted %d streams (%d through ess-cat)" % (len(STREAMS), len(bad)))
            # The broker has answered OK and kept a stream before: check and retry.
            r = esslib.broker_ctl("list_queues", "-q", "name")
            left = [x.strip() for x in r.stdout.splitlines() if x.strip().startswith(PREFIX + "-")]
            for s in left:
                delete_quiet(s)
            if left:
                log("%d streams were still there; deleted them through ess-cat" % len(left))
        except (OSError, ConnectionError, RuntimeError) as e:
            log("stream cleanup through the stream protocol failed (%s); using ess-cat" % e)
            for s in STREAMS:
                delete_quiet(s)
    perf_report()
    RESULTS["machine"] = machine()
    RESULTS["wall_s"] = round(time.time() - t0, 1)
    RESULTS["command"] = a.cmd
    for k in ("ceiling_loadclient", "s1", "s1r", "s2", "s2r", "s3", "s4", "s5", "fanout", "profile"):
        if k in RESULTS:
            with open(os.path.join(OUTDIR, "%s-%s.json" % (DATE, k.replace("_loadclient", ""))), "w") as f:
                json.dump({"scenario": k, "result": RESULTS[k], "machine": RESULTS["machine"],
                           "versions": RESULTS["versions"], "command": a.cmd}, f, indent=1)
    md = summary(a.cmd)
    with open(os.path.join(OUTDIR, "%s-summary.md" % DATE), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
