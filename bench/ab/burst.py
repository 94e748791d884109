"""A/B helper for connection bursts (issue 15): one essd binary, N clients at
once, each on its own event stream over --streams broker streams with one
message each, from ordinal 0; prints open / first-message percentiles, essd
and broker CPU seconds, RSS per connection, and with --strace the system
calls (strace -c -f; FULL=1: every call, -tt) or with --perf a profile
(CHILDREN=1, DWARF=1, FREQ=Hz for DWARF). The streams (burstdev-NNNN) are kept in $ESS_AB_WORK
for the next run; --delete-streams deletes them. Run from the repository:
    python3 bench/ab/burst.py build-bench/essd 1000 --strace"""
import os, sys, json, subprocess, time, argparse
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
import esslib  # noqa: E402
WORK = os.environ.get("ESS_AB_WORK", "/tmp/ess-ab")
os.makedirs(WORK, exist_ok=True)
ap = argparse.ArgumentParser()
ap.add_argument("essd"); ap.add_argument("n", type=int)
ap.add_argument("--strace", action="store_true"); ap.add_argument("--perf", action="store_true")
ap.add_argument("--streams", type=int, default=1000)
ap.add_argument("--lc", default=os.environ.get("ESS_BENCH_BUILD", "build-bench") + "/bench/loadclient")
ap.add_argument("--env", default="")
ap.add_argument("--delete-streams", action="store_true")
a = ap.parse_args()
esslib.ESSD = os.path.abspath(a.essd)
a.lc = os.path.abspath(a.lc)
sf = WORK + "/streams-%d" % a.streams
if not os.path.exists(sf):
    adm = esslib.StreamAdmin()
    names = ["burstdev-%d-%04d" % (os.getpid(), i) for i in range(a.streams)]
    for s in names:
        adm.create(s); adm.publish(s, [b'{"type":"X","seq":1,"t":0,"pad":"' + b"x" * 200 + b'"}'])
    adm.close()
    open(sf, "w").write("\n".join(names) + "\n")
names = open(sf).read().split()
if a.delete_streams:
    adm = esslib.StreamAdmin()
    for s in names:
        adm.delete(s)
    adm.close()
    os.remove(sf)
    sys.exit(0)
wd = WORK + "/wd-%d" % os.getpid(); os.makedirs(wd)
env = dict(x.split("=", 1) for x in a.env.split(",") if x)
e = esslib.Essd(workdir=wd, env=env).start()
try:
    with open(wd + "/paths", "w") as f:
        for i in range(a.n):
            _, p = esslib.create_es(e, names[i % len(names)])
            f.write(p + "?stream_from_ordinal=0\n")
    time.sleep(1)
    tr = None
    if a.strace:
        tr = subprocess.Popen(["strace", *(["-c"] if not os.environ.get("FULL") else ["-tt"]), "-f", "-o", wd + "/strace.txt", "-p", str(e.proc.pid)], stderr=subprocess.DEVNULL)
        time.sleep(1)
    if a.perf:
        tr = subprocess.Popen(["perf", "record", *(["--call-graph", "dwarf,16384", "-F", os.environ.get("FREQ", "499")] if os.environ.get("DWARF") else ["-g"]), "-o", wd + "/perf.data", "-p", str(e.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    def cpu(pid):
        v = open("/proc/%d/stat" % pid).read().split(")")[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
    bp = int(subprocess.run("ss -ltnpH 'sport = :5552' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2", shell=True, capture_output=True, text=True).stdout.strip() or 0)
    c0, b0 = cpu(e.proc.pid), cpu(bp) if bp else 0
    rss0 = esslib.vm_rss_kib(e.proc.pid)
    p = subprocess.Popen([a.lc, "ess", "--port", str(e.public_port), "--paths-file", wd + "/paths", "--clients", str(a.n), "--count", "1", "--timeout", "120", "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline(); time.sleep(1)
    rss1 = esslib.vm_rss_kib(e.proc.pid)
    c1, b1 = cpu(e.proc.pid), cpu(bp) if bp else 0
    p.stdin.write("x\n"); p.stdin.flush()
    so, _ = p.communicate(timeout=120)
    if tr:
        tr.send_signal(2); tr.wait(60)
    r = json.loads([x for x in (line + so).splitlines() if x.startswith("{")][-1])
    print(json.dumps({k: r.get(k) for k in ("opened", "failed", "open_ms", "first_msg_ms")}))
    print("essd cpu %.2f s, broker cpu %.2f s, rss/conn %.2f KiB" % (c1 - c0, b1 - b0, (rss1 - rss0) / max(1, r["opened"])))
    if a.strace:
        print(open(wd + "/strace.txt").read())
    if a.perf:
        print(subprocess.run(["perf", "report", "-i", wd + "/perf.data", *(["--children", "--sort", "symbol"] if os.environ.get("CHILDREN") else ["--no-children", "--sort", "dso,symbol"]), "--stdio", "--percent-limit", "1", "-g", "none"], capture_output=True, text=True).stdout[:5000])
finally:
    e.stop()
