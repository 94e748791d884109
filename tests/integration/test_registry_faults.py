"""The registry and the broker URL under faults an operator meets (issue 12
cases 7, 8, 9 and 16): a full or immutable filesystem must turn
/health/ready to 503 and POSTs to 503 with a log line (never a crash), an
existing database on a read-only filesystem and a missing directory must
stop essd with one clear line, and with broker.version 2 the AMQP port of
broker.url is named at start and checked by readiness.

Needs root (mount, chattr). Every mount made here is undone in a finally
block; a missing capability skips the case with a note instead of failing.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from esslib import Checker, Essd, free_port  # noqa: E402

T = Checker()


class Tmpfs:
    """A small tmpfs of its own, so that "disk full" and "read-only" touch
    nothing else. Unmounted (after clearing immutable flags) on exit."""

    def __init__(self, size="4m"):
        self.dir = tempfile.mkdtemp(prefix="ess-regfault-")
        self.size = size
        self.mounted = False

    def __enter__(self):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % self.size, "tmpfs", self.dir],
                           capture_output=True)
        if r.returncode != 0:
            return None
        self.mounted = True
        return self

    def __exit__(self, *exc):
        if self.mounted:
            subprocess.run(["chattr", "-R", "-i", self.dir], capture_output=True)
            subprocess.run(["mount", "-o", "remount,rw", self.dir], capture_output=True)
            r = subprocess.run(["umount", self.dir], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def chattr(flag, path):
    return subprocess.run(["chattr", flag, path], capture_output=True).returncode == 0


def wait_status(e, path, want, seconds=20):
    """Poll path until it answers want; return (status, body) of the last try."""
    deadline = time.time() + seconds
    st, body = None, None
    while time.time() < deadline:
        if e.proc.poll() is not None:
            return None, None
        try:
            st, _, data = e.request("GET", path, timeout=5)
            body = json.loads(data) if data else None
        except (OSError, ValueError):
            st = None
        if st == want:
            break
        time.sleep(0.2)
    return st, body


def fill(dirpath):
    """Write a file until the filesystem is full; return its path."""
    path = os.path.join(dirpath, "filler")
    chunk = b"\0" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while os.write(fd, chunk) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def post(e, key):
    st, _, data = e.request("POST", "/event-stream/", {"routing_key": key})
    return st, data


def disk_full():
    """Case 7: every POST fails (disk full) -> /health/ready 503, registry false."""
    with Tmpfs("2m") as fs:
        if fs is None:
            T.check(False, "disk full: cannot mount a tmpfs (run as root)")
            return
        e = Essd(workdir=fs.dir)
        e.log_path = os.path.join(tempfile.mkdtemp(prefix="ess-regfault-log-"), "essd.out")
        e.start()
        filler = None
        try:
            T.eq(post(e, "before-full")[0], 201, "disk full: POST before")
            filler = fill(fs.dir)
            st, data = post(e, "while-full")
            T.eq(st, 503, "disk full: POST while full (%r)" % data)
            st, body = wait_status(e, "/health/ready", 503)
            T.eq(st, 503, "disk full: /health/ready turns 503")
            T.eq((body or {}).get("checks", {}).get("registry"), False, "disk full: registry check false")
            T.eq(e.request("GET", "/health/live")[0], 200, "disk full: still live")
            os.unlink(filler)
            filler = None
            st, body = wait_status(e, "/health/ready", 200)
            T.eq(st, 200, "disk full: ready again once space is back (%r)" % body)
            T.eq(post(e, "after-full")[0], 201, "disk full: POST after")
        finally:
            if filler:
                os.unlink(filler)
            rc = e.stop()
        T.eq(rc, 0, "disk full: exit status")
        out = e.output()
        T.check("registry: insert:" in out and "full" in out, "disk full: the failed write is logged")
        T.check("registry: writes fail" in out, "disk full: readiness failure is logged")


def shm_immutable():
    """Case 9: chattr +i on the database's side files while running, then
    POST: 503 and a log line, never SIGBUS."""
    # tmpfs checks the immutable flag only at open(); ext4 (the usual
    # home of ess.db) also refuses writes through open descriptors and
    # faults on a shared mapping, which is what killed essd with SIGBUS.
    work = tempfile.mkdtemp(prefix="ess-regfault-")
    probe = os.path.join(work, "probe")
    open(probe, "w").close()
    if not chattr("+i", probe):
        print("SKIP immutable: chattr +i does not work in %s" % work)
        return
    chattr("-i", probe)
    if True:
        e = Essd(workdir=work)
        e.start()
        frozen = []
        try:
            T.eq(post(e, "before-immutable")[0], 201, "immutable: POST before")
            T.check(not os.path.exists(e.db + "-shm"),
                    "immutable: no shared-memory wal-index file (%s-shm) while essd runs" % e.db)
            for suffix in ("-shm", "-wal", ""):
                if os.path.exists(e.db + suffix) and chattr("+i", e.db + suffix):
                    frozen.append(e.db + suffix)
            T.check(frozen, "immutable: chattr +i worked in %s" % work)
            codes = [post(e, "immutable-%d" % i)[0] for i in range(3)]
            T.check(e.proc.poll() is None, "immutable: essd still running after POST (exit %r)" % e.proc.poll())
            if e.proc.poll() is not None:
                return
            T.eq(codes, [503, 503, 503], "immutable: POSTs refused")
            st, body = wait_status(e, "/health/ready", 503)
            T.eq((st, (body or {}).get("checks", {}).get("registry")), (503, False), "immutable: not ready")
            for p in frozen:
                chattr("-i", p)
            frozen = []
            T.eq(wait_status(e, "/health/ready", 200)[0], 200, "immutable: ready again after chattr -i")
            T.eq(post(e, "after-immutable")[0], 201, "immutable: POST after chattr -i")
            st, body = e.json("GET", "/event-stream/")
            T.eq([x["routing_key"] for x in body["event_streams"]], ["before-immutable", "after-immutable"],
                 "immutable: the refused rows are not there")
        finally:
            for p in frozen:
                chattr("-i", p)
            rc = e.stop()
        T.eq(rc, 0, "immutable: exit status (135 = SIGBUS)")
        T.check("registry: insert:" in e.output(), "immutable: the failed write is logged")
        shutil.rmtree(work, ignore_errors=True)


def other_reader(db):
    """What an sqlite3 CLI sees while essd holds the database (documented)."""
    if shutil.which("sqlite3") is None:
        return
    r = subprocess.run(["sqlite3", "-readonly", db, "SELECT count(*) FROM event_stream"],
                       capture_output=True, timeout=30)
    T.check(r.returncode != 0 and b"locked" in r.stderr,
            "sqlite3 CLI while essd runs: 'database is locked' as documented (%r)" % (r.stderr,))


def readonly_existing_db():
    """Case 16: an existing database on a read-only filesystem."""
    with Tmpfs("4m") as fs:
        if fs is None:
            T.check(False, "read-only: cannot mount a tmpfs (run as root)")
            return
        logdir = tempfile.mkdtemp(prefix="ess-regfault-log-")
        e = Essd(workdir=logdir, db=os.path.join(fs.dir, "ess.db"))
        e.start()
        try:
            T.eq(post(e, "kept")[0], 201, "read-only: POST")
            other_reader(e.db)
        finally:
            T.eq(e.stop(), 0, "read-only: first run exit")
        r = subprocess.run(["mount", "-o", "remount,ro", fs.dir], capture_output=True)
        T.eq(r.returncode, 0, "read-only: remount ro (%r)" % r.stderr)
        e2 = Essd(workdir=logdir, db=e.db)
        e2.log_path = os.path.join(logdir, "second.out")
        try:
            e2.start(wait=False)
            rc = e2.proc.wait(20)
        finally:
            e2.stop()
        out = e2.output()
        T.check(rc not in (0, None), "read-only: essd refuses to start (exit %r)" % rc)
        lines = [ln for ln in out.splitlines() if "registry:" in ln]
        T.check(lines and "cannot be opened for writing" in lines[-1] and "Read-only file system" in lines[-1]
                and e.db in lines[-1],
                "read-only: one line says why: %r" % lines)
        T.check("not a usable SQLite database" not in out, "read-only: not called unusable")
        shutil.rmtree(logdir, ignore_errors=True)


def missing_directory():
    """Case 16: database.path in a directory that does not exist."""
    work = tempfile.mkdtemp(prefix="ess-regfault-")
    missing = os.path.join(work, "no-such-dir")
    e = Essd(workdir=work, db=os.path.join(missing, "sub", "ess.db"))
    try:
        e.start(wait=False)
        rc = e.proc.wait(20)
    finally:
        e.stop()
    out = e.output()
    T.check(rc not in (0, None), "missing dir: essd refuses to start (exit %r)" % rc)
    lines = [ln for ln in out.splitlines() if "registry:" in ln]
    T.check(lines and ("directory %s does not exist" % missing) in lines[-1],
            "missing dir: the line names the missing directory %s: %r" % (missing, lines))
    shutil.rmtree(work, ignore_errors=True)


def amqp_port():
    """Case 8: broker.version 2 with a URL whose port answers nothing."""
    port = free_port()
    e = Essd(env={"ESS_AMQP_URL": "amqp://guest:guest@127.0.0.1:%d/" % port})
    e.start(ready=False)
    try:
        deadline = time.time() + 20
        st, body = None, None
        while time.time() < deadline:  # until the stream connection is up
            st, body = e.json("GET", "/health/ready")
            if body["checks"].get("broker") and "amqp" in body["checks"]:
                break
            time.sleep(0.2)
        checks = (body or {}).get("checks", {})
        T.eq(st, 503, "amqp port: /health/ready with nothing on the URL's port (%r)" % body)
        T.check(checks.get("broker") is True and isinstance(checks.get("amqp"), str)
                and ("127.0.0.1:%d" % port) in checks["amqp"],
                "amqp port: stream broker up, amqp check names the port: %r" % (checks,))
    finally:
        rc = e.stop()
    T.eq(rc, 0, "amqp port: exit status")
    out = e.output()
    T.check(("127.0.0.1:%d" % port) in out and "127.0.0.1:5552" in out and "broker.stream_port" in out,
            "amqp port: the start line names both ports")
    T.check(("nothing accepts connections at 127.0.0.1:%d" % port) in out,
            "amqp port: the failed check is logged")
    # And the default URL is ready with the check true.
    e = Essd()
    e.start()
    try:
        st, body = e.json("GET", "/health/ready")
        T.eq((st, body["checks"].get("amqp")), (200, True), "amqp port: default URL ready")
    finally:
        e.stop()


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIP: needs root for mount and chattr")
        sys.exit(0)
    for case in (disk_full, shm_immutable, readonly_existing_db, missing_directory, amqp_port):
        try:
            case()
        except Exception as exc:  # one broken case must not hide the others
            T.check(False, "%s raised %r" % (case.__name__, exc))
    T.done()
