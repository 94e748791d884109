"""Integration tests of the internal API against the real essd binary:
every row of SPEC.md's API table with its errors, ids never reused, the
registry surviving a restart, hostile routing keys stored verbatim, the
bearer token, 200 concurrent POSTs, body cap, config refusal, SIGTERM.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
from esslib import ESSD, Checker, Essd  # noqa: E402

t = Checker()


def api_table(e):
    st, body = e.json("GET", "/event-stream/version/")
    t.eq(st, 200, "version status")
    t.eq(body.get("protocol"), "WEBSOCKET", "version protocol")
    t.check(re.match(r"^\d+\.\d+\.\d+$", body.get("version", "")), "version X.Y.Z")
    t.eq(e.json("GET", "/event-stream/version")[0], 200, "version without slash")

    st, body = e.json("GET", "/event-stream/")
    t.eq((st, body), (200, {"event_streams": []}), "empty list is []")

    st, body = e.json("POST", "/event-stream/", {"routing_key": "abc"})
    t.eq(st, 201, "create status")
    t.eq(body.get("id"), 1, "first id")
    m = re.match(r"^ws://localhost:8080/event-stream/([A-Za-z0-9_-]{22})$", body.get("location", ""))
    t.check(m, "location shape: %r" % body.get("location"))
    st, body2 = e.json("POST", "/event-stream", {"routing_key": "def"})
    t.eq((st, body2.get("id")), (201, 2), "create without slash")

    st, body = e.json("GET", "/event-stream")
    t.eq(st, 200, "list status")
    t.eq([(x["id"], x["routing_key"]) for x in body["event_streams"]], [(1, "abc"), (2, "def")], "list rows")
    t.check(all(x["location"].startswith("ws://localhost:8080/event-stream/") for x in body["event_streams"]),
            "list locations")

    # Ids are never reused, even after the newest is deleted.
    st, hdrs, data = e.request("DELETE", "/event-stream/2")
    t.eq((st, data), (204, b""), "delete newest")
    st, body = e.json("DELETE", "/event-stream/2")
    t.eq((st, body), (404, {"detail": "EventStream 2 is not known"}), "delete again is 404")
    st, body = e.json("DELETE", "/event-stream/7/")
    t.eq((st, body), (404, {"detail": "EventStream 7 is not known"}), "delete unknown with slash")
    st, body = e.json("POST", "/event-stream/", {"routing_key": "ghi"})
    t.eq(body.get("id"), 3, "id after deleting newest is not reused")
    for bad in ("abc", "1.5", "-", "%20", "1e3"):
        st, body = e.json("DELETE", "/event-stream/" + bad)
        t.eq(st, 422, "delete non-integer id %r" % bad)
        t.check(isinstance(body, dict) and "detail" in body, "422 body has detail")

    # 422 for every kind of bad body.
    bad_bodies = [
        ("not json", "not json"), ("json array", "[1,2]"), ("missing key", "{}"),
        ("wrong type int", '{"routing_key": 5}'), ("wrong type null", '{"routing_key": null}'),
        ("wrong type list", '{"routing_key": ["a"]}'), ("empty", '{"routing_key": ""}'),
        ("256 bytes", json.dumps({"routing_key": "k" * 256})),
        ("newline", json.dumps({"routing_key": "a\nb"})), ("tab", json.dumps({"routing_key": "a\tb"})),
        ("nul", json.dumps({"routing_key": "a\u0000b"})), ("del", json.dumps({"routing_key": "a\u007fb"})),
        ("invalid utf-8", b'{"routing_key": "\xc3("}'), ("empty body", ""),
        ("deep nesting", "[" * 5000 + "]" * 5000), ("truncated", '{"routing_key": "ab'),
    ]
    for name, body in bad_bodies:
        st, hdrs, data = e.request("POST", "/event-stream/", body)
        t.eq(st, 422, "422 for %s" % name)
        t.check(hdrs.get("content-type", "").startswith("application/json"), "422 json for %s" % name)
        t.check(b"Traceback" not in data and b"stack" not in data, "no trace for %s" % name)

    # Hostile routing keys are stored and returned verbatim.
    keys = ["it's \"quoted\"", "'; DROP TABLE event_stream; --", "caf\u00e9 \u20ac \U0001F600",
            "k" * 255, "\u00e9" * 127, "back\\slash/and/slashes", "<script>alert(1)</script>"]
    made = {}
    for k in keys:
        st, body = e.json("POST", "/event-stream/", {"routing_key": k})
        t.eq(st, 201, "create %r" % k[:30])
        made[body["id"]] = k
    st, body = e.json("GET", "/event-stream/")
    listed = {x["id"]: x["routing_key"] for x in body["event_streams"]}
    for i, k in made.items():
        t.eq(listed.get(i), k, "verbatim routing key %r" % k[:30])
    ids = [x["id"] for x in body["event_streams"]]
    t.eq(ids, sorted(ids), "list ordered by id")

    # Unknown path and wrong method.
    st, hdrs, data = e.request("GET", "/nope")
    t.eq(st, 404, "unknown path")
    t.check(json.loads(data).get("detail") is not None, "404 json")
    st, hdrs, data = e.request("PUT", "/event-stream/")
    t.eq(st, 405, "wrong method PUT")
    t.check(json.loads(data).get("detail") is not None, "405 json")
    st, hdrs, data = e.request("DELETE", "/event-stream/version/")
    t.check(st in (404, 405, 422), "DELETE on version is refused (%d)" % st)

    # Body cap: 413, and the service still answers.
    st, hdrs, data = e.request("POST", "/event-stream/", "x" * (70 * 1024))
    t.eq(st, 413, "oversized body")
    t.eq(e.json("GET", "/health/live")[0], 200, "alive after 413")

    # Health, metrics, openapi.
    t.eq(e.json("GET", "/health/live")[0], 200, "live")
    st, body = e.json("GET", "/health/ready")
    t.check(st in (200, 503) and "checks" in body, "ready shape")
    st, hdrs, data = e.request("GET", "/metrics")
    t.eq(st, 200, "metrics status")
    text = data.decode()
    t.check("ess_build_info" in text, "metrics build info")
    t.check(re.search(r'^ess_event_streams \d+$', text, re.M), "metrics event streams")
    t.check('ess_http_requests_total{route="/event-stream/",code="201"}' in text, "requests by route/code")
    st, hdrs, data = e.request("GET", "/openapi.json")
    t.eq(st, 200, "openapi status")
    doc = json.loads(data)
    t.check(str(doc.get("openapi", "")).startswith("3."), "openapi version")
    # Every documented path answers something other than 404 for its methods.
    for path, ops in doc.get("paths", {}).items():
        concrete = path.replace("{id}", "1").replace("{uuid}", "x").replace("{file}", "index.html")
        if path == "/admin/feed":
            continue  # an endless event stream (test_console_api.py reads it)
        for method in ops:
            if method.upper() not in ("GET", "POST", "DELETE"):
                continue
            if method.upper() == "POST" and "reload" in path:
                continue
            body = {"routing_key": "openapi"} if method.upper() == "POST" else None
            st, _, _ = e.request(method.upper(), concrete, body)
            t.check(st != 404 or concrete.startswith(("/event-stream/1", "/admin/tail/1")),
                    "documented %s %s is routed (%d)" % (method.upper(), path, st))
            t.check(st != 405, "documented %s %s allows its method" % (method.upper(), path))


def concurrent_posts(e, n=200):
    results = []
    lock = threading.Lock()

    def post(i):
        st, body = e.json("POST", "/event-stream/", {"routing_key": "c%d" % i})
        with lock:
            results.append((st, body))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    t.eq(len(results), n, "all concurrent POSTs answered")
    t.eq(sum(1 for st, _ in results if st == 201), n, "all concurrent POSTs 201")
    ids = {b["id"] for st, b in results if st == 201}
    uuids = {b["location"].rsplit("/", 1)[1] for st, b in results if st == 201}
    t.eq(len(ids), n, "distinct ids")
    t.eq(len(uuids), n, "distinct uuids")


def main():
    workdir = tempfile.mkdtemp(prefix="ess-api-")
    e = Essd(workdir=workdir).start()
    try:
        api_table(e)
        concurrent_posts(e)
        st, before = e.json("GET", "/event-stream/")
    finally:
        rc = e.stop()
    t.eq(rc, 0, "SIGTERM exits 0")

    # The registry survives a restart, and ids keep counting.
    e2 = Essd(workdir=workdir, db=e.db).start()
    try:
        st, after = e2.json("GET", "/event-stream/")
        t.eq(after, before, "registry identical after restart")
        st, body = e2.json("POST", "/event-stream/", {"routing_key": "after-restart"})
        t.check(body["id"] > max(x["id"] for x in before["event_streams"]), "ids continue after restart")
    finally:
        t.eq(e2.stop(signal_name()), 0, "SIGINT exits 0")

    # Token: every route but /health/* needs it.
    e3 = Essd(env={"ESS_API_TOKEN": "s3cret", "ESS_INGRESS_SECURE": "yes",
                   "ESS_INGRESS_LOCATION": "example.org"}).start()
    try:
        for method, path in (("GET", "/event-stream/"), ("GET", "/metrics"), ("GET", "/nope"),
                             ("GET", "/event-stream/version/"), ("GET", "/openapi.json")):
            st, hdrs, data = e3.request(method, path)
            t.eq(st, 401, "401 without token: %s" % path)
            st, hdrs, data = e3.request(method, path, headers={"Authorization": "Bearer wrong"})
            t.eq(st, 401, "401 with a wrong token: %s" % path)
        t.eq(e3.json("GET", "/health/live")[0], 200, "health needs no token")
        st, body = e3.json("POST", "/event-stream/", {"routing_key": "a"}, {"Authorization": "Bearer s3cret"})
        t.eq(st, 201, "201 with the token")
        t.check(body["location"].startswith("wss://example.org/event-stream/"), "wss location from env")
    finally:
        e3.stop()

    # A bad configuration stops essd with a message that names the key.
    bad = os.path.join(workdir, "bad.yaml")
    with open(bad, "w") as f:
        f.write("public:\n  listen: 12\nbrokr: {}\n")
    r = subprocess.run([ESSD, "--config", bad, "--check-config"], capture_output=True, text=True,
                       env=Essd().env(), timeout=30)
    t.eq(r.returncode, 2, "--check-config exit 2 on a bad file")
    t.check("public.listen" in r.stderr or "brokr" in r.stderr, "error names the key: %r" % r.stderr)
    r = subprocess.run([ESSD, "--config", bad], capture_output=True, text=True, env=Essd().env(), timeout=30)
    t.check(r.returncode != 0, "essd refuses to start with a bad config")
    good = os.path.join(os.environ.get("ESS_SOURCE_DIR", "."), "config", "essd.yaml")
    r = subprocess.run([ESSD, "--config", good, "--check-config"], capture_output=True, text=True,
                       env=Essd().env(), timeout=30)
    t.eq(r.returncode, 0, "--check-config on config/essd.yaml: %s" % r.stderr)
    env = Essd().env()
    env["ESS_AMQP_URL"] = "amqp://a:pw@h:bad/"
    r = subprocess.run([ESSD, "--config", good, "--check-config"], capture_output=True, text=True,
                       env=env, timeout=30)
    t.eq(r.returncode, 2, "--check-config refuses a broker URL the broker client cannot use")
    t.check("broker.url" in r.stderr, "the error names broker.url: %r" % r.stderr)
    r = subprocess.run([ESSD, "--version"], capture_output=True, text=True, timeout=30)
    t.check(r.returncode == 0 and r.stdout.startswith("essd "), "--version")

    # A corrupt database stops start-up and is left as it was.
    corrupt = os.path.join(workdir, "corrupt.db")
    with open(corrupt, "wb") as f:
        f.write(b"not a database " * 100)
    ec = Essd(workdir=workdir, db=corrupt)
    try:
        ec.start()
        t.check(False, "essd started on a corrupt database")
        ec.stop()
    except RuntimeError as err:
        t.check("corrupt.db" in str(err), "corrupt database named in the error")
    with open(corrupt, "rb") as f:
        t.eq(f.read(), b"not a database " * 100, "corrupt database untouched")
    t.done()


def signal_name():
    import signal
    return signal.SIGINT


if __name__ == "__main__":
    main()
