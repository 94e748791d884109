"""A/B of essd's CPU per message on the S1 replay (issue 15: "no regression").

Two builds' essd run side by side on one stream of N JSON bodies of ~250
bytes; the load client replays it from offset 0 through each in turn,
ROUNDS times, alternating, and essd's user+system CPU per message is
recorded (steadier than the rate on a shared, loaded machine; the rate is
kept too). Usage, after bench/run has built both (or ESS_BENCH_NO_BUILD):

    python3 bench/ab_cpu.py --a /tmp/base/build-bench --b build-bench \\
        --loadclient build-bench/bench/loadclient [--messages 200000] [--rounds 3]

Prints one JSON object (and writes it to --out when given).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenarios  # noqa: E402
from scenarios import esslib  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="build dir of A (its essd)")
    ap.add_argument("--b", required=True, help="build dir of B")
    ap.add_argument("--loadclient", required=True)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    scenarios.LC = a.loadclient
    scenarios.CAT = os.path.join(a.b, "ess-cat")
    scenarios.PREFIX = "bench-ab-%d" % os.getpid()
    stream = scenarios.new_stream("s1-json")
    scenarios.load_stream(stream, scenarios.json_lines(a.messages, 250))
    procs, paths = {}, {}
    res = {"messages": a.messages, "rounds": a.rounds, "a": a.a, "b": a.b, "runs": {"a": [], "b": []},
           "load_start": scenarios.uptime()}
    try:
        for k, build in (("a", a.a), ("b", a.b)):
            esslib.ESSD = os.path.abspath(os.path.join(build, "essd"))
            procs[k] = esslib.Essd().start()
            paths[k] = esslib.create_es(procs[k], stream)[1]
        for r in range(a.rounds):
            for k in ("a", "b") if r % 2 == 0 else ("b", "a"):
                e = procs[k]
                c0 = scenarios.cpu_s(e.proc.pid)
                x = scenarios.lc("ess", "--port", e.public_port, "--path", paths[k] + "?stream_from_ordinal=0",
                                 "--count", a.messages, "--timeout", 300)
                c1 = scenarios.cpu_s(e.proc.pid)
                run = {"cpu_us_per_msg": round(1e6 * (c1 - c0) / a.messages, 3), "msgs_per_s": x["msgs_per_s"],
                       "frames": x["frames"]}
                res["runs"][k].append(run)
                print("round %d %s: %s" % (r, k, run), file=sys.stderr, flush=True)
                time.sleep(1)
    finally:
        for e in procs.values():
            e.stop()
        scenarios.delete_quiet(stream)
    for k in ("a", "b"):
        v = [x["cpu_us_per_msg"] for x in res["runs"][k]]
        res[k + "_cpu_us_per_msg_median"] = statistics.median(v)
        res[k + "_msgs_per_s_median"] = statistics.median(x["msgs_per_s"] for x in res["runs"][k])
    res["load_end"] = scenarios.uptime()
    res["command"] = " ".join(sys.argv)
    print(json.dumps(res))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
