"""Integration test for ess-publish against the RabbitMQ on loopback.

Publishes 10,000 JSON messages with --declare to a fresh stream, then a few
text messages and a POISON, and checks the stream's message count as the
broker reports it; checks the exit status 2 for bad arguments, a refused
login and a refused connection. The stream is deleted at the end.
"""
import os
import subprocess
import sys
import time
import uuid

BUILD = os.environ.get("ESS_BUILD_DIR", "build")
SOURCE = os.environ.get("ESS_SOURCE_DIR", ".")
PUBLISH = os.path.join(BUILD, "ess-publish")
BROKER = os.path.join(SOURCE, "scripts", "broker")
URL = "amqp://guest:guest@127.0.0.1:5672/"

failures = []
passes = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    (passes if cond else failures).append(what)


def run(*args):
    return subprocess.run([PUBLISH, *args], capture_output=True, text=True, timeout=300)


def stream_messages(name):
    """The message count the broker lists for queue name, or None."""
    out = subprocess.run([BROKER, "ctl", "list_queues", "name", "messages"],
                         capture_output=True, text=True, timeout=120).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] == name:
            return int(parts[1])
    return None


def wait_count(name, want):
    # The stream's count is updated shortly after the confirms: poll a
    # bounded number of times, then report what was seen.
    seen = None
    for _ in range(20):
        seen = stream_messages(name)
        if seen == want:
            break
        time.sleep(1)
    return seen


def main():
    if not os.access(PUBLISH, os.X_OK):
        print("FAIL ess-publish not built at " + PUBLISH)
        return 1
    name = "essD-publish-" + uuid.uuid4().hex[:12]
    try:
        r = run("--url", URL, "--routing-key", name, "--declare", "--count", "10000",
                "--size", "200")
        check(r.returncode == 0, "publish 10000 with --declare exits 0 (%d: %s)"
              % (r.returncode, r.stderr.strip()))
        check("published 10000 messages" in r.stdout and "msgs/s" in r.stdout,
              "final line reports the count and rate: " + r.stdout.strip())
        check(r.stderr == "", "no progress output when stderr is not a terminal")
        seen = wait_count(name, 10000)
        check(seen == 10000, "stream %s holds 10000 messages (saw %s)" % (name, seen))

        r = run("--url", URL, "--routing-key", name, "--count", "5", "--format", "text",
                "--rate", "100", "--poison")
        check(r.returncode == 0, "text publish with --poison exits 0 (%s)" % r.stderr.strip())
        check("+ POISON" in r.stdout, "final line mentions the POISON message")
        seen = wait_count(name, 10006)
        check(seen == 10006, "5 text messages and POISON appended (saw %s)" % seen)

        r = run("--url", URL, "--routing-key", name, "--exchange", name + "-missing",
                "--count", "3")
        check(r.returncode == 1 and "NOT_FOUND" in r.stderr,
              "a missing exchange fails with status 1 and says so (%d: %s)"
              % (r.returncode, r.stderr.strip()))
    finally:
        subprocess.run([BROKER, "ctl", "delete_queue", name], capture_output=True, timeout=120)
    check(stream_messages(name) is None, "stream deleted")

    r = run("--count", "3")
    check(r.returncode == 2 and "--routing-key is required" in r.stderr,
          "missing --routing-key exits 2")
    r = run("--routing-key", "x", "--count", "-1")
    check(r.returncode == 2 and "--count" in r.stderr, "negative --count exits 2")
    r = run("--routing-key", "x", "--format", "xml")
    check(r.returncode == 2 and "--format" in r.stderr, "unknown --format exits 2")
    r = run("--routing-key", "x", "--bogus")
    check(r.returncode == 2, "unknown option exits 2")
    r = run("--url", "amqp://guest:wrong@127.0.0.1:5672/", "--routing-key", name)
    check(r.returncode == 2 and "ACCESS_REFUSED" in r.stderr,
          "refused login exits 2 and says why (%s)" % r.stderr.strip())
    r = run("--url", "amqp://guest:guest@127.0.0.1:1/", "--routing-key", name)
    check(r.returncode == 2 and "cannot connect to 127.0.0.1:1" in r.stderr,
          "refused connection exits 2 and names the address (%s)" % r.stderr.strip())
    r = run("--url", "http://x/", "--routing-key", name)
    check(r.returncode == 2 and "bad AMQP URL" in r.stderr, "bad URL exits 2")

    print("%d passed, %d failed" % (len(passes), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
