"""The operator console at scale (#16): GET /admin/state with 5,000 live
WebSocket connections, and the live feed's cost per message (A/B).

  bench/console_state.py [--clients 5000] [--streams 20] [--rate 200] [--seconds 10]

Starts its own essd (build/essd) against the shared broker, creates
--streams broker streams with one message each and --clients event streams
over them (round robin), opens --clients WebSocket clients with the load
client (bench/loadclient.c, built here with cc), then:

1. times GET /admin/state (client wall time and essd's own access-log
   time) for a default page, sort=lag, a filter and limit=500;
2. in a second, fresh essd with --ab-clients reading clients (no idle
   holders), publishes --rate messages/s for --seconds to every stream,
   alternately with no feed listener (A) and with 4 listeners on
   /admin/feed (B), and compares essd's CPU time per delivered frame.

Writes bench/results/<UTC date>-console.json and prints a summary. A
measurement, not a test: no threshold. Streams it creates start with
"bench-console-<pid>-" and are deleted at the end.
"""
import argparse
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import esslib  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--clients", type=int, default=5000)
ap.add_argument("--streams", type=int, default=20)
ap.add_argument("--rate", type=int, default=50, help="messages/s per stream while measuring the feed")
ap.add_argument("--ab-clients", type=int, default=100)
ap.add_argument("--seconds", type=int, default=10)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()

BUILD = os.environ.get("ESS_BUILD_DIR") or os.path.join(SOURCE, "build")
LC = os.path.join(BUILD, "bench", "loadclient")
os.makedirs(os.path.dirname(LC), exist_ok=True)
subprocess.run(["cc", "-std=c11", "-O2", "-D_GNU_SOURCE", "-o", LC, os.path.join(HERE, "loadclient.c"),
                "-lrabbitmq"], check=True)
PREFIX = "bench-console-%d" % os.getpid()


def log(*a):
    print("[console-bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))], 2)


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 50), "p99": pct(xs, 99), "max": round(max(xs), 2)}


def access_ms(essd, marker):
    """essd's own times (access log) of the requests whose target contains marker."""
    out = []
    for line in essd.output().splitlines():
        if '"GET /admin/state' in line and marker in line:
            m = re.search(r" (\d+\.\d+)ms$", line)
            if m:
                out.append(float(m.group(1)))
    return out


streams = ["%s-%02d" % (PREFIX, i) for i in range(args.streams)]
admin = esslib.StreamAdmin()
for s in streams:
    admin.create(s)
    admin.publish(s, [b'{"seed":1}'])
admin.close()

work = __import__("tempfile").mkdtemp(prefix="ess-console-bench-")
essd = esslib.Essd(workdir=work).start()
result = {"clients": args.clients, "streams": args.streams, "when": datetime.datetime.utcnow().isoformat() + "Z",
          "cpus": os.cpu_count(), "loadavg_start": open("/proc/loadavg").read().split()[:3]}
