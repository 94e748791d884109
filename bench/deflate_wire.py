#!/usr/bin/env python3
"""public.compression on vs off (issue 15 item 4), one run, same window.

For each mode (off, on) it starts an essd (shared subscriptions, the
default hook), connects CLIENTS WebSocket clients that offer
permessage-deflate, publishes COUNT messages of ~SIZE bytes to their one
broker stream, reads them all, and prints one JSON line: essd's CPU time
(utime + stime from /proc) per message, and the bytes on the wire per
message per client (frame headers included). Uses the shared broker.

  python3 bench/deflate_wire.py [COUNT] [CLIENTS] [SIZE]
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from esslib import Essd, create_es, delete_stream, publish, unique  # noqa: E402
from wsdeflate import Client  # noqa: E402

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 200


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(mode):
    stream = unique("bench-dfl")
    publish(stream, 0, declare=True)
    cfg = os.path.join(os.environ.get("TMPDIR", "/tmp"), "deflate-%s-%d.yaml" % (mode, os.getpid()))
    with open(cfg, "w") as f:
        f.write("public:\n  compression: %s\n  outbound_budget_bytes: 67108864\n" % mode)
    try:
        with Essd(config=cfg) as e:
            cs = [Client(e.public_port, create_es(e, stream)[1],
                         "permessage-deflate; client_max_window_bits") for _ in range(CLIENTS)]
            wire = [0] * CLIENTS

            def read(i):
                wire[i] = sum(len(p) + (2 if len(p) < 126 else 4)
                              for _, _, p in cs[i].frames(COUNT))
            th = [threading.Thread(target=read, args=(i,)) for i in range(CLIENTS)]
            for x in th:
                x.start()
            c0 = cpu_s(e.proc.pid)
            t0 = time.time()
            publish(stream, COUNT, size=SIZE)
            for x in th:
                x.join(600)
            c1 = cpu_s(e.proc.pid)
            print(json.dumps({"compression": mode, "messages": COUNT, "clients": CLIENTS,
                              "size": SIZE, "essd_cpu_us_per_msg": round((c1 - c0) / COUNT * 1e6, 2),
                              "wire_bytes_per_msg_per_client": round(sum(wire) / CLIENTS / COUNT, 1),
                              "seconds": round(time.time() - t0, 1)}), flush=True)
            for c in cs:
                c.close()
    finally:
        delete_stream(stream)


for m in ("off", "on"):
    run(m)
