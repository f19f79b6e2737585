#!/usr/bin/env bash
# Runs the comparison of docs/BENCHMARKS.md on this machine: builds Ferry, the load
# generator and the gorilla floor, installs the pinned Socket.IO peer, then runs the same
# load against each server, one at a time, with the server pinned to core 0 and the
# generator to core 1. Every server is started fresh for every run (so that its memory per
# connection is measured from a clean start) and stopped by its PID afterwards.
#
# Writes docs/benchmarks/results.jsonl (one line per run), results.md (the table, with the
# machine above it) and p99.svg (the chart).
#
# Settings (environment):
#   PEERS         which servers, default "ferry-ws ferry-sse ferry-longpoll ferry-events
#                 socketio-ws socketio-polling gorilla-ws"; empty: none (only SCALE_EVENTS).
#                 ferry-events reads GET /ferry/events as a plain EventSource does (no
#                 session), the dashboards' path, to be read beside ferry-sse
#   WS_CLIENTS    subscribers on WebSocket, default 10000
#   HTTP_CLIENTS  subscribers on SSE, /events and the polling transports, default 5000
#   SCALE         smaller subscriber counts for the chart, default "1000 2500 5000"
#   DURATION      length of each steady phase, default 20s
#   BURST         messages of the burst phase, default 200
#   SETTLE        rest before the idle memory is measured (rate2 runs), default 35s
#   QUICK=1       a short smoke run (300 and 200 clients, 5 s phases) to check the set-up;
#                 for the broker peers also CHANNELS "1 20", BURST_CHANNELS 5 and
#                 PUBLISH_TEST 2s unless they are set
#   OUT           output folder, default docs/benchmarks
#   BASELINE      a git revision (e.g. a commit before a change): builds Ferry from it too,
#                 so the peers base-ws, base-sse, base-longpoll and base-events run it in
#                 the same run, under the same generator (the one of this tree)
#   SCALE_EVENTS  the dashboard-scale scenario, after the peers: this many /events readers
#                 ("max": as many as the open-file limit allows, which is its hard limit
#                 less 100) on one node, published at SCALE_RATE (default 1) msg/s for
#                 SCALE_DURATION (default 60s), the server's memory sampled every second
#                 from the end of the connect phase to the end; default none
#   SCALE_PEERS   the peers of the scale scenario, default "ferry-events"; "ferry-sse
#                 ferry-events" sets /sse's figures beside them (base-events with BASELINE)
#
# The broker peers (issue #16: Ferry on Redis), not in the default PEERS, all on WebSocket,
# WS_CLIENTS subscribers spread over the nodes and the channels, one run per CHANNELS:
#   ferry-mem     one node, the in-memory broker: the reference
#   ferry-redis   two nodes sharing one redis-server (started here, --save '', on a free
#                 loopback port)
#   ferry-redis1  one node on its own redis-server: issue #15's "Redis, one node" against
#                 ferry-mem, the same node with only the broker changed
#   base-redis1   the same, with Ferry built from BASELINE
#   ferry-cluster two nodes on a Redis Cluster of 3 masters and 3 replicas
#                 (scripts/redis-cluster.sh, on free loopback ports)
# Ferry's nodes and Redis all run on core 0, the generator on core 1; the CPU reported
# is summed over them and given per process (ferry, redis-server).
#   CHANNELS        channel counts of the broker peers, one run each, default "1 1000"
#   BROKER_RATE     messages per second per channel of their steady phase (DURATION
#                   long) on one channel, default 10: every subscriber gets 10 msg/s
#   BROKER_RATE_MANY the same with more than one channel, default 1: 1,000 channels take
#                   1,000 publishes a second, as many as one generator core can send
#                   (at 10 per channel it skipped two thirds of them)
#   BURST_CHANNELS  messages per channel of their burst with more than one channel,
#                   default 20 (one channel: BURST)
#   PUBLISH_TEST    their publish-rate test, with several channels: POST /api/publish as fast as
#                   PUBLISH_CONCURRENCY (default 16) requests in flight allow, default 10s
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=${PEERS-"ferry-ws ferry-sse ferry-longpoll ferry-events socketio-ws socketio-polling gorilla-ws"}
WS_CLIENTS=${WS_CLIENTS:-10000}
HTTP_CLIENTS=${HTTP_CLIENTS:-5000}
SCALE=${SCALE:-"1000 2500 5000"}
DURATION=${DURATION:-20s}
BURST=${BURST:-200}
SETTLE=${SETTLE:-35s}
SCALE_EVENTS=${SCALE_EVENTS:-}
SCALE_RATE=${SCALE_RATE:-1}
SCALE_DURATION=${SCALE_DURATION:-60s}
SCALE_PEERS=${SCALE_PEERS:-ferry-events}
OUT=${OUT:-docs/benchmarks}
BROKER_RATE=${BROKER_RATE:-10}
BROKER_RATE_MANY=${BROKER_RATE_MANY:-1}
PUBLISH_CONCURRENCY=${PUBLISH_CONCURRENCY:-16}
if [ "${QUICK:-}" = 1 ]; then
  WS_CLIENTS=300 HTTP_CLIENTS=200 SCALE=100 DURATION=5s BURST=50 SETTLE=3s
  # The broker peers' own sizes shrink too, unless set.
  CHANNELS=${CHANNELS:-"1 20"} BURST_CHANNELS=${BURST_CHANNELS:-5} PUBLISH_TEST=${PUBLISH_TEST:-2s}
