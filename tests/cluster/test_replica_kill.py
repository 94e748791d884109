"""SIGKILL of one essd replica holding about 100 clients (issue 14, item 3),
on the cluster of scripts/cluster.

300 event streams on one stream (created through HAProxy's internal port),
one `ess-listen --reconnect` each through HAProxy's public port (least
connections: about 100 per replica), a publisher at 50 msg/s for 30 s
through node 3. After 8 s the replica holding the most clients is
SIGKILLed; it is started again once the publisher is done. Checks: every
client reconnected through HAProxy and ended with exactly the stream's
offsets, each once, in order. Needs the shared registry (exits 77 = skip
without it). ESS_CLUSTER_CLIENTS changes the number of clients.
"""
import os
import time

from replicalib import Load, cluster, connections, shared_registry_or_skip  # noqa: E402
from esslib import Checker  # noqa: E402

shared_registry_or_skip()
t = Checker()
load = Load(int(os.environ.get("ESS_CLUSTER_CLIENTS", "300")), rate=50, seconds=30)
victim = None
try:
    load.start_clients()
    load.start_publisher()
    time.sleep(8)
    conns = connections()
    victim = max(range(3), key=lambda n: conns[n] or 0) + 1
    print("killing replica %d, which holds %s of %r clients" % (victim, conns[victim - 1], conns))
    t.check((conns[victim - 1] or 0) >= load.clients // 4, "the replica holds clients")
    t.eq(cluster("replica-kill", str(victim)).returncode, 0, "replica killed")
    t0 = time.time()
    while time.time() - t0 < 30 and sum(c or 0 for c in connections()) < load.clients:
        time.sleep(0.5)
    print("all %d clients connected again %.1f s after the kill: %r" %
          (load.clients, time.time() - t0, connections()))
    t.eq(load.wait_publisher(), 0, "the publisher confirmed everything")
    r = cluster("replica-start", str(victim))
    t.eq(r.returncode, 0, "replica %d started again: %s" % (victim, r.stderr.strip()))
    victim = None
    reconnects = load.finish(t)
    t.check(reconnects >= (conns[max(range(3), key=lambda n: conns[n] or 0)] or 1),
            "the killed replica's clients reconnected (%d reconnects)" % reconnects)
finally:
    load.kill_all()
    if victim is not None:
        cluster("replica-start", str(victim))
t.done()
