"""essd's CPU while it holds N idle connections that it pings (issue 15:
the keepalive's cost). One essd (the binary given) with public.ping_interval_s
set, N load-client connections on one live stream that answer every ping,
then essd's CPU seconds over 10 s with nothing published.

Usage: python3 bench/idle_ping.py N ESSD PING_SECONDS
       (the load client and ess-cat from build-bench/, or $ESS_BENCH_BUILD)"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios  # noqa: E402
from scenarios import esslib  # noqa: E402

B = os.environ.get("ESS_BENCH_BUILD") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build-bench")
scenarios.LC = B + "/bench/loadclient"
scenarios.CAT = B + "/ess-cat"
scenarios.PREFIX = "bench-idleping-%d" % os.getpid()
scenarios.WORK = tempfile.mkdtemp(prefix="ess-idleping-")
N, esslib.ESSD, PING = int(sys.argv[1]), os.path.abspath(sys.argv[2]), int(sys.argv[3])
cfg = os.path.join(scenarios.WORK, "essd.yaml")
with open(cfg, "w") as f:
    f.write("public:\n  ping_interval_s: %d\n" % PING)
e = esslib.Essd(config=cfg).start()
stream = scenarios.new_stream("idle")
a = esslib.StreamAdmin()
a.create(stream)
a.close()
pf = os.path.join(scenarios.WORK, "paths")
with open(pf, "w") as f:
    f.write("".join(esslib.create_es(e, stream)[1] + "\n" for _ in range(N)))
cl = subprocess.Popen([scenarios.LC, "ess", "--port", str(e.public_port), "--paths-file", pf, "--clients", str(N),
                       "--count", "1", "--timeout", "60"], stdout=subprocess.PIPE, text=True)
try:
    for _ in range(300):
        if esslib.metrics(e).get("ess_websocket_connections", 0) >= N:
            break
        time.sleep(0.1)
    time.sleep(2)
    c0 = scenarios.cpu_s(e.proc.pid)
    time.sleep(10)
    c1 = scenarios.cpu_s(e.proc.pid)
    m = esslib.metrics(e)
    print("%s: %d idle connections, ping every %d s: essd CPU %.2f s over 10 s (connections %s, load %.1f)" % (
        esslib.ESSD, N, PING, c1 - c0, m.get("ess_websocket_connections"), os.getloadavg()[0]))
finally:
    cl.kill()
    cl.wait()
    e.stop()
    scenarios.delete_quiet(stream)