fi
CHANNELS=${CHANNELS:-"1 1000"}
BURST_CHANNELS=${BURST_CHANNELS:-20}
PUBLISH_TEST=${PUBLISH_TEST:-10s}
PORT=18700
URL=http://127.0.0.1:$PORT
KEY=bench

log() { printf '\n==> %s\n' "$*" >&2; }

for tool in go node npm taskset; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is needed" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "bench/run.sh: needs two cores (server on core 0, generator on core 1)" >&2
  exit 1
fi
# Every client holds a descriptor, the server one per client too.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -n "$PEERS" ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((WS_CLIENTS + 1000)) ]; then
  echo "bench/run.sh: the open-file limit $(ulimit -n) is too low for $WS_CLIENTS clients" >&2
  exit 1
fi
if [ -n "$SCALE_EVENTS" ]; then
  # The server holds a descriptor per reader, and so does the generator, each under its
  # own limit: readers beyond the limit less 100 would fail for want of descriptors.
  most=1000000
  [ "$(ulimit -n)" != unlimited ] && most=$(($(ulimit -n) - 100))
  if [ "$SCALE_EVENTS" = max ] || [ "$SCALE_EVENTS" -gt "$most" ]; then
    [ "$SCALE_EVENTS" = max ] || echo "bench/run.sh: SCALE_EVENTS=$SCALE_EVENTS is over the open-file limit $(ulimit -n) less 100: $most readers" >&2
    SCALE_EVENTS=$most
  fi
fi

# The base-* peers run Ferry built from BASELINE: refused at the start, not midway.
case " $PEERS " in *" base-"*)
  [ -n "${BASELINE:-}" ] || { echo "bench/run.sh: the base-* peers need BASELINE=<revision>" >&2; exit 1; } ;;
esac
case " $PEERS " in *" ferry-redis "* | *" ferry-redis1 "* | *" base-redis1 "* | *" ferry-cluster "*) need_redis=1 ;; *) need_redis= ;; esac
if [ -n "$need_redis" ]; then
  for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is needed for the Redis peers" >&2; exit 1; }
  done
fi

BIN=$(mktemp -d)
SERVER_PID=
NODE_PIDS=()  # the second and further Ferry nodes of a broker peer
REDIS_PIDS=() # the redis-server processes of a broker peer
cleanup() {
  stop_brokers
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$BIN"
}
# stop_brokers stops the extra nodes and Redis of a broker peer, by PID.
stop_brokers() {
  local pid
  for pid in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do
    # The cluster's servers are not this shell's children: wait for them by polling.
    wait "$pid" 2>/dev/null || while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  NODE_PIDS=() REDIS_PIDS=()
}
trap cleanup EXIT

