"""A/B replay (issue 15): one stream written through AMQP 0-9-1 at RATE msgs/s (0 = as fast as confirms allow), N messages; each build dir (essd, ess-cat) reads it REPS times in turn. STRACE=1 adds syscalls per message. Usage: python3 bench/ab/replay.py RATE N REPS BUILD_A BUILD_B"""
import sys, os, json, subprocess, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
import esslib  # noqa: E402
WORK = os.environ.get("ESS_AB_WORK", "/tmp/ess-ab")
os.makedirs(WORK, exist_ok=True)
rate, n, reps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
dirs = sys.argv[4:]
LC = os.environ.get("ESS_BENCH_BUILD", "build-bench") + "/bench/loadclient"
stream = "burstdev-ab-%d-%d" % (rate, os.getpid())
adm = esslib.StreamAdmin(); adm.create(stream); adm.close()
r = rate or 10000000
pub = json.loads(subprocess.run([LC, "pub", "--stream", stream, "--rate", str(r), "--seconds", "%.6f" % (n / r), "--size", "250"], capture_output=True, text=True).stdout.splitlines()[-1])
n = pub["published"]
def cpu(pid):
    v = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
ess = []
for d in dirs:
    esslib.ESSD = os.path.abspath(d) + "/essd"
    wd = WORK + "/ab-%d-%d" % (os.getpid(), len(ess)); os.makedirs(wd)
    e = esslib.Essd(workdir=wd).start()
    ess.append(e)
try:
    for rep in range(reps):
        for d, e in zip(dirs, ess):
            t = time.time()
            c = subprocess.run(["/usr/bin/time", "-f", "%U %S", d + "/ess-cat", stream, "--from", "first", "--count", str(n), "--quiet"], capture_output=True, text=True, env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))
            cw = time.time() - t
            ccpu = sum(map(float, c.stderr.strip().splitlines()[-1].split()))
            _, path = esslib.create_es(e, stream)
            c0 = cpu(e.proc.pid)
            tr = None
            if os.environ.get("STRACE"):
                tr = subprocess.Popen(["strace", "-c", "-f", "-o", WORK + "/st-%d.txt" % e.proc.pid, "-p", str(e.proc.pid)], stderr=subprocess.DEVNULL); time.sleep(1)
            out = subprocess.run([LC, "ess", "--port", str(e.public_port), "--path", path + "?stream_from_ordinal=0", "--count", str(n), "--timeout", "120"], capture_output=True, text=True).stdout
            res = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
            c1 = cpu(e.proc.pid)
            if tr:
                tr.send_signal(2); tr.wait()
                rows = [l.split() for l in open(WORK + "/st-%d.txt" % e.proc.pid) if l.strip() and l.split()[0][0].isdigit()]
                print("  syscalls/msg:", " ".join("%s=%.2f" % (r[-1], int(r[3]) / n) for r in rows if r[-1] != "total" and int(r[3]) / n > 0.02), "total=%.2f" % (int(rows[-1][2]) / n))
            print("%-24s ess-cat %8.0f msgs/s (%.2f us cpu/msg) | essd %8.0f msgs/s, %.2f us cpu/msg, ratio %.3f" % (
                d[-24:], n / cw, ccpu * 1e6 / n, res["msgs_per_s"], (c1 - c0) * 1e6 / n, res["msgs_per_s"] / (n / cw)), flush=True)
finally:
    for e in ess: e.stop()
    subprocess.run([os.environ.get("ESS_BENCH_BUILD", "build-bench") + "/ess-cat", "--delete", stream], capture_output=True, env=dict(os.environ, ESS_AMQP_URL=esslib.AMQP_URL))
