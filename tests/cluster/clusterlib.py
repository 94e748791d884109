"""What the cluster tests share: the endpoints scripts/cluster wrote, esslib
pointed at node 3 (the node no test kills), the stream leader lookup, and
the exactly-once check of one ess-listen client across a node loss."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "..")
CLUSTER = os.path.join(SOURCE, "scripts", "cluster")
with open(os.path.join(SOURCE, ".var", "cluster", "endpoints.json")) as f:
    EP = json.load(f)
# esslib's tools talk to node 3, which is not killed; set before importing it.
os.environ["ESS_TEST_AMQP_URL"] = EP["brokers"][2]["amqp"]
os.environ["ESS_TEST_STREAM_PORT"] = str(EP["brokers"][2]["stream_port"])
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))


def leader(stream):
    """The node name leading stream (asked of node 2), or None."""
    r = subprocess.run([CLUSTER, "ctl", "2", "-q", "list_queues", "name", "leader", "--formatter",
                        "json"], capture_output=True, text=True, timeout=60)
    for q in json.loads(r.stdout or "[]"):
        if q["name"] == stream:
            return q.get("leader")
    return None


def check_client_got_all(t, out_path, key):
    """Check an ess-listen output file (`offset=N ...` lines, `closed: ...`)
    against the stream: the client stayed connected, got every stored offset
    once and in order, and nothing is stored after its last one. Returns the
    offsets received."""
    from esslib import BROKER_ENV, LISTEN, cat_read
    with open(out_path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    offs = [int(x.split()[0][7:]) for x in lines if x.startswith("offset=")]
    closed = [x for x in lines if x.startswith("closed:")]
    stored = [m["offset"] for m in cat_read(key, len(offs))] if offs else []
    more = None
    try:
        subprocess.run([os.path.join(os.path.dirname(LISTEN), "ess-cat"), key, "--from",
                        str(offs[-1] + 1 if offs else 0), "--count", "1"], capture_output=True,
                       timeout=5, env=dict(os.environ, **BROKER_ENV))
        more = "a message after the last one received"
    except subprocess.TimeoutExpired:
        pass
    t.eq(more, None, "nothing in the stream after the client's last offset")
    t.eq(closed, [], "the client stayed connected")
    t.eq(len(offs), len(set(offs)), "no offset twice")
    t.check(offs == stored, "every offset once, in order: %d received, %d stored, missing %r" %
            (len(offs), len(stored), sorted(set(stored) - set(offs))[:10]))
    return offs, len(stored)
