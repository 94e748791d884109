"""Protobuf round trip through essd: binary protobuf messages of each
account-server type, published with ess-publish --protobuf-type, reach the
WebSocket client as their text form `<package>.<Type>|field: value ...`,
enriched like any other text. (Undecodable bytes are covered by
tests/unit/test_protobuf.c and pass through raw.)"""
import os
import sys

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
publish(key, 1, declare=True)  # offset 0: a JSON message
for name in TYPES:
    tool(PUBLISH, "--routing-key", key, "--count", 2, "--protobuf-type", name)
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
            t.check("timestamp: " in text, "%s carries its fields: %r" % (name, text[:120]))
            t.check(text.endswith("|offset: %d|timestamp: %s" % (offset, text.rsplit("|timestamp: ", 1)[-1])),
                    "%s enriched with its offset %d" % (name, offset))
            t.check("\n" not in text, "%s on one line" % name)
            offset += 1
    ws.close()
finally:
    t.eq(e.stop(), 0, "essd stops cleanly")
    delete_stream(key)
t.done()
