"""Protobuf round trip through essd: binary protobuf messages of each
account-server type, published with ess-publish --protobuf-type, reach the
WebSocket client as their text form `<package>.<Type>|field: value ...`,
enriched like any other text. (Undecodable bytes are covered by
tests/unit/test_protobuf.c and pass through raw.)"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import Checker, Essd, WebSocket, create_es, delete_stream, publish, tool, PUBLISH, unique  # noqa: E402

TYPES = {
    "MerchantCharge": "accountserver.MerchantCharge|",
    "MerchantProcessingCharge": "accountserver.MerchantProcessingCharge|",
    "MerchantStorageCharge": "accountserver.MerchantStorageCharge|",
    "MerchantAuthorityRequestResponse": "accountserver.MerchantAuthorityRequestResponse|",
    "Pod": "datamanager.Pod|",
    "PodEvent": "datamanager.PodEvent|",
    "InstanceEvent": "datamanager.InstanceEvent|",
    "InstanceCost": "datamanager.InstanceCost|",
    "Alert": "common.Alert|",
}

t = Checker()
key = unique("itpb")
# The broker stamps each message when it stores it: the enrich suffix's
# timestamp must fall within the publishing window (ms, with slack for
# clock granularity), independently of the text under test.
t_pub0 = int(time.time() * 1000) - 2000
publish(key, 1, declare=True)  # offset 0: a JSON message
for name in TYPES:
    tool(PUBLISH, "--routing-key", key, "--count", 2, "--protobuf-type", name)
t_pub1 = int(time.time() * 1000) + 2000
e = Essd().start()
try:
    _, path = create_es(e, key)
    ws = WebSocket("127.0.0.1", e.public_port, path + "?stream_from_ordinal=1")
    offset = 1
    for name, prefix in TYPES.items():
        for _ in range(2):
            op, body = ws.recv(timeout=20)
            text = body.decode("utf-8")
            t.eq(op, 1, "%s arrives as a text frame" % name)
            t.check(text.startswith(prefix), "%s rendered as text: %r" % (name, text[:80]))
            suffix = "|offset: %d|timestamp: " % offset
            fields, sep, ts = text.rpartition(suffix)
            t.check(sep != "", "%s enriched with its offset %d: %r" % (name, offset, text[-80:]))
            # The message's own fields, before the enrich suffix.
            t.check(fields.startswith(prefix) and ": " in fields[len(prefix):],
                    "%s carries its fields: %r" % (name, fields[:120]))
            t.check(ts.isdigit() and t_pub0 <= int(ts) <= t_pub1,
                    "%s enriched with its store time %r, within [%d, %d]" % (name, ts, t_pub0, t_pub1))
            t.check("\n" not in text, "%s on one line" % name)
            offset += 1
    ws.close()
finally:
    t.eq(e.stop(), 0, "essd stops cleanly")
    delete_stream(key)
t.done()
