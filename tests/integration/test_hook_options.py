"""Hook options (issue 11): lua.enrich_options reach the filter example as
its conf argument; a reload with other options applies them to the same
connection; a bad option value is refused at start and by POST
/admin/reload (422, the running scripts stay), the key named each time."""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from esslib import (Checker, Essd, cat_publish, create_es, delete_stream, unique,  # noqa: E402
                    ws_open)

t = Checker()
work = tempfile.mkdtemp(prefix="ess-hookopt-")
cfg = os.path.join(work, "essd.yaml")
stream = unique("it11-opts")


def write_cfg(keep):
    """The filter example with `keep` (a list, or any YAML value as text)."""
    value = json.dumps(keep) if isinstance(keep, list) else keep
    tmp = cfg + ".tmp"
    with open(tmp, "w") as f:
        f.write('lua:\n  enrich: "ess.examples.filter"\n  enrich_options:\n'
                "    keep: %s\n    keep_untyped: false\n" % value)
    os.replace(tmp, cfg)


def body(mtype, n):
    return json.dumps({"message_type": mtype, "n": n}, separators=(",", ":"))


def read_types(ws, count):
    """The (message_type, n) of the next count frames."""
    out = []
    for _ in range(count):
        fr = ws.recv(timeout=30)
        if fr[0] == "close":
            t.check(False, "unexpected close %r" % (fr[1:],))
            break
        d = json.loads(fr[1])
        out.append((d["message_type"], d["n"]))
    return out


# Refused at start: essd exits and names the key.
write_cfg('"A"')
bad = Essd(config=cfg)
try:
    bad.start()
    t.check(False, "essd started with keep: \"A\"")
    bad.stop()
except RuntimeError as ex:
    t.check("lua.enrich_options.keep: expected a list of strings" in str(ex),
            "start refusal names the key: %s" % str(ex)[-400:])
    t.check(bad.proc.returncode != 0, "essd exits non-zero")

write_cfg(["A"])
e = Essd(config=cfg).start()
try:
    cat_publish(stream, [body("A", 0), body("B", 1), body("A", 2)], create=True)
    _, path = create_es(e, stream)
    ws = ws_open(e, path + "?stream_from_ordinal=0", timeout=30)
    t.eq(read_types(ws, 2), [("A", 0), ("A", 2)], "keep: [A] forwards only A")

    # Other options, one reload: B now passes on the same connection.
    write_cfg(["B"])
    st, res = e.json("POST", "/admin/reload")
    t.eq(st, 200, "reload with keep: [B]: %r" % (res,))
    cat_publish(stream, [body("A", 3), body("B", 4)])
    t.eq(read_types(ws, 1), [("B", 4)], "after the reload only B passes")

    # A bad value: 422 with the key, and keep: [B] stays in force.
    write_cfg('[B, 7]')
    st, res = e.json("POST", "/admin/reload")
    t.eq(st, 422, "reload with keep: [B, 7]")
    t.eq((res or {}).get("status"), "rejected", "reload status")
    t.check("lua.enrich_options.keep[2]: expected a string, got 7" in (res or {}).get("error", ""),
            "422 names the key: %r" % (res,))
    cat_publish(stream, [body("A", 5), body("B", 6)])
    t.eq(read_types(ws, 1), [("B", 6)], "the running options stay after a rejected reload")
    ws.close()
finally:
    e.stop()
    delete_stream(stream)
    shutil.rmtree(work, ignore_errors=True)

t.done()