log "building ferry, ferry-bench, gorilla-floor, chart"
go build -o "$BIN/ferry" ./cmd/ferry
go build -o "$BIN/ferry-bench" ./cmd/ferry-bench
go build -o "$BIN/gorilla-floor" ./bench/gorilla-floor
go build -o "$BIN/chart" ./bench/chart
if [ -n "${BASELINE:-}" ]; then
  BASE_REV=$(git rev-parse --short "$BASELINE")
  log "building ferry at $BASE_REV (BASELINE)"
  git worktree add -q --detach "$BIN/base-src" "$BASE_REV"
  (cd "$BIN/base-src" && go build -o "$BIN/ferry-base" ./cmd/ferry)
  git worktree remove --force "$BIN/base-src"
fi

case " $PEERS " in *" socketio-"*) need_sio=1 ;; *) need_sio= ;; esac
if [ -n "$need_sio" ] && { [ ! -d bench/socketio/node_modules ] || [ bench/socketio/package-lock.json -nt bench/socketio/node_modules/.package-lock.json ]; }; then
  log "installing the Socket.IO peer (npm ci)"
  (cd bench/socketio && npm ci --no-audit --no-fund --loglevel=error)
fi

# Ferry limits connections and new sessions per client address; from one machine every
# client comes from 127.0.0.x, so a benchmark lifts those limits (when the binary has them).
FERRY_FLAGS=(--addr "127.0.0.1:$PORT" --api-key "$KEY" --demo=false --log-level warn)
help=$("$BIN/ferry" --help 2>&1 || true)
grep -q -- '--negotiate-rate' <<<"$help" && FERRY_FLAGS+=(--negotiate-rate 1000000)
# Each run starts from nothing: no state kept in (or read from) a data directory.
grep -q -- '--data-dir' <<<"$help" && FERRY_FLAGS+=(--data-dir none)
grep -q -- '--max-conns-per-ip' <<<"$help" && FERRY_FLAGS+=(--max-conns-per-ip 1000000)

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
[ -f "$RESULTS" ] && mv "$RESULTS" "$RESULTS.prev"
: >"$RESULTS"

{
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/{print $2}') GiB;" \
    "Linux $(uname -r); $(go version | awk '{print $3}'); Node $(node --version);${need_sio:+ socket.io $(node -p "require('./bench/socketio/node_modules/socket.io/package.json').version");}" \
    "gorilla/websocket $(go list -m -f '{{.Version}}' github.com/gorilla/websocket)."
  echo "Server pinned to core 0, load generator to core 1 (taskset). Run $(date -u +%Y-%m-%dT%H:%MZ)."
} >"$OUT/machine.md"
cat "$OUT/machine.md" >&2

# port_free PORT: whether nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_ports N: the first port from 18800 up with N free ports above it, and their cluster
# bus ports (+10000) free too: for Redis and the broker peers' Ferry nodes.
free_ports() {
  local p=18800 i ok
  while [ "$p" -lt 19800 ]; do
    ok=1
    for ((i = 0; i < $1; i++)); do
      port_free $((p + i)) && port_free $((p + i + 10000)) || { ok=; break; }
    done
    [ -n "$ok" ] && { echo "$p"; return 0; }
    p=$((p + $1))
  done
  echo "bench/run.sh: no free loopback ports for Redis" >&2
  exit 1
}

# wait_port PORT PID NAME LOG: waits for PID to listen on PORT (with ss, PID itself: on a
# shared machine another program may hold the port, and PID then fails to bind).
wait_port() {
  for _ in $(seq 1 100); do
    if command -v ss >/dev/null; then
      ss -Hltnp "sport = :$1" 2>/dev/null | grep -q "pid=$2," && return 0
    elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench/run.sh: $3 did not start:" >&2
  cat "$4" >&2
  exit 1
}

