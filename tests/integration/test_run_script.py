"""The newcomer's path: README.md's "Try it" block, run line by line.

The block is read from README.md itself, so the README and this test cannot
drift apart: a line this test does not know is a failure. Each line runs in
bash from the source tree, as a newcomer would type it, with only these
substitutions so it cannot clash with anything else on the machine:

- ports 8080/8081 in the commands become free loopback ports, given to essd
  through ESS_PUBLIC_LISTEN / ESS_INTERNAL_LISTEN (127.0.0.1 only);
- the database is a temporary file (ESS_DATABASE_PATH), so the first event
  stream is id 1 as the README shows;
- `build/` is $ESS_BUILD_DIR (what scripts/run itself honours), built with
  the build type already in its CMake cache so scripts/build changes nothing;
- the routing key `demo` becomes a unique name (the broker is shared); the
  stream is deleted at the end;
- `<uuid>` is the uuid the POST returned, and `kill %1` is SIGTERM to the
  process `scripts/run &` started (scripts/run execs essd, so it is essd).

Checked: scripts/run installs nothing new, builds, finds the broker and
execs essd with config/essd.yaml on the given addresses; the readiness loop
ends; ess-publish publishes and confirms 5 messages; the POST answers
exactly the README's line (id 1, a ws://localhost:8080 location, 22-char
uuid); ess-listen prints offsets 0..4, each body enriched with its
ess_offset/ess_timestamp, and exits 0; ess-cat prints the same 5 messages
as JSON lines, unenriched, with the same timestamps; essd exits 0 on SIGTERM
with no sanitizer report. Every wait is bounded.
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from esslib import BUILD, SOURCE, Checker, delete_stream, free_port, unique, wait_broker  # noqa: E402

t = Checker()
BUILD = os.path.abspath(BUILD)
SOURCE = os.path.abspath(SOURCE)
READY_WAIT_S = 240   # scripts/run may have to rebuild what changed
STEP_WAIT_S = 30


def try_it_block():
    """The indented lines after "Try it" in README.md (blank lines dropped)."""
    with open(os.path.join(SOURCE, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("Try it"))
    block, i = [], start + 1
    while i < len(lines) and not lines[i].startswith("    "):
        i += 1
    while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
        if lines[i].strip():
            block.append(lines[i][4:])
        i += 1
    return block


def build_type():
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""


def substitute(line, ports, key, uuid):
    line = re.sub(r"(?<![\w/.-])build/", BUILD + "/", line)
    line = line.replace("localhost:8080", "localhost:%d" % ports[0])
    line = line.replace("localhost:8081", "localhost:%d" % ports[1])
    line = re.sub(r"\bdemo\b", key, line)
    if uuid is not None:
        line = line.replace("<uuid>", uuid)
    return line


def sh(line, env, timeout=STEP_WAIT_S):
    """Run one README line in bash; return (status, stdout, stderr) as text."""
    try:
        r = subprocess.run(["bash", "-c", line], cwd=SOURCE, env=env, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", "timed out after %d s" % timeout
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def wait_loop(line, env, proc):
    """Run the README's readiness loop; stop it if essd (scripts/run) exits
    first or READY_WAIT_S pass. Return (status, stdout, why)."""
    loop = subprocess.Popen(["bash", "-c", line], cwd=SOURCE, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    why = ""
    for _ in range(READY_WAIT_S * 2):
        try:
            loop.wait(0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if proc is None or proc.poll() is not None:
            why = "scripts/run exited with %s" % (proc.returncode if proc else "nothing started")
            break
    if loop.poll() is None:
        why = why or "timed out"
        os.killpg(loop.pid, signal.SIGKILL)   # the loop and its curl/sleep, which hold the pipe
        loop.wait(5)
    out = loop.stdout.read().decode("utf-8", "replace")
    loop.stdout.close()
    return (loop.returncode if not why else None), out, why


def sanitizer_report(text):
    for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        i = text.find(mark)
        if i >= 0:
            return text[max(0, i - 200):i + 1500]
    return ""


def main():
    block = try_it_block()
    t.check(len(block) >= 6, "README.md has a Try it block: %r" % block)
    t.check(shutil.which("curl") is not None, "curl is installed (the README's lines use it)")
    if not wait_broker():
        t.check(False, "the shared broker answers on 5672/5552")
        t.done()

    work = tempfile.mkdtemp(prefix="ess-run-")
    ports = (free_port(), free_port())
    key = unique("it-run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESS_")}
    env.update({
        "ESS_BUILD_DIR": BUILD,
        "ESS_PUBLIC_LISTEN": "127.0.0.1:%d" % ports[0],
        "ESS_INTERNAL_LISTEN": "127.0.0.1:%d" % ports[1],
        "ESS_DATABASE_PATH": os.path.join(work, "ess.db"),
    })
    bt = build_type()
    if bt:
        env["ESS_BUILD_TYPE"] = bt
    log_path = os.path.join(work, "run.out")
    log = open(log_path, "wb")
    proc = None
    uuid = None
    expect_post = None
    listened = {}
    try:
        for raw in block:
            if raw.lstrip().startswith("#"):
                # An expected output line: the one after the POST.
                expect_post = raw.lstrip()[1:].strip()
                continue
            code = re.sub(r"\s+#(\s.*)?$", "", raw).strip()   # the command, its comment cut
            words = shlex.split(code)
            line = substitute(code, ports, key, uuid)
            tool = os.path.basename(words[0]) if words else ""
            if words[:1] == ["scripts/run"] and words[-1] == "&":
                proc = subprocess.Popen(["bash", "-c", "exec " + line[:-1].strip()], cwd=SOURCE, env=env,
                                        stdout=log, stderr=subprocess.STDOUT)
            elif tool == "until":
                st, out, err = wait_loop(line, env, proc)
                t.eq(st, 0, "readiness loop ends within %d s while essd runs (%s)" % (READY_WAIT_S, err.strip()))
                t.check('"status":"ready"' in out, "readiness loop printed a ready body: %r" % out)
                t.check(proc is not None and proc.poll() is None, "essd still runs once ready")
            elif words == ["kill", "%1"]:
                stop_essd(proc, log_path, ports)
                proc = None
            elif tool == "ess-publish":
                st, out, err = sh(line, env)
                t.eq(st, 0, "ess-publish exit status (%s)" % err.strip())
                t.check(re.search(r"^published 5 messages to event-streams/%s, all confirmed" % re.escape(key),
                                  out, re.M) is not None, "ess-publish output: %r" % out)
            elif tool == "curl" and "-XPOST" in words:
                st, out, err = sh(line, env)
                t.eq(st, 0, "curl POST exit status (%s)" % err.strip())
                want = expect_post_of(block)
                pattern = "^" + re.escape(want).replace(re.escape("<uuid>"), "([A-Za-z0-9_-]{22})") + "$"
                m = re.match(pattern, out.strip())
                t.check(m is not None, "POST answers like the README's line %r: %r" % (want, out))
                if m:
                    uuid = m.group(1)
            elif tool == "ess-listen":
                t.check(uuid is not None, "a uuid from the POST before ess-listen")
                st, out, err = sh(line, env)
                t.eq(st, 0, "ess-listen exit status (%s)" % err.strip())
                listened = check_listen(out)
            elif tool == "ess-cat":
                st, out, err = sh(line, env)
                t.eq(st, 0, "ess-cat exit status (%s)" % err.strip())
                check_cat(out, listened)
            else:
                t.check(False, "a README Try-it line this test knows: %r" % raw)
        t.check(expect_post is not None, "the README shows the POST's answer")
        t.check(proc is None, "the README's block ends by stopping essd (kill %1)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        if t.failed:
            with open(log_path, "rb") as f:
                print("--- scripts/run and essd output (end) ---\n" + f.read()[-4000:].decode("utf-8", "replace"))
        delete_stream(key)
        shutil.rmtree(work, ignore_errors=True)
    t.done()


def expect_post_of(block):
    for raw in block:
        s = raw.lstrip()
        if s.startswith("# {"):
            return s[1:].strip()
    return "<missing>"


def stop_essd(proc, log_path, ports):
    t.check(proc is not None, "scripts/run was started before kill %1")
    if proc is None:
        return
    try:
        exe = os.path.basename(os.readlink("/proc/%d/exe" % proc.pid))
    except OSError:
        exe = None
    t.eq(exe, "essd", "scripts/run execs essd (the background job is essd itself)")
    with open(log_path, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    t.check(re.search(r"listening: public 127\.0\.0\.1:%d, internal 127\.0\.0\.1:%d" % ports, out) is not None,
            "essd logged its loopback listeners: %s" % out[-2000:])
    t.check("config config/essd.yaml" in out, "essd runs with config/essd.yaml")
    proc.send_signal(signal.SIGTERM)
    try:
        st = proc.wait(STEP_WAIT_S)
    except subprocess.TimeoutExpired:
        st = None
    t.eq(st, 0, "essd exits 0 on SIGTERM")
    with open(log_path, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    rep = sanitizer_report(out)
    t.eq(rep, "", "no sanitizer report in essd's output")


def check_listen(out):
    """ess-listen's lines for offsets 0..4; return {offset: timestamp}."""
    lines = out.splitlines()
    msgs = [x for x in lines if x.startswith("offset=")]
    t.eq(len(msgs), 5, "ess-listen printed 5 messages")
    seen = {}
    for i, x in enumerate(msgs):
        m = re.match(r"offset=(\d+) timestamp=(\d+) type=text bytes=(\d+) body=(.*)$", x)
        if not t.check(m is not None, "ess-listen line form: %r" % x):
            continue
        off, ts, nbytes, body = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        t.eq(off, i, "ess-listen offsets start at 0 and are contiguous")
        t.eq(nbytes, len(body.encode("utf-8")), "ess-listen bytes= is the body's length")
        try:
            obj = json.loads(body)
        except ValueError:
            t.check(False, "ess-listen body is JSON: %r" % body)
            continue
        t.eq(obj.get("seq"), i, "message %d is ess-publish's seq %d" % (i, i))
        t.eq(list(obj)[-2:], ["ess_offset", "ess_timestamp"], "enrichment members come last")
        t.eq(obj.get("ess_offset"), off, "ess_offset is the offset")
        t.eq(obj.get("ess_timestamp"), ts, "ess_timestamp is the timestamp")
        seen[off] = ts
    t.check(re.search(r"^messages=5 bytes=\d+ seconds=", out, re.M) is not None,
            "ess-listen summary line: %r" % lines[-1:])
    return seen


def check_cat(out, listened):
    rows = []
    for x in out.splitlines():
        try:
            rows.append(json.loads(x))
        except ValueError:
            t.check(False, "ess-cat --format json line is JSON: %r" % x)
    t.eq([r.get("offset") for r in rows], [0, 1, 2, 3, 4], "ess-cat offsets")
    for r in rows:
        body = json.loads(r.get("body", "null"))
        t.check(isinstance(body, dict) and body.get("seq") == r["offset"] and "ess_offset" not in body,
                "ess-cat shows the stored body, unenriched: %r" % r)
        if r["offset"] in listened:
            t.eq(r.get("timestamp"), listened[r["offset"]],
                 "ess-cat and ess-listen agree on offset %d's timestamp" % r["offset"])


if __name__ == "__main__":
    main()
