"""The stream-protocol publisher across lost connections, on the shared
broker without restarting it (issue 14, item 2).

ess-cat --publish --lb --publisher-name NAME --generate N --rate R talks
to the broker through a small TCP proxy in this test (load-balancer mode:
every connection goes to the URL's host and the proxy's port). The proxy
cuts every connection twice while it publishes. The publisher must
reconnect, re-declare with the same reference and resend what was not
confirmed: it ends with all N confirmed, and the stream (read directly)
holds each generated sequence number exactly once and nothing more.
(The loss of a leader node on a cluster is tests/cluster/test_publisher_failover.py.)
"""
import os
import subprocess
import time

from esslib import AMQP_URL, BROKER_ENV, CAT, Checker, StreamProxy, cat_read, delete_stream, unique

N, RATE = 6000, 1000
t = Checker()


def seqs(stream, count):
    out = []
    for m in cat_read(stream, count):
        body = m.get("body", "")
        i = body.find('"seq":')
        if i >= 0:
            out.append(int(body[i + 6:body.index(",", i)]))
    return out


stream = unique("itpr")
proxy = StreamProxy()
pub = subprocess.Popen([CAT, "--url", AMQP_URL, "--stream-port", str(proxy.port), "--lb", "--publish",
                        "--create", "--publisher-name", "itpr-" + stream, "--generate", str(N),
                        "--rate", str(RATE), stream], env=dict(os.environ, **BROKER_ENV),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
try:
    for at in (2.0, 4.0):
        time.sleep(at - (2.0 if at > 2.0 else 0))
        proxy.cut()
    try:
        out = pub.communicate(timeout=120)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        pub.kill()
        out = pub.communicate()[0].decode(errors="replace")
    print(out.strip()[-1500:])
    t.eq(pub.returncode, 0, "the publisher finished")
    t.check("published %d messages (0 failed)" % N in out, "all %d confirmed" % N)
    t.eq(out.count("lost its connection"), 2, "the publisher lost its connection twice")
    t.check(proxy.accepted >= 3, "it connected again after each cut (%d connections)" % proxy.accepted)
    got = seqs(stream, N)
    t.eq(len(got) - len(set(got)), 0, "no sequence twice")
    t.eq(sorted(set(range(N)) - set(got))[:10], [], "no sequence missing")
    more = None
    try:
        subprocess.run([CAT, stream, "--from", "first", "--count", str(N + 1)], capture_output=True,
                       timeout=5, env=dict(os.environ, **BROKER_ENV))
        more = "more than N messages in the stream"
    except subprocess.TimeoutExpired:
        pass
    t.eq(more, None, "nothing after the last one")
finally:
    if pub.poll() is None:
        pub.kill()
        pub.wait(5)
    proxy.close()
    delete_stream(stream)

t.done()
