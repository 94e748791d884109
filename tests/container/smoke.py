"""The container smoke test (scripts/container test runs it twice): against
essd and RabbitMQ run as containers from this repository's images, and
against the Kubernetes manifests run by `podman kube play`.

    smoke.py containers --container NAME --site DIR --public P --internal P --amqp URL
    smoke.py kube --pod NAME --container NAME --site DIR --public P --internal P --amqp URL

Checks, in order: the container runs as a non-root user on a read-only
root with its health check passing; 1,000 messages published with
ess-publish and an event stream POSTed reach ess-listen, every one
enriched (by the ConfigMap's site.enrich hook, "site":"v1"), and ess-cat
reads the stream (the README's try-it lines); a live
client sees a Lua change applied by the ConfigMap-style swap (a new
..<timestamp> folder, the ..data symlink renamed over, as kubelet does)
in its next message, with no disconnect; SIGTERM closes it with 1001 and
the container exits 0; restarted, essd still lists the event stream (the
/data volume). The tools run from the essd image (podman run). Standard
library only, plus esslib from tests/integration; every wait is bounded.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from esslib import Checker, WebSocket, unique  # noqa: E402

IMAGE = os.environ.get("ESS_IMAGE", "localhost/essd:latest")
ENRICH = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "k8s", "base", "site", "enrich.lua")


def podman(*args, check=True, timeout=120):
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("podman %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def tool(name, *args, timeout=180):
    """Run one of the image's tools on the host network."""
    return podman("run", "--rm", "--network=host", "--read-only", "--no-healthcheck", "--entrypoint",
                  "/opt/essd/bin/" + name, IMAGE, *args, check=False, timeout=timeout)


