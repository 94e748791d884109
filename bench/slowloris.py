#!/usr/bin/env python3
"""Slow-header attack on the public port, measured (issue 12 case 1).

Starts an essd (build/essd, or ESSD=...) on free loopback ports, opens
--sockets connections to its public port that send a request head one byte
at a time (one byte per socket every --interval seconds, reconnecting when
essd drops them), and for --seconds probes the internal API
(/health/live and GET /event-stream/) every 0.1 s and opens a new
WebSocket every 2 s that must receive a published message. Prints the
probe latencies (max, p99, p50), the WebSocket results and how long essd
kept the slow sockets. Needs the shared RabbitMQ (stream port 5552).

    python3 bench/slowloris.py --sockets 1000 --seconds 30
"""
import argparse
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import esslib  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--interval", type=float, default=0.5)
    args = ap.parse_args()
    if os.environ.get("ESSD"):
        esslib.ESSD = os.environ["ESSD"]
    e = esslib.Essd()
    e.start()
    stream = esslib.unique("bench-slowloris")
    admin = esslib.StreamAdmin()
    admin.create(stream)
    _, path = esslib.create_es(e, stream)
    head = b"GET /event-stream/x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
    socks = [None] * args.sockets
    opened_at = [0.0] * args.sockets
    lifetimes = []
    stop = threading.Event()
    counts = {"connects": 0, "refused": 0}

    def connect(i):
        try:
            s = socket.create_connection(("127.0.0.1", e.public_port), timeout=2)
            s.setblocking(False)
            socks[i], opened_at[i] = s, time.time()
            counts["connects"] += 1
        except OSError:
            socks[i] = None
            counts["refused"] += 1

    for i in range(args.sockets):
        connect(i)
    pos = [0] * args.sockets

    def drip():
        while not stop.is_set():
            for i, s in enumerate(socks):
                if s is None:
                    connect(i)
                    pos[i] = 0
                    continue
                try:
                    if s.recv(1024) == b"":
                        raise ConnectionError
                except BlockingIOError:
                    pass
                except OSError:
                    lifetimes.append(time.time() - opened_at[i])
                    s.close()
                    socks[i] = None
                    continue
                try:
                    s.send(head[pos[i] % len(head):pos[i] % len(head) + 1])
                    pos[i] += 1
                except OSError:
                    pass
            stop.wait(args.interval)

    th = threading.Thread(target=drip, daemon=True)
    th.start()
    lat = {"/health/live": [], "/event-stream/": []}
    fails = []
    ws_ok = ws_fail = 0
    ws_lat = []
    t0 = time.time()
    next_ws = t0 + 1
    n = 0
    while time.time() - t0 < args.seconds:
        for p in lat:
            a = time.time()
            try:
                st = e.request("GET", p, timeout=5)[0]
            except OSError as ex:
                st = type(ex).__name__
            lat[p].append((time.time() - a) * 1000)
            if st != 200:
                fails.append((round(time.time() - t0, 1), p, st))
        if time.time() >= next_ws:
            next_ws += 2
            a = time.time()
            try:
                ws = esslib.ws_open(e, path, timeout=5)
                ok = False
                # The session subscribes at the live end after the 101: a
                # message published before that is not for it; publish
                # again until one arrives (up to 5 tries).
                for _ in range(5):
                    n += 1
                    admin.publish(stream, [b'{"n":%d}' % n], pub_id=1)
                    try:
                        f = ws.recv(timeout=1)
                    except OSError:
                        continue
                    ok = f[0] == 1 and b'"n":' in f[1]
                    break
                ws.close()
            except (OSError, ConnectionError):
                ok = False
            ws_ok += ok
            ws_fail += not ok
            ws_lat.append((time.time() - a) * 1000)
        time.sleep(0.1)
    stop.set()
    th.join(10)
    open_now = sum(1 for s in socks if s is not None)
    for s in socks:
        if s is not None:
            s.close()
    admin.delete(stream)
    admin.close()
    rc = e.stop()

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    print("slowloris: %d sockets, %.0f s, one byte per socket every %.1f s" % (args.sockets, args.seconds,
                                                                             args.interval))
    for p, xs in lat.items():
        print("  %-15s %4d probes, failed %d, ms: max %.1f p99 %.1f p50 %.1f" % (
            p, len(xs), sum(1 for f in fails if f[1] == p), max(xs), pct(xs, 0.99), pct(xs, 0.5)))
    print("  websocket: %d connected and streamed, %d failed, ms max %.1f p50 %.1f" % (
        ws_ok, ws_fail, max(ws_lat) if ws_lat else 0, pct(ws_lat, 0.5)))
    print("  slow sockets: %d connects, %d refused, %d dropped by essd after %.1f-%.1f s (median %.1f), "
          "%d open at the end" % (counts["connects"], counts["refused"], len(lifetimes),
                                  min(lifetimes) if lifetimes else 0, max(lifetimes) if lifetimes else 0,
                                  pct(lifetimes, 0.5) if lifetimes else 0, open_now))
    print("  essd exit status %s" % rc)
    if fails:
        print("  failures:", fails[:10])


if __name__ == "__main__":
    main()
