"""Fan-out latency against the machine's load (issue 15): one essd, one
client, then N clients on one live stream at several publish rates, one
after the other in the same run. For each: p50/p99 publish-to-receive, the
CPU seconds of essd, the load client and the broker, and how busy the
machine's cores were (/proc/stat) while it ran. It shows at which frame
rate out the 2 cores saturate and the N-client p99 leaves the one-client
p99's range, and who holds the CPU then.

Usage: python3 bench/fanout_rates.py [--clients N] [--rates 100,250,500,1000]
       [--seconds S]   (uses build-bench/, or $ESS_BENCH_BUILD)
Writes bench/results/<date>-fanout-rates.json and prints a Markdown table."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios  # noqa: E402
from scenarios import esslib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.environ.get("ESS_BENCH_BUILD") or os.path.join(ROOT, "build-bench")


def cpu_times():
    """Busy and total jiffies of all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def schedstat(pid):
    """Seconds on a CPU and waiting on a run queue (/proc/PID/schedstat)."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            run, wait, _ = f.read().split()
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return None


class ClientWatch(threading.Thread):
    """The load client's last run/wait seconds, sampled while it lives."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.last, self.stop = str(port), None, False

    def run(self):
        pid = None
        while not self.stop:
            if pid is None:
                r = subprocess.run(["pgrep", "-f", "loadclient ess --port %s " % self.port],
                                   capture_output=True, text=True)
                pid = int(r.stdout.split()[0]) if r.stdout.split() else None
            if pid is not None:
                v = schedstat(pid)
                if v is None:
                    return
                self.last = v
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rates", default="100,250,500,1000")
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    scenarios.LC = B + "/bench/loadclient"
    scenarios.CAT = B + "/ess-cat"
    scenarios.PREFIX = "bench-fanrates-%d" % os.getpid()
    scenarios.WORK = tempfile.mkdtemp(prefix="ess-fanrates-")
    esslib.ESSD = B + "/essd"
    rows = []
    e = esslib.Essd().start()
    try:
        runs = [(1, int(r)) for r in a.rates.split(",")[:1]] + [(a.clients, int(r)) for r in a.rates.split(",")]
        for clients, rate in runs:
            scenarios.wait_broker()
            beam = scenarios.beam_pid()
            b0, m0 = scenarios.cpu_s(beam), cpu_times()
            w = ClientWatch(e.public_port)
            w.start()
            s0 = schedstat(e.proc.pid)
            r = scenarios.fanout_run(e, "essd", clients, rate, a.seconds)
            s1 = schedstat(e.proc.pid)
            w.stop = True
            w.join(5)
            b1, m1 = scenarios.cpu_s(beam), cpu_times()
            lat = r.get("latency_us") or {}
            row = {"clients": clients, "rate": rate, "frames_per_s": clients * rate,
                   "frames": r["frames"], "lost": r["lost"], "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
                   "essd_cpu_s": r["server_cpu_s"], "essd_us_per_frame": r["server_cpu_us_per_frame"],
                   "client_cpu_s": r.get("client_cpu_s"),
                   "broker_cpu_s": round(b1 - b0, 2) if b0 is not None and b1 is not None else None,
                   "machine_busy": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 3),
                   "broker_subscriptions": r["broker_subscriptions"],
                   # essd's seconds waiting for a CPU while runnable, from the
                   # clients' opening to their end; the client's over its life
                   "essd_runq_wait_s": round(s1[1] - s0[1], 3) if s0 and s1 else None,
                   "client_runq_wait_s": round(w.last[1], 3) if w.last else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        e.stop()
        for s in scenarios.STREAMS:
            scenarios.delete_quiet(s)
    one = rows[0]["p99_us"] or 0
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    out = {"command": "python3 bench/fanout_rates.py " + " ".join(sys.argv[1:]), "rows": rows,
           "load": os.getloadavg(), "git": scenarios.git_rev() if hasattr(scenarios, "git_rev") else None}
    path = os.path.join(ROOT, "bench", "results", "%s-fanout-rates.json" % stamp)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("\n| clients | msg/s | frames/s out | lost | p50 ms | p99 ms | p99 / 1 client | essd CPU s | "
          "essd us/frame | client CPU s | broker CPU s | cores busy | essd / client run-queue wait s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in rows:
        print("| %d | %d | %d | %d | %.1f | %.1f | %s | %s | %s | %s | %s | %.0f%% | %s / %s |" % (
            w["clients"], w["rate"], w["frames_per_s"], w["lost"], (w["p50_us"] or 0) / 1e3,
            (w["p99_us"] or 0) / 1e3, "%.2f" % (w["p99_us"] / one) if one and w["p99_us"] else "-",
            w["essd_cpu_s"], w["essd_us_per_frame"], w["client_cpu_s"], w["broker_cpu_s"],
            100 * w["machine_busy"], w["essd_runq_wait_s"], w["client_runq_wait_s"]))
    print("\n%s (load at the end %.1f)" % (path, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
