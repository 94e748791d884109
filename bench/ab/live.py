"""Live latency A/B (issue 15): ess-cat --latency and one client per essd build on the same stream at once, per rate. Usage: python3 bench/ab/live.py SECONDS 1000,5000 BUILD_A BUILD_B"""
import sys, os, json, subprocess, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
import esslib  # noqa: E402
WORK = os.environ.get("ESS_AB_WORK", "/tmp/ess-ab")
os.makedirs(WORK, exist_ok=True)
LC = os.environ.get("ESS_BENCH_BUILD", "build-bench") + "/bench/loadclient"
CAT = os.environ.get("ESS_BENCH_BUILD", "build-bench") + "/ess-cat"
secs = float(sys.argv[1]); rates = [int(x) for x in sys.argv[2].split(",")]; dirs = sys.argv[3:]
ess = []
for i, d in enumerate(dirs):
    esslib.ESSD = os.path.abspath(d) + "/essd"
    wd = WORK + "/live-%d-%d" % (os.getpid(), i); os.makedirs(wd)
    ess.append(esslib.Essd(workdir=wd).start())
def cpu(pid):
    v = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
try:
    for rate in rates:
        stream = "burstdev-live-%d-%d" % (rate, os.getpid())
        adm = esslib.StreamAdmin(); adm.create(stream); adm.close()
        n = int(rate * secs)
        procs = {"ess_cat": subprocess.Popen(["timeout", str(int(secs) + 20), CAT, stream, "--from", "next", "--credit-window", "262144", "--count", str(n), "--latency"], stdout=subprocess.PIPE, text=True, env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))}
        for d, e in zip(dirs, ess):
            _, path = esslib.create_es(e, stream)
            procs[d] = subprocess.Popen([LC, "ess", "--port", str(e.public_port), "--path", path, "--count", str(n), "--latency", "--timeout", str(int(secs) + 20)], stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        c0 = [cpu(e.proc.pid) for e in ess]
        subprocess.run([LC, "pub", "--stream", stream, "--rate", str(rate), "--seconds", str(secs), "--size", "250"], capture_output=True)
        for k, p in procs.items():
            so, _ = p.communicate(timeout=60)
            if k == "ess_cat":
                kv = dict(x.split("=", 1) for x in so.split() if "=" in x)
                lat = {q: int(kv[q + "_us"]) for q in ("p50", "p99", "max") if q + "_us" in kv}; cnt = kv.get("count")
            else:
                r = json.loads([x for x in so.splitlines() if x.startswith("{")][-1]); lat = {q: round(r["latency_us"][q]) for q in ("p50", "p99", "max")}; cnt = r["frames"]
            print("%5d/s %-28s n=%s p50=%s p99=%s max=%s us" % (rate, k[-28:], cnt, lat.get("p50"), lat.get("p99"), lat.get("max")))
        print("        essd cpu us/msg:", [round((cpu(e.proc.pid) - c) * 1e6 / n, 1) for e, c in zip(ess, c0)], flush=True)
        subprocess.run([CAT, "--delete", stream], capture_output=True, env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))
finally:
    for e in ess: e.stop()
