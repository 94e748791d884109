"""The stream-protocol publisher survives the loss of the stream's leader
node (issue 14, item 2), on the 3-node cluster of scripts/cluster (read
from .var/cluster/endpoints.json).

A stream is declared through node 1, so node 1 leads it. ess-cat
--publish --generate N --rate R --publisher-name NAME connects its locator
to node 3, finds the leader (node 1) through Metadata and publishes there.
Node 1 is SIGKILLed in the middle. The publisher must re-resolve the
leader, re-declare with the same reference and resend what was not
confirmed: it ends with all N confirmed (exit 0), and a read of the stream
through node 3 finds each generated sequence number exactly once (no loss,
no duplicate: the broker deduplicates the resent messages by publishing
id). A second run with the same publisher name must store its messages
too (its ids continue after the broker's last stored id instead of being
dropped as duplicates). Node 1 is started again at the end.
"""
import os
import subprocess
import time

from clusterlib import CLUSTER, EP, leader  # noqa: E402 (sets the broker first)
from esslib import BROKER_ENV, CAT, PUBLISH, Checker, cat_read, unique  # noqa: E402

N, RATE = 10000, 1000
t = Checker()



def seqs(stream, count):
    """The "seq" of every message ess-cat --generate made (others, such as
    ess-publish's declaring message, skipped)."""
    out = []
    for m in cat_read(stream, count):
        body = m.get("body", "")
        i = body.find('"seq":')
        if i >= 0 and '"pad":' in body:
            out.append(int(body[i + 6:body.index(",", i)]))
    return out


def publisher(stream, name, n, rate):
    return subprocess.Popen([CAT, "--publish", "--publisher-name", name, "--generate", str(n),
                             "--rate", str(rate), stream], env=dict(os.environ, **BROKER_ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


key = unique("clpf")
name = "pf-" + key
# One message through node 1 declares the stream there: node 1 leads it.
subprocess.run([PUBLISH, "--routing-key", key, "--count", "1", "--declare", "--url",
                EP["brokers"][0]["amqp"]], check=True, capture_output=True, timeout=60)
t.eq(leader(key), EP["brokers"][0]["node"], "node 1 leads the stream")

pub = publisher(key, name, N, RATE)
t0 = time.time()
try:
    time.sleep(4)
    subprocess.run([CLUSTER, "node-kill", "1"], check=True, timeout=30)
    killed = time.time() - t0
    try:
        pub_out = pub.communicate(timeout=120)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        pub.kill()
        pub_out = pub.communicate()[0].decode(errors="replace")
    took = time.time() - t0
    print("ess-cat --publish (exit %s, %.1f s, node 1 killed at %.1f s):\n%s" %
          (pub.returncode, took, killed, pub_out.strip()[-1500:]))
    new_leader = leader(key)
    print("leader after the kill:", new_leader)
    t.check(new_leader not in (None, EP["brokers"][0]["node"]), "a new leader: %r" % new_leader)
    t.eq(pub.returncode, 0, "the publisher finished")
    t.check("published %d messages (0 failed)" % N in pub_out, "all %d confirmed" % N)
    t.check("lost its connection" in pub_out, "the publisher did lose its connection")
    got = seqs(key, N + 1)
    dup = len(got) - len(set(got))
    missing = sorted(set(range(N)) - set(got))
    print("stream holds %d generated messages, %d duplicates, %d missing" %
          (len(got), dup, len(missing)))
    t.eq(dup, 0, "no sequence twice")
    t.eq(missing[:10], [], "no sequence missing")
    t.eq(len(got), N, "exactly N generated messages")
    # Nothing after them either (a duplicate past the count read above).
    more = None
    try:
        subprocess.run([CAT, key, "--from", "first", "--count", str(N + 2)], capture_output=True,
                       timeout=8, env=dict(os.environ, **BROKER_ENV))
        more = "more than N + 1 messages in the stream"
    except subprocess.TimeoutExpired:
        pass
    t.eq(more, None, "nothing after the last one")

    # Same publisher name again: its ids continue after the stored ones.
    pub = publisher(key, name, 100, 1000)
    pub_out = pub.communicate(timeout=60)[0].decode(errors="replace")
    t.eq(pub.returncode, 0, "a second run with the same name finished: " + pub_out.strip()[-300:])
    got2 = seqs(key, N + 101)
    t.eq(len(got2), N + 100, "the second run's 100 messages were stored, not deduplicated away")
finally:
    if pub.poll() is None:
        pub.kill()
        pub.wait(5)
    subprocess.run([CLUSTER, "node-start", "1"], timeout=300)

t.done()