holders = []
try:
    t0 = time.time()
    paths = os.path.join(work, "paths")
    with open(paths, "w") as f:
        for i in range(args.clients):
            _, path = esslib.create_es(essd, streams[i % len(streams)])
            f.write(path + "?stream_from_ordinal=0\n")
    log("%d event streams in %.1f s" % (args.clients, time.time() - t0))
    # In batches of 1,000: a burst of 5,000 at once meets the edge's cap on
    # connections still being read (4,096) and some would be closed.
    with open(paths) as f:
        lines = f.read().splitlines()
    holders = []
    for b in range(0, len(lines), 1000):
        part = os.path.join(work, "paths-%d" % b)
        with open(part, "w") as f:
            f.write("\n".join(lines[b:b + 1000]) + "\n")
        h = subprocess.Popen([LC, "ess", "--port", str(essd.public_port), "--paths-file", part, "--clients",
                              str(len(lines[b:b + 1000])), "--count", "1", "--timeout", "300", "--hold"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        holders.append(h)
        line = h.stdout.readline().strip()
        if line != "HOLDING":
            raise RuntimeError("load client: %r %s" % (line, h.stderr.read()[-2000:]))
    st, body = essd.json("GET", "/admin/state?limit=1")
    live = body["gateway"]["live_sessions"]
    log("%d clients open (%d live sessions)" % (args.clients, live))
    result["live_sessions"] = live
    time.sleep(6)  # one lag-poll round

    cases = {
        "default page (limit 50, sort id)": "/admin/state?case=default",
        "sort=lag desc": "/admin/state?case=lag&sort=lag",
        "filter (a routing key: 1/streams of the rows)": "/admin/state?case=filter&filter=" + streams[3],
        "limit=500 sort=rate": "/admin/state?case=big&limit=500&sort=rate",
    }
    result["state"] = {}
    for name, path in cases.items():
        wall = []
        size = 0
        c0 = cpu_s(essd.proc.pid)
        for _ in range(30):
            t = time.perf_counter()
            st, hdrs, data = essd.request("GET", path)
            wall.append((time.perf_counter() - t) * 1000)
            size = len(data)
            assert st == 200, (st, data[:200])
            time.sleep(0.05)
        cpu_ms = (cpu_s(essd.proc.pid) - c0) * 1000 / 30  # includes the idle loop's own work
        marker = path.split("case=")[1].split("&")[0]
        server = access_ms(essd, "case=" + marker)
        result["state"][name] = {"wall_ms": summary(wall), "essd_ms": summary(server), "bytes": size,
                                 "essd_cpu_ms_per_request": round(cpu_ms, 2)}
        log("%-45s wall p50 %.2f p99 %.2f ms; essd p50 %.2f p99 %.2f ms; CPU %.2f ms/request; %d bytes" % (
            name, pct(wall, 50), pct(wall, 99), pct(server, 50), pct(server, 99), cpu_ms, size))
    result["loadavg_after_state"] = open("/proc/loadavg").read().split()[:3]
    for h in holders:
        try:
            h.stdin.write("release\n")
            h.stdin.flush()
            h.communicate(timeout=120)
        except Exception:  # noqa: BLE001
            h.kill()
    holders = []
    essd.stop()

    # The feed A/B, on a fresh essd with reading clients only.
    os.makedirs(os.path.join(work, "ab"), exist_ok=True)
    essd = esslib.Essd(workdir=os.path.join(work, "ab")).start()
    ab_paths = []
    for i in range(args.ab_clients):
        ab_paths.append(esslib.create_es(essd, streams[i % len(streams)])[1])

    # The feed: A (no listener) and B (4 listeners), alternately.
    def feeds(n, stop):
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", essd.internal_port))
            s.sendall(b"GET /admin/feed HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        got = [0]

        def drain():
            while not stop.is_set():
                for s in socks:
                    s.settimeout(0.2)
                    try:
                        got[0] += s.recv(65536).count(b"event: tick")
                    except socket.timeout:
                        pass
            for s in socks:
                s.close()
        th = threading.Thread(target=drain, daemon=True)
        th.start()
        return th, got

    def run(listeners):
        stop = threading.Event()
        th, got = feeds(listeners, stop) if listeners else (None, [0])
        pf = os.path.join(work, "ab-paths")
        with open(pf, "w") as f:
            f.write("\n".join(ab_paths) + "\n")
        readers = subprocess.Popen([LC, "ess", "--port", str(essd.public_port), "--paths-file", pf, "--clients",
                                    str(args.ab_clients), "--count", str(args.rate * args.seconds),
                                    "--timeout", str(args.seconds + 60)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Publish only once every reader is subscribed (they start at the next message).
        deadline = time.time() + 60
        while time.time() < deadline and esslib.metrics(essd).get("ess_subscriptions", 0) < args.ab_clients:
            time.sleep(0.2)
        time.sleep(0.5)
        _, m0 = None, esslib.metrics(essd)
        c0 = cpu_s(essd.proc.pid)
        pubs = [subprocess.Popen([LC, "pub", "--stream", s, "--rate", str(args.rate), "--seconds",
                                  str(args.seconds), "--size", "200"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for s in streams]
        for p in pubs:
            p.wait(args.seconds + 120)
        time.sleep(1)  # the last frames out
        c1 = cpu_s(essd.proc.pid)
        m1 = esslib.metrics(essd)
        readers.wait(120)
        stop.set()
        if th:
            th.join(5)
        frames = m1.get("ess_messages_out_total", 0) - m0.get("ess_messages_out_total", 0)
        return {"listeners": listeners, "cpu_s": round(c1 - c0, 3), "frames": frames,
                "cpu_us_per_frame": round((c1 - c0) * 1e6 / frames, 3) if frames else None,
                "feed_events_read": got[0]}

    result["feed_ab"] = []
    for r in range(args.rounds):
        for listeners in (0, 4):
            res = run(listeners)
            result["feed_ab"].append(res)
            log("feed listeners %d: %d frames, %.2f s CPU, %.3f us/frame, %d events read" % (
                listeners, res["frames"], res["cpu_s"], res["cpu_us_per_frame"] or 0, res["feed_events_read"]))
    result["feed_ab_note"] = ("%d reading clients over %d streams, %d msg/s per stream for %d s; CPU is essd's "
                              "utime+stime while publishing (the machine is shared: compare the spread of "
                              "A with A)" % (args.ab_clients, args.streams, args.rate, args.seconds))
    a = [x["cpu_us_per_frame"] for x in result["feed_ab"] if x["listeners"] == 0 and x["cpu_us_per_frame"]]
    b = [x["cpu_us_per_frame"] for x in result["feed_ab"] if x["listeners"] == 4 and x["cpu_us_per_frame"]]
    if a and b:
        result["feed_cpu_us_per_frame"] = {"without": statistics.mean(a), "with_4_listeners": statistics.mean(b),
                                           "difference_pct": round((statistics.mean(b) / statistics.mean(a) - 1) * 100, 1)}
        log("feed A/B: %.3f vs %.3f us/frame (%+.1f%%)" % (statistics.mean(a), statistics.mean(b),
                                                          result["feed_cpu_us_per_frame"]["difference_pct"]))
    result["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
finally:
    for h in holders:
        try:
            h.stdin.write("release\n")
            h.stdin.flush()
            h.communicate(timeout=120)
        except Exception:  # noqa: BLE001
            h.kill()
    essd.stop()
    for s in streams:
        esslib.delete_stream(s)

os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
out = os.path.join(HERE, "results", datetime.datetime.utcnow().strftime("%Y%m%dT%H%MZ") + "-console.json")
with open(out, "w") as f:
    json.dump(result, f, indent=2)
log("wrote " + out)
