#!/usr/bin/env bash
# Profiles one server under the steady 2 msg/s load of bench/run.sh, for the figures of
# docs/BENCHMARKS.md that explain what a delivery costs: the server pinned to core 0, the
# load generator to core 1, CLIENTS WebSocket subscribers (or polling clients), a steady
# phase of DURATION, and over WINDOW of it, once all clients are connected and SETTLE has
# passed: `perf stat` (CPU time, context switches, system calls), `perf record -g` if
# RECORD=1, and for Ferry a CPU profile from its --debug-addr.
#
#   bench/profile.sh ferry OUTDIR          # Ferry over WebSocket
#   bench/profile.sh gorilla OUTDIR        # the floor, the same way
#   TRANSPORT=longpoll CLIENTS=5000 bench/profile.sh ferry OUTDIR
#   FERRY_ARGS="--heartbeat 10m --session-ttl 30m" bench/profile.sh ferry OUTDIR
#   IDLE=1 bench/profile.sh ferry OUTDIR   # memory through the settle instead (see below)
#
# With IDLE=1 nothing is profiled: the clients connect and sit idle for SETTLE_IDLE (35 s,
# as in bench/run.sh, unless set), then a 3 s steady phase, and OUTDIR/trace.txt gets the
# server's VmRSS in KiB (and, for Ferry, its goroutines) every half second from the start:
# for the spread of the "idle KiB per connection" figure, which bench/run.sh reads once,
# as the settle ends (kib_per_conn in result.jsonl).
#
# Writes OUTDIR/{stat.txt,bench.log,result.jsonl,cpu.pprof,perf.data}; read the profile
# with `go tool pprof -top OUTDIR/ferry OUTDIR/cpu.pprof` or `perf report -i
# OUTDIR/perf.data`. Needs Go, taskset and perf; stops what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

peer=${1:?usage: bench/profile.sh ferry|gorilla OUTDIR}
out=${2:?usage: bench/profile.sh ferry|gorilla OUTDIR}
TRANSPORT=${TRANSPORT:-websocket}
CLIENTS=${CLIENTS:-10000}
RATE=${RATE:-2}
DURATION=${DURATION:-70s}
SETTLE=${SETTLE:-20s}
if [ "${IDLE:-}" = 1 ]; then
  DURATION=3s SETTLE=${SETTLE_IDLE:-35s}
fi
WINDOW=${WINDOW:-30}
PORT=${PORT:-18990}
DEBUG_PORT=${DEBUG_PORT:-18991}
for tool in go taskset perf; do
  command -v "$tool" >/dev/null || { echo "bench/profile.sh: $tool is needed" >&2; exit 1; }
done
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

go build -o "$out/ferry-bench" ./cmd/ferry-bench
case $peer in
ferry)
  go build -o "$out/ferry" ./cmd/ferry
  # shellcheck disable=SC2086 # FERRY_ARGS is a list of flags
  taskset -c 0 "$out/ferry" --addr "127.0.0.1:$PORT" --api-key bench --demo=false --log-level warn \
    --negotiate-rate 1000000 --data-dir none --max-conns-per-ip 1000000 \
    --debug-addr "127.0.0.1:$DEBUG_PORT" ${FERRY_ARGS:-} >"$out/server.log" 2>&1 &
  ;;
gorilla)
  go build -o "$out/gorilla-floor" ./bench/gorilla-floor
  taskset -c 0 "$out/gorilla-floor" --addr "127.0.0.1:$PORT" >"$out/server.log" 2>&1 &
  ;;
*) echo "bench/profile.sh: unknown peer $peer (ferry or gorilla)" >&2; exit 1 ;;
esac
server=$!
bench= tracer=
trap 'kill $server $bench $tracer 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done

if [ "${IDLE:-}" = 1 ]; then
  (
    while kill -0 "$server" 2>/dev/null; do
      rss=$(awk '/^VmRSS:/{print $2}' "/proc/$server/status" 2>/dev/null || true)
      gs=
      [ "$peer" = ferry ] && gs=$(curl -s --max-time 1 "http://127.0.0.1:$DEBUG_PORT/debug/pprof/goroutine?debug=1" | head -1 | awk '{print $NF}' || true)
      echo "$(date +%s.%N | cut -c1-14) ${rss:-?} ${gs:-}"
      sleep 0.5
    done
  ) >"$out/trace.txt" &
  tracer=$!
fi
taskset -c 1 "$out/ferry-bench" --target "$peer" --transport "$TRANSPORT" --url "http://127.0.0.1:$PORT" \
  --api-key bench --clients "$CLIENTS" --server-pid "$server" --max-time 5m --label "$peer" \
  --scenario profile --json "$out/result.jsonl" --quiet --rate "$RATE" --duration "$DURATION" \
  --burst 0 --settle "$SETTLE" >"$out/bench.log" 2>&1 &
bench=$!
if [ "${IDLE:-}" = 1 ]; then
  wait "$bench" || true
  bench=
  grep -o '"kib_per_conn":[0-9.]*' "$out/result.jsonl"
  exit 0
fi
# The window starts once every client is connected and the settle is over.
for _ in $(seq 1 300); do
  [ "$(ss -Htn state established "sport = :$PORT" 2>/dev/null | wc -l)" -ge "$CLIENTS" ] && break
  kill -0 "$bench" 2>/dev/null || break
  sleep 1
done
sleep "${SETTLE%s}"
sleep 3
if [ "$peer" = ferry ]; then
  curl -s -o "$out/cpu.pprof" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/profile?seconds=$WINDOW" &
fi
if [ "${RECORD:-}" = 1 ]; then
  perf record -F 999 -g -o "$out/perf.data" -p "$server" -- sleep "$WINDOW" 2>/dev/null
else
  perf stat -e task-clock,context-switches,raw_syscalls:sys_enter -p "$server" -- sleep "$WINDOW" 2>"$out/stat.txt"
fi
wait "$bench" || true
bench=
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
wait
[ -f "$out/stat.txt" ] && grep -E "task-clock|context-switches|sys_enter" "$out/stat.txt"
tail -3 "$out/bench.log"