def http(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, repr(e)


def wait_ready(port, seconds=90):
    end = time.time() + seconds
    while time.time() < end:
        try:
            if http(port, "GET", "/health/ready")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def reloads(port):
    st, text = http(port, "GET", "/metrics")
    for line in text.splitlines() if st == 200 else []:
        if line.startswith("ess_reloads_total "):
            return int(float(line.split()[1]))
    return -1


# --- the ConfigMap volume as kubelet writes it ---------------------------

def site_write(site, files, stamp):
    """Write files the way kubelet's AtomicWriter updates a ConfigMap volume:
    a new ..<stamp> folder, a ..data_tmp symlink renamed over ..data (the
    atomic step), user-visible name -> ..data/name symlinks where missing,
    then the old folder removed."""
    new = "..%s" % stamp
    os.mkdir(os.path.join(site, new))
    for name, text in files.items():
        with open(os.path.join(site, new, name), "w") as f:
            f.write(text)
    old = os.readlink(os.path.join(site, "..data")) if os.path.islink(os.path.join(site, "..data")) else None
    os.symlink(new, os.path.join(site, "..data_tmp"))
    os.rename(os.path.join(site, "..data_tmp"), os.path.join(site, "..data"))
    for name in files:
        link = os.path.join(site, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link + ".tmp")
            os.rename(link + ".tmp", link)
    if old:
        subprocess.run(["rm", "-rf", os.path.join(site, old)], check=True)


def site_read(site):
    """name -> text of the site folder's user-visible files."""
    out = {}
    for name in sorted(os.listdir(site)):
        if not name.startswith(".."):
            with open(os.path.join(site, name)) as f:
                out[name] = f.read()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["containers", "kube"])
    ap.add_argument("--container", required=True)
    ap.add_argument("--pod")
    ap.add_argument("--site", required=True)
    ap.add_argument("--public", type=int, required=True)
    ap.add_argument("--internal", type=int, required=True)
    ap.add_argument("--amqp", required=True)
    ap.add_argument("--stream-port", type=int, default=5562)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args()
    t = Checker()
    name = a.container

    # -- the container as the orchestrator runs it
    t.check(wait_ready(a.internal), "essd ready on :%d" % a.internal)
    info = json.loads(podman("inspect", name).stdout)[0]
    t.check(info["HostConfig"]["ReadonlyRootfs"], "read-only root filesystem")
    uid = podman("exec", name, "/usr/bin/id", "-u").stdout.strip()
    t.check(uid not in ("", "0"), "runs as a non-root user (uid %s)" % uid)
    r = podman("exec", name, "/bin/sh", "-c", "touch /opt/x 2>/dev/null; echo $?", check=False)
    t.eq(r.stdout.strip(), "1", "the root filesystem refuses writes")
    r = podman("healthcheck", "run", name, check=False)
    t.eq(r.returncode, 0, "podman healthcheck run: " + r.stdout + r.stderr)
    st, _ = http(a.internal, "GET", "/health/live")
    t.eq(st, 200, "/health/live")

    # -- the kubelet layout of the site folder (kube play writes plain files)
    files = site_read(a.site)
    t.check("essd.yaml" in files and "enrich.lua" in files, "site folder has essd.yaml and enrich.lua")
    if not os.path.islink(os.path.join(a.site, "..data")):
        before = reloads(a.internal)
        site_write(a.site, files, "2000_01_01_00_00_00.000000001")
        for _ in range(40):
            if reloads(a.internal) > before:
                break
            time.sleep(0.25)

    # -- publish, create, listen
    key = unique("ct")
    r = tool("ess-publish", "--url", a.amqp, "--routing-key", key, "--count", str(a.count), "--declare")
    t.eq(r.returncode, 0, "ess-publish %d messages: %s" % (a.count, r.stderr.strip()))
    st, body = http(a.internal, "POST", "/event-stream/", {"routing_key": key})
    t.eq(st, 201, "POST /event-stream/: " + body)
    es = json.loads(body) if st == 201 else {"id": -1, "location": ""}
    loc = es["location"]
    t.check(loc.startswith("ws://localhost:%d/event-stream/" % a.public), "location " + loc)
    r = tool("ess-listen", loc, "-o", "0", "--count", str(a.count))
    t.eq(r.returncode, 0, "ess-listen exit: " + r.stderr.strip())
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("offset=")]
    t.eq(len(lines), a.count, "ess-listen received every message")
    enriched = [ln for ln in lines if '"ess_offset":' in ln and '"site":"v1"' in ln]
    t.eq(len(enriched), a.count, "every message enriched by ess.enrich and site.enrich (v1)")
    offsets = [int(ln.split()[0].split("=")[1]) for ln in lines]
    t.eq(offsets, list(range(offsets[0], offsets[0] + a.count)) if offsets else [], "offsets in order, none missing")

    r = tool("ess-cat", key, "--url", a.amqp, "--stream-port", str(a.stream_port), "--from", "first",
             "--count", "5", "--format", "json")
    t.check(r.returncode == 0 and len(r.stdout.splitlines()) == 5,
            "ess-cat reads the stream directly: %s" % (r.stdout[-200:] + r.stderr))

    # -- a live client across a ConfigMap-style swap
    path = loc.split(str(a.public), 1)[1]
    ws = WebSocket("127.0.0.1", a.public, path, timeout=20)
    r = tool("ess-publish", "--url", a.amqp, "--routing-key", key, "--count", "1")
    m = ws.recv(timeout=20)
    t.check(m[0] == 1 and b'"site":"v1"' in m[1], "live client: next message (v1): %r" % (m,))
    before = reloads(a.internal)
    files = site_read(a.site)
    with open(ENRICH) as f:
        t.check('local SITE = "v1"' in f.read(), "enrich.lua has the v1 marker")
    files["enrich.lua"] = files["enrich.lua"].replace('local SITE = "v1"', 'local SITE = "v2"')
    site_write(a.site, files, "2000_01_01_00_00_01.000000002")
    seen = False
    for _ in range(60):
        if reloads(a.internal) > before:
            seen = True
            break
        time.sleep(0.25)
    t.check(seen, "lua.watch reloaded after the ..data swap (ess_reloads_total %d -> %d)"
            % (before, reloads(a.internal)))
    if not seen:
        # Still a failure (above); reload by hand so the rest of the run
        # shows whether the swapped files themselves load.
        st, body = http(a.internal, "POST", "/admin/reload")
        print("smoke: lua.watch missed the swap; POST /admin/reload: %d %s" % (st, body), file=sys.stderr)
    tool("ess-publish", "--url", a.amqp, "--routing-key", key, "--count", "1")
    try:
        m = ws.recv(timeout=20)
    except OSError as e:
        m = ("error", repr(e))
    t.check(m[0] == 1 and b'"site":"v2"' in m[1], "same connection, next message shows the change (v2): %r" % (m,))

    # -- SIGTERM: 1001 to the client, exit 0 within shutdown.grace_s
    got = {}

    def wait_close():
        try:
            while True:
                f = ws.recv(timeout=30)
                if f[0] == "close":
                    got["close"] = f
                    return
        except OSError as e:
            got["error"] = repr(e)

    th = threading.Thread(target=wait_close)
    th.start()
    t0 = time.time()
    if a.mode == "kube":
        podman("pod", "stop", "-t", "25", a.pod)
    else:
        podman("stop", "-t", "25", name)
    took = time.time() - t0
    th.join(40)
    t.eq(got.get("close", (None, None))[1], 1001, "SIGTERM closes the client with 1001 (%r)" % (got,))
    code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
    t.eq(code, "0", "essd exited 0 on SIGTERM")
    t.check(took < 20, "stopped within shutdown.grace_s (%.1f s)" % took)
    ws.close()

    # -- restarted, the registry is still there (the /data volume)
    if a.mode == "kube":
        podman("pod", "start", a.pod)
    else:
        podman("start", name)
    if not t.check(wait_ready(a.internal), "essd ready again after the restart"):
        r = podman("ps", "-a", "--filter", "name=" + name, "--format", "{{.Names}} {{.Status}}", check=False)
        print("smoke: %s\n%s" % (r.stdout.strip(), podman("logs", "--tail", "30", name, check=False).stderr),
              file=sys.stderr)
    st, body = http(a.internal, "GET", "/event-stream/")
    listed = [e for e in json.loads(body).get("event_streams", [])] if st == 200 else []
    t.check(any(e.get("id") == es["id"] and e.get("routing_key") == key for e in listed),
            "the restarted container still lists event stream %s" % es["id"])
    r = tool("ess-listen", loc, "-o", "0", "--count", "1")
    t.check(r.returncode == 0 and '"site":"v2"' in r.stdout, "and serves it with the reloaded hook")
    t.done()


if __name__ == "__main__":
    main()
