"""What the cluster tests share: the endpoints scripts/cluster wrote, esslib
pointed at node 3 (the node no test kills), and the stream leader lookup."""
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
