"""Loss of the broker node essd's stream client is connected to (issue 14,
item 2), on the 3-node cluster of scripts/cluster.

An essd of its own (random ports) whose broker.url and stream_port point
at node 1, with broker.stream_hosts naming nodes 2 and 3 and
broker.read_from: any, so its locator connection (Metadata, readiness)
and the client's subscription share one connection to node 1. The stream
is declared through node 1, so node 1 also leads it. ess-publish publishes
through node 3 at 1,000 msg/s; a client reads from offset 0 through essd.
Node 1 is SIGKILLed after 5 s and started again only at the end.

Checks: essd's first stream connection went to node 1; after the kill its
locator moved to another node and /health/ready answered 200 again while
node 1 was still down; the client's WebSocket was never closed; it received
exactly the stream's offsets, each once, in order, and nothing is in the
stream after its last one.
"""
import os
import re
import subprocess
import time

from clusterlib import CLUSTER, EP, check_client_got_all, leader  # noqa: E402 (sets the broker first)
from esslib import (BROKER_ENV, LISTEN, PUBLISH, Checker, Essd,  # noqa: E402
                    create_es, unique)

t = Checker()
b1, b2, b3 = EP["brokers"]
key = unique("cllf")
subprocess.run([PUBLISH, "--routing-key", key, "--count", "1", "--declare", "--url", b1["amqp"]],
               check=True, capture_output=True, timeout=60)
t.eq(leader(key), b1["node"], "node 1 leads the stream")

essd = Essd(env={
    "ESS_AMQP_URL": b1["amqp"],
    "ESS_STREAM_PORT": str(b1["stream_port"]),
    "ESS_STREAM_HOSTS": "127.0.0.1:%d,127.0.0.1:%d" % (b2["stream_port"], b3["stream_port"]),
    "ESS_BROKER_READ_FROM": "any",
    "ESS_LOG_LEVEL": "debug",
})
essd.start()
_, path = create_es(essd, key)
loc = "ws://127.0.0.1:%d%s" % (essd.public_port, path)

out = open(os.path.join(essd.workdir, "listen.out"), "wb")
err = open(os.path.join(essd.workdir, "listen.err"), "wb")
listen = subprocess.Popen([LISTEN, loc, "-o", "0"], stdout=out, stderr=err)
pub = subprocess.Popen([PUBLISH, "--routing-key", key, "--count", "15000", "--rate", "1000",
                        "--url", b3["amqp"]], env=dict(os.environ, **BROKER_ENV),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t0 = time.time()
node_down = False
try:
    time.sleep(5)
    log = essd.output()
    first = re.search(r"stream: connected to (\S+):(\d+)", log)
    t.check(first is not None and int(first.group(2)) == b1["stream_port"],
            "essd's first stream connection is to node 1: %r" % (first and first.group(0)))
    t.check("stream: resumed" not in log, "no resume before the kill")
    subprocess.run([CLUSTER, "node-kill", "1"], check=True, timeout=30)
    node_down = True
    killed = time.time()
    # Ready again without node 1: the locator found another node.
    unready_seen, ready_again = False, None
    while time.time() - killed < 60:
        try:
            st = essd.request("GET", "/health/ready", timeout=2)[0]
        except OSError:
            st = None
        if st != 200:
            unready_seen = True
        elif unready_seen or time.time() - killed > 3:
            ready_again = time.time() - killed
            break
        time.sleep(0.1)
    print("essd ready again %.1f s after the kill (not ready in between: %s)" %
          (ready_again or -1, unready_seen))
    t.check(ready_again is not None, "essd is ready again while node 1 is down")
    try:
        pub_out = pub.communicate(timeout=90)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        pub.kill()
        pub_out = pub.communicate()[0].decode(errors="replace")
    print("ess-publish (exit %s): %s" % (pub.returncode, pub_out.strip()[-300:]))
    print("leader after the kill:", leader(key))
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
    log = essd.output()
    moved = re.findall(r"stream: connected to (\S+):(\d+)", log)
    print("essd stream connections:", ["%s:%s" % m for m in moved])
    t.check(any(int(p) != b1["stream_port"] for _, p in moved),
            "essd connected to another node after the kill")
    t.check("locator connection tries" in log, "the locator moved on")
    resumed = re.findall(r"stream: resumed %s at offset (\d+)" % key, log)
    print("resumed at:", resumed)
    t.check(len(resumed) >= 1, "the subscription resumed after the kill")
    offs, nstored = check_client_got_all(t, out.name, key)
    print("killed node 1 at %.1f s; stream holds %d messages; client got %d" %
          (killed - t0, nstored, len(offs)))
    t.check(len(offs) > 10000, "the client got most of the 15,001 messages: %d" % len(offs))
finally:
    for p in (listen, pub):
        if p.poll() is None:
            p.kill()
            p.wait(5)
    essd.stop()
    if node_down:
        subprocess.run([CLUSTER, "node-start", "1"], timeout=300)

t.done()