# start_brokers PEER: starts Redis (ferry-redis, ferry-cluster) and the Ferry nodes of a
# broker peer on core 0; the first node is SERVER_PID, URLS and PIDS name them all.
start_brokers() {
  local redis_url= nodes=1 p
  case $1 in
  ferry-redis | ferry-redis1 | base-redis1)
    p=$(free_ports 1)
    taskset -c 0 redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$BIN" >"$BIN/redis.log" 2>&1 &
    REDIS_PIDS+=("$!")
    wait_port "$p" "${REDIS_PIDS[0]}" redis-server "$BIN/redis.log"
    redis_url=redis://127.0.0.1:$p/0 nodes=2
    [ "$1" = ferry-redis ] || nodes=1
    ;;
  ferry-cluster)
    p=$(free_ports 6)
    rm -rf "$BIN/cluster"
    local addrs
    # The script starts 3 masters and 3 replicas and returns once every slot is served;
    # its servers keep its core.
    addrs=$(taskset -c 0 scripts/redis-cluster.sh "$BIN/cluster" "$p") || {
      mapfile -t REDIS_PIDS <"$BIN/cluster/pids" 2>/dev/null || true
      echo "bench/run.sh: the Redis Cluster did not start" >&2
      exit 1
    }
    mapfile -t REDIS_PIDS <"$BIN/cluster/pids"
    redis_url=redis+cluster://$addrs nodes=2
    ;;
  esac
  local i port pid flags first bin=$BIN/ferry
  if [ "$1" = base-redis1 ]; then
    bin=$BIN/ferry-base
  fi
  URLS= PIDS=
  first=$(free_ports "$nodes")
  for ((i = 0; i < nodes; i++)); do
    port=$((first + i))
    flags=("${FERRY_FLAGS[@]}")
    flags[1]=127.0.0.1:$port # the value of --addr
    [ -n "$redis_url" ] && flags+=(--redis "$redis_url" --secret "$SECRET" --node-id "node$i")
    taskset -c 0 "$bin" "${flags[@]}" >"$BIN/server$i.log" 2>&1 &
    pid=$!
    if [ "$i" = 0 ]; then SERVER_PID=$pid; else NODE_PIDS+=("$pid"); fi
    wait_port "$port" "$pid" "ferry node $i" "$BIN/server$i.log"
    URLS+=${URLS:+,}http://127.0.0.1:$port PIDS+=${PIDS:+,}$pid
  done
  for p in "${REDIS_PIDS[@]}"; do PIDS+=,$p; done
}

# start_server PEER: starts the server of PEER on core 0 and waits for its port.
start_server() {
  case $1 in
  ferry-mem | ferry-redis | ferry-redis1 | base-redis1 | ferry-cluster) start_brokers "$1"; return 0 ;;
  ferry-*) taskset -c 0 "$BIN/ferry" "${FERRY_FLAGS[@]}" >"$BIN/server.log" 2>&1 & ;;
  base-*)
    taskset -c 0 "$BIN/ferry-base" "${FERRY_FLAGS[@]}" >"$BIN/server.log" 2>&1 & ;;
  socketio-*) taskset -c 0 node bench/socketio/server.js "127.0.0.1:$PORT" >"$BIN/server.log" 2>&1 & ;;
  gorilla-*) taskset -c 0 "$BIN/gorilla-floor" --addr "127.0.0.1:$PORT" >"$BIN/server.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  wait_port "$PORT" "$SERVER_PID" "$1" "$BIN/server.log"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  stop_brokers
  sleep 1 # let the sockets of the last run close
}

# run PEER SCENARIO CLIENTS [generator flags...]: one run against a fresh server.
run() {
  local peer=$1 scenario=$2 clients=$3
  shift 3
  local target transport label
  case $peer in
  ferry-ws) target=ferry transport=websocket label=ferry/websocket ;;
  ferry-sse) target=ferry transport=sse label=ferry/sse ;;
  ferry-longpoll) target=ferry transport=longpoll label=ferry/longpoll ;;
  ferry-events) target=ferry transport=events label=ferry/events ;;
  socketio-ws) target=socketio transport=websocket label=socket.io/websocket ;;
  socketio-polling) target=socketio transport=polling label=socket.io/polling ;;
  gorilla-ws) target=gorilla transport=websocket label=gorilla-floor/websocket ;;
  base-ws) target=ferry transport=websocket label=ferry@$BASE_REV/websocket ;;
  base-sse) target=ferry transport=sse label=ferry@$BASE_REV/sse ;;
  base-longpoll) target=ferry transport=longpoll label=ferry@$BASE_REV/longpoll ;;
  base-events) target=ferry transport=events label=ferry@$BASE_REV/events ;;
  ferry-mem) target=ferry transport=websocket label=ferry/memory ;;
  ferry-redis) target=ferry transport=websocket label=ferry/redis ;;
  ferry-redis1) target=ferry transport=websocket label=ferry/redis-1node ;;
  base-redis1) target=ferry transport=websocket label=ferry@$BASE_REV/redis-1node ;;
  ferry-cluster) target=ferry transport=websocket label=ferry/redis-cluster ;;
  *) echo "bench/run.sh: unknown peer $peer" >&2; exit 1 ;;
  esac
  log "$label: $scenario, $clients clients $*"
  URLS=$URL PIDS=
  start_server "$peer"
  [ -n "$PIDS" ] || PIDS=$SERVER_PID
  # A failed run is reported in its JSON line and the table; the comparison goes on.
  taskset -c 1 "$BIN/ferry-bench" --target "$target" --transport "$transport" --url "$URLS" \
    --api-key "$KEY" --clients "$clients" --server-pid "$PIDS" --max-time 5m \
    --label "$label" --scenario "$scenario" --json "$RESULTS" --quiet "$@" || true
  stop_server
}

SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') # one for every node of a run

for peer in $PEERS; do
  case $peer in
  ferry-mem | ferry-redis | ferry-redis1 | base-redis1 | ferry-cluster)
    # The broker comparison: the same subscribers on 1 and on many channels, a steady
    # rate per channel, a burst, then publishes as fast as they go.
    for c in $CHANNELS; do
      # The publish-rate test runs on several channels only: on one, publishes as fast
      # as they go outrun the fan-out to every subscriber, which is the burst's measure,
      # and what is still queued when the drain ends would show as lost.
      b=$BURST rate=$BROKER_RATE ptest=0
      [ "$c" -gt 1 ] && b=$BURST_CHANNELS rate=$BROKER_RATE_MANY ptest=$PUBLISH_TEST
      run "$peer" brokers "$WS_CLIENTS" --channels "$c" --rate "$rate" --duration "$DURATION" \
        --burst "$b" --burst-concurrency "$PUBLISH_CONCURRENCY" --publish-rate-test "$ptest"
    done
    continue
    ;;
  esac
  n=$WS_CLIENTS
  case $peer in *-sse | *-longpoll | *-polling | *-events) n=$HTTP_CLIENTS ;; esac
  # The idle memory of the table is measured here, after SETTLE of rest: long enough for
  # every client to have answered a heartbeat (Ferry's 15 s, Socket.IO's 25 s), so that
  # what a live idle connection holds is counted, not only a fresh one.
  run "$peer" rate2 "$n" --rate 2 --duration "$DURATION" --burst "$BURST" --settle "$SETTLE"
  run "$peer" rate10 "$n" --rate 10 --duration "$DURATION" --burst 0
  for s in $SCALE; do
    [ "$s" -lt "$n" ] && run "$peer" scale "$s" --rate 2 --duration "$DURATION" --burst 0
  done
  case $peer in
  ferry-ws | gorilla-ws | base-ws) run "$peer" stall "$n" --rate 2 --duration "$DURATION" --burst 0 --stall 1 ;;
  esac
done

if [ -n "$SCALE_EVENTS" ]; then
  # Dashboard scale: every reader connected before the first publish (a long connect
  # phase, a settle for the heartbeats to reach them all), then a slow steady rate;
  # "dropped" readers show as connections ended early, memory as the sampled trace.
  for peer in $SCALE_PEERS; do
    run "$peer" dashboard "$SCALE_EVENTS" --rate "$SCALE_RATE" --duration "$SCALE_DURATION" --burst 0 \
      --settle 20s --rss-every 1s --connect-timeout 5m --max-time 15m
  done
fi

log "writing $OUT/results.md (and $OUT/p99.svg with the transport peers)"
chart=(--in "$RESULTS" --md "$OUT/results.md" --machine "$OUT/machine.md")
# The chart is of the 2 msg/s runs of the peers other than the broker ones.
for peer in $PEERS; do
  case $peer in ferry-mem | ferry-redis | ferry-redis1 | base-redis1 | ferry-cluster) ;; *) chart+=(--svg "$OUT/p99.svg"); break ;; esac
done
"$BIN/chart" "${chart[@]}"
cat "$OUT/results.md"
