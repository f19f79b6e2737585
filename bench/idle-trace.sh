#!/usr/bin/env bash
# Traces a Ferry node's resident memory while CLIENTS WebSocket subscribers connect and sit
# idle for SETTLE, pinned as bench/run.sh pins (server on core 0, generator on core 1): for
# the spread of the "idle KiB per connection" figure of docs/BENCHMARKS.md, which
# bench/run.sh reads once, at the end of the settle.
#
#   bench/idle-trace.sh OUTDIR               # 10,000 clients, 35 s settle, as bench/run.sh
#   CLIENTS=5000 TRANSPORT=longpoll bench/idle-trace.sh OUTDIR
#
# Writes OUTDIR/trace.txt (Unix time, VmRSS in KiB, the server's goroutines, every
# EVERY seconds) and OUTDIR/result.jsonl (the generator's figures, kib_per_conn among
# them). Needs Go, taskset and curl; stops what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: bench/idle-trace.sh OUTDIR}
TRANSPORT=${TRANSPORT:-websocket}
CLIENTS=${CLIENTS:-10000}
SETTLE=${SETTLE:-35s}
EVERY=${EVERY:-0.5}
PORT=${PORT:-18990}
DEBUG_PORT=${DEBUG_PORT:-18991}
for tool in go taskset curl; do
  command -v "$tool" >/dev/null || { echo "bench/idle-trace.sh: $tool is needed" >&2; exit 1; }
done
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

go build -o "$out/ferry-bench" ./cmd/ferry-bench
go build -o "$out/ferry" ./cmd/ferry
taskset -c 0 "$out/ferry" --addr "127.0.0.1:$PORT" --api-key bench --demo=false --log-level warn \
  --negotiate-rate 1000000 --data-dir none --max-conns-per-ip 1000000 \
  --debug-addr "127.0.0.1:$DEBUG_PORT" >"$out/server.log" 2>&1 &
server=$!
tracer=
trap 'kill $server $tracer 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done

(
  while kill -0 "$server" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/{print $2}' "/proc/$server/status" 2>/dev/null || true)
    gs=$(curl -s --max-time 1 "http://127.0.0.1:$DEBUG_PORT/debug/pprof/goroutine?debug=1" | head -1 | awk '{print $NF}')
    echo "$(date +%s.%N | cut -c1-14) ${rss:-?} ${gs:-?}"
    sleep "$EVERY"
  done
) >"$out/trace.txt" &
tracer=$!

taskset -c 1 "$out/ferry-bench" --target ferry --transport "$TRANSPORT" --url "http://127.0.0.1:$PORT" \
  --api-key bench --clients "$CLIENTS" --rate 2 --duration 3s --burst 0 --settle "$SETTLE" \
  --server-pid "$server" --label "ferry/$TRANSPORT" --scenario idle --json "$out/result.jsonl" --quiet
grep -o '"kib_per_conn":[0-9.]*' "$out/result.jsonl"
