"""The operator console's data endpoints (#16) without a browser: every
answer parses as JSON in each state a session goes through (before its
stream's tail is known, after), the Tail records raw bodies and frames
(non-UTF-8 bytes included) only while watched, the feed streams one event
a second and does not hold up the drain, and the lag reaches /metrics."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import esslib  # noqa: E402
from esslib import Essd  # noqa: E402

t = esslib.Checker()
key = esslib.unique("cons-api")
esslib.publish(key, 3, declare=True)
e = Essd().start()


def state(query=""):
    st, _, body = e.request("GET", "/admin/state" + query)
    t.eq(st, 200, "GET /admin/state%s" % query)
    return json.loads(body)  # raises (and fails the test) on invalid JSON


try:
    es_id, path = esslib.create_es(e, key)
    _, idle_path = esslib.create_es(e, esslib.unique("cons-idle"))
    ws = esslib.ws_open(e, path + "?stream_from_ordinal=0", headers={"User-Agent": "t/1 \"quoted\""})
    for _ in range(3):
        ws.recv(timeout=10)
    # At once: the stream's tail is not known yet (the poll runs every 5 s).
    s = state()
    rows = {r["id"]: r for r in s["event_streams"]["rows"]}
    c = rows[es_id]["client"]
    t.eq(c["tail_offset"], None, "tail unknown before the first poll")
    t.eq(c["lag"], None, "lag unknown before the first poll")
    t.eq(c["delivered_offset"], 2, "delivered offset")
    t.eq(c["user_agent"], 't/1 "quoted"', "User-Agent")
    t.eq(c["selector"], "stream_from_ordinal=0", "selector")
    t.eq(c["stream"], key, "broker stream")
    t.eq(s["event_streams"]["total"], 2, "two event streams")
    t.eq(len([r for r in rows.values() if r["client"] is None]), 1, "one without a client")
    t.eq(state("?live=1")["event_streams"]["matched"], 1, "live=1")
    t.eq(state("?filter=" + key.upper())["event_streams"]["matched"], 1, "filter, any case")
    t.eq(state("?limit=0")["event_streams"]["rows"], [], "limit=0")
    t.eq(e.request("GET", "/admin/state?limit=501")[0], 422, "limit over 500")
    b = s["broker"]
    t.eq(b["connections_lost"], 0, "no broker connection lost yet")
    node = b["nodes"][0]
    t.eq((node["port"], node["configured"], node["locator"]), (esslib.STREAM_PORT, True, True),
         "the configured node is listed first and serves the locator")
    t.check(node["ready"] >= 1 and node["subscriptions"] >= 1,
            "the node has a ready connection and the live subscription: %r" % node)

    # The Tail: nothing recorded before the watch starts.
    st, _, body = e.request("GET", "/admin/tail/%d" % es_id)
    tail = json.loads(body)
    t.eq((st, tail["seq"], tail["entries"]), (200, 0, []), "a new watch starts empty")
    t.check(state()["event_streams"]["rows"][0]["client"]["tailed"], "the row says it is watched")
    admin = esslib.StreamAdmin()
    admin.publish(key, [b'{"a":1}', b"\xff\xfebinary", b"x" * 3000])
    admin.close()
    for _ in range(3):
        ws.recv(timeout=10)
    st, _, body = e.request("GET", "/admin/tail/%d?after=0" % es_id)
    entries = json.loads(body)["entries"]
    t.eq([x["offset"] for x in entries], [3, 4, 5], "three entries with their offsets")
    t.eq(entries[0]["raw"], '{"a":1}', "raw body")
    t.check(entries[0]["frame"].startswith('{"a":1,"ess_offset":3'), "the frame as sent: %r" % entries[0]["frame"])
    t.eq(entries[1]["raw"], "\ufffd\ufffdbinary", "non-UTF-8 bytes as U+FFFD")
    t.eq((entries[2]["raw_bytes"], len(entries[2]["raw"])), (3000, 2048), "long bodies cut at 2048")
    st, _, body = e.request("GET", "/admin/tail/%d?after=2" % es_id)
    t.eq([x["seq"] for x in json.loads(body)["entries"]], [3], "after=2: only the third")
    t.eq(e.request("DELETE", "/admin/tail/%d" % es_id)[0], 200, "stop watching")
    t.check(not state()["event_streams"]["rows"][0]["client"]["tailed"], "not watched any more")
    t.eq(e.request("GET", "/admin/tail/999")[0], 404, "no live client: 404")

    # A live session (no selector) reads through a shared subscription,
    # where the enrich hook runs once for the group: watching it moves it
    # to its own subscription, so the Tail records its frames too.
    live_key = esslib.unique("cons-live")
    esslib.publish(live_key, 6, declare=True)
    live_id, live_path = esslib.create_es(e, live_key)
    live = esslib.ws_open(e, live_path)
    time.sleep(0.5)  # subscribed (from "next") before anything is published
    st, _, body = e.request("GET", "/admin/tail/%d" % live_id)
    t.eq((st, json.loads(body)["entries"]), (200, []), "a live session's watch starts empty")
    admin = esslib.StreamAdmin()
    admin.publish(live_key, [b'{"live":1}', b'{"live":2}'])
    admin.close()
    got = [json.loads(live.recv(timeout=10)[1])["ess_offset"] for _ in range(2)]
    t.eq(got, [6, 7], "the watched live session still gets every offset once")
    entries = []
    for _ in range(50):
        entries = json.loads(e.request("GET", "/admin/tail/%d?after=0" % live_id)[2])["entries"]
        if len(entries) >= 2:
            break
        time.sleep(0.1)
    t.eq([(x["offset"], x["raw"]) for x in entries], [(6, '{"live":1}'), (7, '{"live":2}')],
         "the Tail of a live (shared) session records its frames")
    t.eq(e.request("DELETE", "/admin/tail/%d" % live_id)[0], 200, "stop watching the live one")
    live.close()

    # Broker connections lost are counted, and the node is ready again.
    proxy = esslib.StreamProxy()
    pe = Essd(env={"ESS_STREAM_PORT": str(proxy.port)}).start()
    try:
        t.check(esslib.wait_ready(pe), "essd behind the proxy is ready")
        proxy.cut()
        nodes, lost = [], 0
        for _ in range(100):
            st, _, body = pe.request("GET", "/admin/state")
            b = json.loads(body)["broker"]
            nodes, lost = b["nodes"], b["connections_lost"]
            if lost >= 1 and nodes and nodes[0]["ready"] >= 1:
                break
            time.sleep(0.1)
        t.check(lost >= 1, "a cut connection is counted (%d)" % lost)
        t.check(nodes and nodes[0]["port"] == proxy.port and nodes[0]["ready"] >= 1,
                "the node is ready again after the cut: %r" % nodes)
    finally:
        pe.stop()
        proxy.close()

    # The feed: events, one a second.
    f = socket.create_connection(("127.0.0.1", e.internal_port), timeout=5)
    f.sendall(b"GET /admin/feed HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    deadline = time.time() + 8
    while buf.count(b"event: tick") < 3 and time.time() < deadline:
        buf += f.recv(65536)
    t.check(b"content-type: text/event-stream" in buf.lower(), "feed content type")
    events = [json.loads(line[6:]) for line in buf.decode().splitlines() if line.startswith("data: ")]
    t.check(len(events) >= 3, "three feed events in 8 s (%d)" % len(events))
    t.check(all("closes_by" in ev and "totals" in ev for ev in events), "feed events carry totals")

    # After a poll round the tail and the lag are known, and /metrics has it.
    deadline = time.time() + 15
    c = None
    while time.time() < deadline:
        c = state()["event_streams"]["rows"][0]["client"]
        if c["tail_offset"] is not None:
            break
        time.sleep(0.5)
    t.eq((c["tail_offset"], c["lag"]), (5, 0), "tail offset and lag after a poll")
    m = esslib.metrics(e)
    t.eq(m.get('ess_stream_lag_messages{event_stream="%d"}' % es_id), 0.0, "lag gauge on /metrics")
    st, _, body = e.request("GET", "/admin/series?seconds=5")
    series = json.loads(body)
    t.eq(len(series["in"]), 5, "five seconds of series")
    ws.close()
    # The drain does not wait for the feed.
    t0 = time.time()
    t.eq(e.stop(), 0, "essd stops with a feed open")
    t.check(time.time() - t0 < 5, "the feed did not hold up the drain (%.1f s)" % (time.time() - t0))
    f.close()
finally:
    e.stop()
    if t.failed:
        print(e.output()[-4000:])
    esslib.delete_stream(key)
    if "live_key" in globals():
        esslib.delete_stream(live_key)
t.done()
