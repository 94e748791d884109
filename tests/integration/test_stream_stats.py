#!/usr/bin/env python3
"""StreamStats through `ess-cat --stats` (ess_stream_stats), against the
broker under test (esslib.py: ESS_TEST_AMQP_URL, ESS_TEST_STREAM_PORT,
ESS_TEST_BROKER_CTL).

The broker's version comes from rabbitmqctl, independently of the client.
RabbitMQ 3.10 closes the whole connection on a command it does not know, so
on a broker older than 3.11 the client must answer "unsupported" without
sending anything: ess-cat prints "unsupported by this broker (version X)",
exits 3, and a read that follows in the same process, on the same
connection, gets every message with no connection lost on the way. On 3.11
or later (scripts/test-matrix rabbitmq4: 4.0.5) the values are checked
against what was published: first_chunk_id is 0, committed_chunk_id is the
first offset of the last chunk (what `--from last` starts with), it moves
on after more is published, and a missing stream is "does not exist".
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import esslib  # noqa: E402

CAT = os.path.join(esslib.BUILD, "ess-cat")
ENV = dict(os.environ, **esslib.BROKER_ENV)
ENV.pop("ESS_CAT_DEBUG", None)
N = 5000  # ess-cat publishes 1,000 per frame: several chunks
M = 1500
TAG = "ess-stats-it-%d-%d" % (os.getpid(), int(time.time()))

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def cat(args, stdin=None, timeout=120):
    p = subprocess.run([CAT] + args, input=stdin, capture_output=True, env=ENV, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def publish(stream, first, n, create):
    lines = "".join('{"i":%d}\n' % i for i in range(first, first + n)).encode()
    rc, _, err = cat(["--publish", stream] + (["--create"] if create else []), stdin=lines)
    check(rc == 0, "published %d messages to %s (%s)" % (n, stream, err.strip()))


def broker_version():
    p = subprocess.run(esslib.BROKER_CTL + ["-q", "version"], capture_output=True, timeout=60)
    v = p.stdout.decode().strip().splitlines()
    if p.returncode != 0 or not v:
        raise RuntimeError("rabbitmqctl version failed: %s" % p.stderr.decode(errors="replace"))
    return v[-1].strip()


def version_tuple(v):
    parts = []
    for x in v.split(".")[:2]:
        digits = "".join(ch for ch in x if ch.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def no_connection_trouble(err, what):
    check("closed the connection" not in err and "lost" not in err,
          "%s: the connection stayed up (stderr: %r)" % (what, err.strip()[-300:]))


def offsets_of(out_lines):
    return [json.loads(line)["offset"] for line in out_lines if line.startswith("{\"offset\"")]


def test_unsupported(version, stream):
    # The stats request and then a read, in one ess-cat process.
    rc, out, err = cat(["--stats", stream, "--from", "first", "--count", str(N), "--format",
                        "json"])
    lines = out.splitlines()
    check(lines[:1] == ["unsupported by this broker (version %s)" % version],
          "--stats on %s answers unsupported (got %r)" % (version, lines[:1]))
    check(rc == 3, "exit status 3 for unsupported (got %d)" % rc)
    offs = offsets_of(lines[1:])
    check(offs == list(range(N)),
          "the read afterwards on the same connection got offsets 0..%d (got %d messages)"
          % (N - 1, len(offs)))
    no_connection_trouble(err, "--stats then read")
    # A missing stream: still nothing asked, still unsupported.
    rc, out, err = cat(["--stats", stream + "-missing"])
    check(rc == 3 and out.strip().startswith("unsupported by this broker"),
          "--stats on a missing stream is unsupported too (rc %d, %r)" % (rc, out.strip()))


def stats_of(stream):
    rc, out, err = cat(["--stats", stream])
    check(rc == 0, "--stats %s exits 0 (rc %d, %s)" % (stream, rc, err.strip()))
    try:
        return json.loads(out.splitlines()[0])
    except (ValueError, IndexError):
        check(False, "--stats printed one JSON line (got %r)" % out)
        return None


def test_supported(version, stream):
    rc, out, err = cat(["--stats", stream, "--from", "first", "--count", str(N), "--format",
                        "json"])
    lines = out.splitlines()
    try:
        st = json.loads(lines[0])
    except (ValueError, IndexError):
        st = None
    check(st is not None, "--stats printed the JSON of the values first (got %r)" % lines[:1])
    check(rc == 0, "exit status 0 (got %d: %s)" % (rc, err.strip()))
    check(offsets_of(lines[1:]) == list(range(N)),
          "the read afterwards on the same connection got offsets 0..%d" % (N - 1))
    no_connection_trouble(err, "--stats then read")
    if st is None:
        return
    print("     stats: %s" % json.dumps(st), flush=True)
    check(st["stream"] == stream and st["broker_version"] == version,
          "stream %s and broker_version %s in the JSON" % (stream, version))
    check(st["first_chunk_id"] == 0, "first_chunk_id is 0 (got %d)" % st["first_chunk_id"])
    committed = st["committed_chunk_id"]
    check(0 < committed <= N - 1, "0 < committed_chunk_id %d <= last offset %d" % (committed, N - 1))
    check(st["last_chunk_id"] >= committed,
          "last_chunk_id %d >= committed_chunk_id" % st["last_chunk_id"])
    # The committed tail is the first offset of the last chunk: a read from
    # "last" (the last chunk, whole) starts exactly there, and from there on
    # the stream holds every offset up to the last one published.
    rc, out, _ = cat([stream, "--from", "last", "--count", "1", "--format", "json"])
    offs = offsets_of(out.splitlines())
    check(offs == [committed], "--from last starts at committed_chunk_id %d (got %r)"
          % (committed, offs))
    rc, out, _ = cat([stream, "--from", str(committed), "--count", str(N - committed),
                      "--format", "json"])
    check(offsets_of(out.splitlines()) == list(range(committed, N)),
          "offsets %d..%d follow the committed chunk id" % (committed, N - 1))
    # More published: the committed tail moves on, still within what exists.
    publish(stream, N, M, create=False)
    st2 = stats_of(stream)
    if st2 is not None:
        print("     stats after %d more: %s" % (M, json.dumps(st2)), flush=True)
        check(committed < st2["committed_chunk_id"] <= N + M - 1,
              "committed_chunk_id moved from %d to %d (<= %d)"
              % (committed, st2["committed_chunk_id"], N + M - 1))
        rc, out, _ = cat([stream, "--from", "last", "--count", "1", "--format", "json"])
        check(offsets_of(out.splitlines()) == [st2["committed_chunk_id"]],
              "--from last starts at the new committed_chunk_id")
    # A missing stream is the broker's "does not exist", and the usual exit 2.
    rc, out, err = cat(["--stats", stream + "-missing"])
    check(rc == 2 and "does not exist" in err,
          "--stats on a missing stream: exit 2, does not exist (rc %d, %r)" % (rc, err.strip()))


def main():
    version = broker_version()
    supported = version_tuple(version) >= (3, 11)
    print("broker %s on stream port %d: StreamStats %s" % (
        version, esslib.STREAM_PORT, "expected" if supported else "unsupported"), flush=True)
    rc, _, err = cat(["--stats", "--publish", TAG])
    check(rc == 2, "--stats with --publish is a bad argument (rc %d)" % rc)
    stream = TAG + "-a"
    publish(stream, 0, N, create=True)
    try:
        if supported:
            test_supported(version, stream)
        else:
            test_unsupported(version, stream)
    finally:
        cat(["--delete", stream])
    if failures:
        print("%d FAILED" % len(failures))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
