#!/bin/sh
# Replay benchmark of the delivery path (issue 6): one stream of N ~250-byte
# JSON messages, read from ordinal 0 once by ess-cat (the broker-read
# ceiling) and once through essd + WebSocket by ess-listen, in the same run.
#
#   bench/replay.sh [N] [BUILD_DIR]        (defaults: 1000000 build-A)
#   ESS_REPLAY_PROFILE=perf      also `perf record -g` essd during the read
#   ESS_REPLAY_PROFILE=callgrind run essd under callgrind (use N=100000)
#
# Prints msgs/s for both readers, their ratio, and essd's CPU seconds for
# the WebSocket read (from /proc, the least noisy figure on a shared box).
# Needs the broker of scripts/broker on 127.0.0.1; cleans up its stream.
set -eu

N=${1:-1000000}
B=${2:-build-A}
PROFILE=${ESS_REPLAY_PROFILE:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
cd "$SRC"
WORK=$(mktemp -d /tmp/ess-replay.XXXXXX)
STREAM=essA-replay-$$
ESSD_PID=

cleanup() {
    if [ -n "$ESSD_PID" ]; then
        kill "$ESSD_PID" 2>/dev/null || true
        wait "$ESSD_PID" 2>/dev/null || true
    fi
    "$B/ess-cat" --delete "$STREAM" >/dev/null 2>&1 || true
    [ -n "${ESS_REPLAY_KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
cpu_s() { awk '{ printf "%.2f %.2f", $14 / 100, $15 / 100 }' "/proc/$1/stat"; }

DATA=/tmp/ess-replay-v2-$N.txt
if [ ! -s "$DATA" ]; then
    python3 -c "
import sys
pad = 'x' * 219
w = sys.stdout.write
for i in range($N):
    w('{\"event\":\"bench\",\"seq\":%d,\"pad\":\"%s\"}\n' % (i, pad))" >"$DATA"
fi

t0=$(now)
"$B/ess-cat" --publish --create "$STREAM" <"$DATA" >/dev/null
t1=$(now)
echo "publish: $N messages, $(rate "$N" "$t0" "$t1") msgs/s"

t0=$(now)
"$B/ess-cat" "$STREAM" --from first --count "$N" --quiet >/dev/null
t1=$(now)
CAT_RATE=$(rate "$N" "$t0" "$t1")
echo "ess-cat read: $CAT_RATE msgs/s"

PUB=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
INT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export ESS_PUBLIC_LISTEN=127.0.0.1:$PUB ESS_INTERNAL_LISTEN=127.0.0.1:$INT
export ESS_DATABASE_PATH=$WORK/ess.db ESS_LUA_PATH=$SRC/lua
export ESS_AMQP_URL=${ESS_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
case "$PROFILE" in
callgrind)
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$B/essd" \
        >"$WORK/essd.out" 2>&1 &
    ;;
*) "$B/essd" >"$WORK/essd.out" 2>&1 & ;;
esac
ESSD_PID=$!
i=0
until curl -sf "http://127.0.0.1:$INT/health/ready" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then
        echo "essd not ready" >&2
        cat "$WORK/essd.out" >&2
        exit 1
    fi
    sleep 0.1
done
LOC=$(curl -sf -X POST -H 'Content-Type: application/json' \
    -d "{\"routing_key\":\"$STREAM\"}" "http://127.0.0.1:$INT/event-stream/" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["location"].rsplit("/",1)[1])')

PERF_PID=
if [ "$PROFILE" = perf ]; then
    perf record -g -o "$WORK/perf.data" -p "$ESSD_PID" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.5
fi
set -- $(cpu_s "$ESSD_PID")
u0=$1 s0=$2
t0=$(now)
/usr/bin/time -f "ess-listen CPU: %U s user, %S s sys" \
    "$B/ess-listen" "ws://127.0.0.1:$PUB/event-stream/$LOC" -o 0 --count "$N" >"$WORK/listen.out"
t1=$(now)
set -- $(cpu_s "$ESSD_PID")
u1=$1 s1=$2
WS_RATE=$(rate "$N" "$t0" "$t1")
GOT=$(grep -c '^offset=' "$WORK/listen.out" || true)
LAST=$(grep '^offset=' "$WORK/listen.out" | tail -n 1 | cut -d' ' -f1)
echo "essd + ess-listen read: $WS_RATE msgs/s ($GOT frames, last $LAST)"
awk -v a="$WS_RATE" -v b="$CAT_RATE" 'BEGIN { printf "ratio to ess-cat: %.2f\n", a / b }'
awk -v u0="$u0" -v u1="$u1" -v s0="$s0" -v s1="$s1" -v n="$N" \
    'BEGIN { printf "essd CPU: %.2f s user, %.2f s sys (%.2f us/msg)\n", u1 - u0, s1 - s0,
             (u1 - u0 + s1 - s0) * 1e6 / n }'
if [ "$GOT" != "$N" ]; then
    echo "FAIL: expected $N frames" >&2
    exit 1
fi
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
    perf report -i "$WORK/perf.data" --no-children --stdio 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | head -n 25
fi
if [ "$PROFILE" = callgrind ]; then
    kill "$ESSD_PID"
    wait "$ESSD_PID" 2>/dev/null || true
    ESSD_PID=
    callgrind_annotate "$WORK/callgrind.out" 2>/dev/null | head -n 40
fi
