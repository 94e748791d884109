"""A rolling SIGTERM restart of all three essd replicas under load (issue
14, item 3), on the cluster of scripts/cluster.

150 event streams on one stream, one `ess-listen --reconnect` each through
HAProxy's public port, a publisher at 50 msg/s through node 3 for as long
as the restart takes. Replicas 1, 2 and 3 in turn get SIGTERM (essd closes
each WebSocket with 1001 and the resume offset in its reason), are started
again, and the next one follows once the restarted one is ready and
HAProxy has had 3 s to mark it up. Checks: every client ended with exactly
the stream's offsets, each once, in order. Needs the shared registry (exits
77 = skip without it). ESS_CLUSTER_CLIENTS changes the number of clients.
"""
import os
import time

from replicalib import Load, cluster, connections, shared_registry_or_skip  # noqa: E402
from esslib import Checker  # noqa: E402

shared_registry_or_skip()
t = Checker()
load = Load(int(os.environ.get("ESS_CLUSTER_CLIENTS", "150")), rate=50, seconds=50)
down = None
try:
    load.start_clients()
    load.start_publisher()
    time.sleep(5)
    t0 = time.time()
    for n in (1, 2, 3):
        print("%.1f s: SIGTERM to replica %d; clients per replica %r" %
              (time.time() - t0, n, connections()))
        down = n
        r = cluster("replica-stop", str(n))
        t.eq(r.returncode, 0, "replica %d stopped: %s" % (n, r.stderr.strip()))
        r = cluster("replica-start", str(n))
        t.eq(r.returncode, 0, "replica %d started again: %s" % (n, r.stderr.strip()))
        down = None
        time.sleep(3)
    print("%.1f s: rolling restart done; clients per replica %r" %
          (time.time() - t0, connections()))
    t.eq(load.wait_publisher(), 0, "the publisher confirmed everything")
    reconnects = load.finish(t)
    t.check(reconnects >= load.clients, "every client reconnected at least once (%d reconnects)"
            % reconnects)
finally:
    load.kill_all()
    if down is not None:
        cluster("replica-start", str(down))
t.done()
