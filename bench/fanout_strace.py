"""Syscalls of essd per delivered frame in the fan-out case (issue 15): N clients
on one stream live, 1,000 msg/s for 5 s, essd under strace -c -f while it delivers.
Usage: [ESS_FAN_RATE=msgs/s] python3 bench/fanout_strace.py [N] [--perf]  (uses build-bench/, or
$ESS_BENCH_BUILD; strace slows essd, so frames batch more per send() than
without it; --perf counts the same system calls with `perf stat` tracepoints,
which barely slow essd, and also reports the load client's latency)."""
import json
import os
import subprocess
import sys
import tempfile
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios
from scenarios import esslib
B = os.environ.get("ESS_BENCH_BUILD") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build-bench")
PERF = "--perf" in sys.argv
sys.argv = [x for x in sys.argv if x != "--perf"]
PERF_EVENTS = ",".join("syscalls:sys_enter_" + c for c in
                       ("sendto", "epoll_ctl", "epoll_wait", "recvfrom", "write", "read", "writev", "poll", "ioctl"))
scenarios.LC = B + "/bench/loadclient"
scenarios.CAT = B + "/ess-cat"
scenarios.PREFIX = "bench-strace-%d" % os.getpid()
scenarios.WORK = tempfile.mkdtemp(prefix="ess-fan-strace-")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
RATE, SECS = int(os.environ.get("ESS_FAN_RATE", "1000")), 5
esslib.ESSD = B + "/essd"
e = esslib.Essd().start()
stream = scenarios.new_stream("fan-strace")
a = esslib.StreamAdmin(); a.create(stream); a.close()
pf = os.path.join(scenarios.WORK, "paths")
with open(pf, "w") as f:
    for _ in range(N):
        f.write(esslib.create_es(e, stream)[1] + "\n")
cl = subprocess.Popen([scenarios.LC, "ess", "--port", str(e.public_port), "--paths-file", pf, "--clients", str(N),
                       "--count", str(RATE * SECS), "--latency", "--timeout", "120"], stdout=subprocess.PIPE, text=True)
for _ in range(200):
    if esslib.metrics(e).get("ess_subscriptions", 0) >= N:
        break
    time.sleep(0.1)
time.sleep(2)
if PERF:
    st = subprocess.Popen(["perf", "stat", "-x", ",", "-e", PERF_EVENTS, "-p", str(e.proc.pid),
                           "-o", os.path.join(scenarios.WORK, "strace.out")])
else:
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(e.proc.pid), "-o", os.path.join(scenarios.WORK, "strace.out")])
time.sleep(1)
c0 = scenarios.cpu_s(e.proc.pid)
pub = scenarios.lc("pub", "--stream", stream, "--rate", RATE, "--seconds", SECS, "--size", 250, timeout=200)
so, _ = cl.communicate(timeout=200)
c1 = scenarios.cpu_s(e.proc.pid)
st.send_signal(2); st.wait(30)
r = json.loads([x for x in so.splitlines() if x.startswith("{")][-1])
print(json.dumps({"clients": N, "frames": r["frames"], "published": pub["published"], "latency_us": r.get("latency_us"),
                  ("essd_cpu_s_under_perf" if PERF else "essd_cpu_s_under_strace"): round(c1 - c0, 3), "broker_subscriptions": esslib.metrics(e).get("ess_broker_subscriptions")}))
out = open(os.path.join(scenarios.WORK, "strace.out")).read()
print(out)
if PERF:
    for line in out.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            print("%-36s %.4f per frame" % (f[2], int(f[0]) / max(1, r["frames"])))
e.stop()
scenarios.delete_quiet(stream)
