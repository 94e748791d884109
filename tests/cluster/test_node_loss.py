"""Loss of the broker node that leads a stream (issue 14, item 2), on the
3-node cluster of scripts/cluster (read from .var/cluster/endpoints.json).

A stream is declared through node 1, so node 1 leads it and nodes 2 and 3
hold replicas. ess-publish publishes to it through node 3 (AMQP 0-9-1,
publisher confirms) at 1,000 msg/s; a client reads it from offset 0
through essd replica 2 (whose stream client talks to node 2). Node 1 is
SIGKILLed in the middle, then started again. Checks: the client's
connection is never closed, and the offsets it received are exactly the
stream's offsets (as ess-cat reads them from node 3 afterwards), each once.

The publisher is not expected to survive: ess-publish (AMQP 0-9-1) does
not reconnect; what it published is what the stream holds, and that is what
the client must receive. The stream publisher's failover is
test_publisher_failover.py.
"""
import json
import os
import subprocess
import time

from clusterlib import CLUSTER, EP, SOURCE, check_client_got_all, leader  # noqa: E402 (sets the broker first)
from esslib import BROKER_ENV, LISTEN, PUBLISH, Checker, unique  # noqa: E402

t = Checker()
replica = EP["replicas"][1]


def api(method, path, body=None):
    import urllib.request
    req = urllib.request.Request(replica["internal"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")



key = unique("clnl")
subprocess.run([PUBLISH, "--routing-key", key, "--count", "1", "--declare", "--url",
                EP["brokers"][0]["amqp"]], check=True, capture_output=True, timeout=60)
t.eq(leader(key), EP["brokers"][0]["node"], "node 1 leads the stream")
st, body = api("POST", "/event-stream/", {"routing_key": key})
t.eq(st, 201, "POST on replica 2")
loc = "%s/event-stream/%s" % (replica["public"], body["location"].rsplit("/", 1)[1])

work = os.path.join(SOURCE, ".var", "cluster", "test-" + key)
os.makedirs(work, exist_ok=True)
out = open(os.path.join(work, "listen.out"), "wb")
err = open(os.path.join(work, "listen.err"), "wb")
listen = subprocess.Popen([LISTEN, loc, "-o", "0"], stdout=out, stderr=err)
pub = subprocess.Popen([PUBLISH, "--routing-key", key, "--count", "15000", "--rate", "1000",
                        "--url", EP["brokers"][2]["amqp"]], env=dict(os.environ, **BROKER_ENV),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t0 = time.time()
try:
    time.sleep(5)
    subprocess.run([CLUSTER, "node-kill", "1"], check=True, timeout=30)
    killed = time.time() - t0
    try:
        pub_out = pub.communicate(timeout=90)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        pub.kill()
        pub_out = pub.communicate()[0].decode(errors="replace")
    print("ess-publish (exit %s): %s" % (pub.returncode, pub_out.strip()[-300:]))
    new_leader = leader(key)
    print("leader after the kill:", new_leader)
    t.check(new_leader not in (None, EP["brokers"][0]["node"]), "a new leader: %r" % new_leader)
    # Let the client catch up: stop it once its count has not moved for 3 s.
    last_n, still = -1, 0
    deadline = time.time() + 60
    while time.time() < deadline and still < 6:
        with open(out.name, "rb") as f:
            n = sum(1 for x in f if x.startswith(b"offset="))
        still = still + 1 if n == last_n else 0
        last_n = n
        time.sleep(0.5)
    listen.send_signal(2)
    listen.wait(20)
    out.close()
    err.close()
    offs, nstored = check_client_got_all(t, out.name, key)
    print("killed node 1 at %.1f s; stream holds %d messages; client got %d" %
          (killed, nstored, len(offs)))
finally:
    for p in (listen, pub):
        if p.poll() is None:
            p.kill()
            p.wait(5)
    subprocess.run([CLUSTER, "node-start", "1"], timeout=300)

t.done()
