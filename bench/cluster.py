"""S1 (replay) and S2 (live latency) of docs/benchmarks.md through the
scale-out setup of scripts/cluster, against one essd on one node, in the
same run (issue 14). Run through bench/cluster; Python stdlib only.

Targets, measured one after the other for each scenario:
  single    a fresh essd of its own on the single-node broker of
            scripts/broker (stream 5552, AMQP 5672)
  replica   essd replica 1 of the cluster, directly (its public and
            internal ports): the cost of the replicated 3-node stream
  haproxy   the cluster through HAProxy (public 18080, internal 18090,
            three replicas on the shared registry): what a client behind
            the ingress gets

S1: one stream of N JSON bodies of ~250 bytes per target (loaded through
that target's broker; on the cluster through node 3, replicated on all
three), `ess-cat --from first --count N --quiet` on the same broker as the
floor, then one load client from stream_from_ordinal=0: msgs/s and time to
first message. S2: per rate, a fresh stream per target, one load client on
"now", `loadclient pub` at the rate for S seconds through that target's
broker (node 3 for the cluster): p50/p99/max publish-to-receive, loss.

Every essd runs the same binary (--build, normally the one scripts/cluster
runs). Writes bench/results/<date>-cluster.json and <date>-cluster.md.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import esslib  # noqa: E402

with open(os.path.join(SOURCE, ".var", "cluster", "endpoints.json")) as f:
    EP = json.load(f)
PREFIX = "bench-cl-%d" % os.getpid()
STREAMS = []


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Target:
    def __init__(self, name, public_port, internal, amqp, stream_port, essd=None):
        self.name, self.public_port, self.internal = name, public_port, internal
        self.amqp, self.stream_port, self.essd = amqp, stream_port, essd

    def env(self):
        return dict(os.environ, ESS_AMQP_URL=self.amqp, ESS_STREAM_PORT=str(self.stream_port))

    def create_es(self, stream):
        import urllib.request
        req = urllib.request.Request(self.internal + "/event-stream/", method="POST",
                                     data=json.dumps({"routing_key": stream}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.loads(r.read())
        return "/event-stream/" + body["location"].rsplit("/", 1)[1]


def lc(*args, timeout=600):
    r = subprocess.run([LC, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError("loadclient %s: %s" % (args[0], (r.stdout + r.stderr)[-500:]))
    return json.loads(lines[-1])


def json_lines(n, size):
    head = '{"type":"MerchantProcessingCharge","seq":%d,"t":0,"merchant_kind":"DATA_MANAGER","pad":"'
    return [(head % i) + "x" * max(1, size - len(head % i) - 2) + '"}' for i in range(n)]


def new_stream(tag, target):
    name = "%s-%s-%s" % (PREFIX, tag, target.name)
    STREAMS.append((name, target))
    return name


def cat(target, *args, stdin=None, timeout=900):
    return subprocess.run([CAT, *map(str, args)], input=stdin, capture_output=True,
                          timeout=timeout, env=target.env())


def s1(targets, n):
    data = "".join(x + "\n" for x in json_lines(n, 250)).encode()
    out = {"messages": n, "body_bytes": 250}
    for t in targets:
        stream = new_stream("s1", t)
        t0 = time.time()
        r = cat(t, "--publish", "--create", stream, stdin=data)
        if r.returncode != 0:
            raise RuntimeError("ess-cat --publish on %s: %s" % (t.name, r.stderr.decode()[-300:]))
        load_s = time.time() - t0
        t0 = time.time()
        r = cat(t, stream, "--from", "first", "--count", n, "--quiet", timeout=600)
        text = (r.stdout + r.stderr).decode(errors="replace")
        import re
        m = re.search(r"([0-9.]+)\s*msgs?/s", text)
        floor = float(m.group(1)) if m else None
        path = t.create_es(stream)
        e = lc("ess", "--port", t.public_port, "--path", path + "?stream_from_ordinal=0",
               "--count", n, "--timeout", 300)
        ttfm = (e.get("first_msg_ms") or {}).get("p50")
        log("S1 %-8s load %.1f s; ess-cat %s msgs/s; essd %.0f msgs/s, first message %s ms" %
            (t.name, load_s, floor, e["msgs_per_s"], ttfm))
        out[t.name] = {"load_s": round(load_s, 1), "ess_cat_msgs_per_s": floor, "essd": e,
                       "essd_vs_ess_cat": round(e["msgs_per_s"] / floor, 3) if floor else None}
    RESULTS["s1"] = out


def s2(targets, rates, secs):
    rows = []
    for rate in rates:
        row = {"rate": rate, "seconds": secs}
        for t in targets:
            stream = new_stream("s2-%d" % rate, t)
            r = cat(t, "--publish", "--create", stream, stdin=b"")
            if r.returncode != 0:
                raise RuntimeError("ess-cat --create on %s: %s" % (t.name, r.stderr.decode()[-300:]))
            path = t.create_es(stream)
            n = int(rate * secs)
            cl = subprocess.Popen([LC, "ess", "--port", str(t.public_port), "--path", path,
                                   "--count", str(n), "--latency", "--timeout", str(int(secs) + 15)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(3.5)
                pub = lc("pub", "--stream", stream, "--rate", rate, "--seconds", secs, "--size", 250,
                         "--port", port_of(t.amqp), timeout=secs * 4 + 30)
                so, se = cl.communicate(timeout=secs + 30)
            finally:
                if cl.poll() is None:
                    cl.kill()
                    cl.wait()
            res = json.loads([x for x in so.splitlines() if x.startswith("{")][-1])
            res["published"] = pub["published"]
            res["publish_rate"] = pub["rate"]
            res["lost"] = pub["published"] - res["frames"]
            lat = res.get("latency_us") or {}
            log("S2 %d/s %-8s p50 %s p99 %s max %s us, lost %d" %
                (rate, t.name, lat.get("p50"), lat.get("p99"), lat.get("max"), res["lost"]))
            row[t.name] = res
        rows.append(row)
    RESULTS["s2"] = rows


def ms(us):
    return "%.1f" % (us / 1000.0) if us is not None else "-"


def ratio(a, b):
    return "%.2f" % (a / b) if a and b else "-"


def summary(cmd, names):
    s1r, lines = RESULTS.get("s1"), []
    lines.append("# Cluster benchmark %s\n" % DATE)
    lines.append("Command: `%s` (%s)\n" % (cmd, RESULTS["machine"]))
    lines.append("Targets: single = one essd on the single-node broker (scripts/broker); replica "
                 "= essd replica 1 of scripts/cluster directly; haproxy = the three replicas "
                 "through HAProxy. Same essd binary for all. 2 shared cores: compare ratios.\n")
    if s1r:
        lines.append("## S1 replay, %d JSON messages of ~250 bytes, one client from offset 0\n" %
                     s1r["messages"])
        lines.append("| target | essd msgs/s | vs ess-cat on its broker | vs single | first message ms |")
        lines.append("| --- | --- | --- | --- | --- |")
        base = s1r["single"]["essd"]["msgs_per_s"] if "single" in s1r else None
        for n in names:
            r = s1r.get(n)
            if r:
                e = r["essd"]
                lines.append("| %s | %.0f | %s | %s | %s |" % (
                    n, e["msgs_per_s"], r["essd_vs_ess_cat"], ratio(e["msgs_per_s"], base),
                    "%.1f" % (e.get("first_msg_ms") or {}).get("p50", -1)))
        lines.append("")
    if RESULTS.get("s2"):
        lines.append("## S2 live latency, one client, publish-to-receive\n")
        lines.append("| rate | target | p50 ms | p99 ms | max ms | lost | p99 vs single |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for row in RESULTS["s2"]:
            base = ((row.get("single") or {}).get("latency_us") or {}).get("p99")
            for n in names:
                r = row.get(n)
                if r:
                    lat = r.get("latency_us") or {}
                    lines.append("| %d/s | %s | %s | %s | %s | %d | %s |" % (
                        row["rate"], n, ms(lat.get("p50")), ms(lat.get("p99")), ms(lat.get("max")),
                        r["lost"], ratio(lat.get("p99"), base)))
        lines.append("")
    return "\n".join(lines)


def main():
    global LC, CAT, RESULTS, DATE
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--loadclient", required=True)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--rates", default="1000,5000")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--only", default="s1,s2")
    ap.add_argument("--cmd", default="bench/cluster")
    a = ap.parse_args()
    LC, CAT = a.loadclient, os.path.join(a.build, "ess-cat")
    esslib.ESSD = os.path.join(a.build, "essd")
    DATE = datetime.datetime.utcnow().strftime("%Y%m%dT%H%MZ")
    RESULTS = {"date": DATE, "cmd": a.cmd, "machine": "%d cores, %s" % (os.cpu_count(),
                                                                        os.uname().release)}
    single = esslib.Essd(env={"ESS_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
                              "ESS_STREAM_PORT": "5552"})
    single.start()
    r1, hp = EP["replicas"][0], EP["haproxy"]
    b1, b3 = EP["brokers"][0], EP["brokers"][2]
    targets = [
        Target("single", single.public_port, "http://127.0.0.1:%d" % single.internal_port,
               "amqp://guest:guest@127.0.0.1:5672/", 5552, single),
        # Loaded and published through node 3; replica 1 reads through node 1.
        Target("replica", port_of(r1["public"]), r1["internal"], b3["amqp"], b3["stream_port"]),
        Target("haproxy", port_of(hp["public"]), hp["internal"], b3["amqp"], b3["stream_port"]),
    ]
    names = [t.name for t in targets]
    try:
        if "s1" in a.only:
            s1(targets, a.messages)
        if "s2" in a.only:
            s2(targets, [int(x) for x in a.rates.split(",")], a.seconds)
    finally:
        single.stop()
        for name, t in STREAMS:
            cat(t, "--delete", name, timeout=60)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    base = os.path.join(HERE, "results", "%s-cluster" % DATE)
    with open(base + ".json", "w") as f:
        json.dump(RESULTS, f, indent=1)
        f.write("\n")
    text = summary(a.cmd, names)
    with open(base + ".md", "w") as f:
        f.write(text + "\n")
    print(text)
    log("wrote %s.json and .md" % base)


if __name__ == "__main__":
    main()
