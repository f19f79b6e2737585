#!/usr/bin/env bash
# Runs every test of Ferry on a fresh machine: installs what is missing (Debian packages
# as root, npm packages from package-lock.json), then Go checks and tests, fuzz smoke runs,
# the JS client tests and the end-to-end scenarios. Starts and stops its own servers.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- set-up --------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian nginx package starts a system nginx on port 80; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx >/dev/null 2>&1 || true; fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
# Load tests and many-connection scenarios need more than the default 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# --- Go --------------------------------------------------------------------------------
log "gofmt, go vet"
bad=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad"; exit 1; fi
go vet ./...

log "go test -race (with a real redis-server and a real Redis Cluster for the Redis broker's own tests)"
redis_dir=$(mktemp -d)
redis-server --port 6399 --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --daemonize no >"$redis_dir/log" 2>&1 &
redis_pid=$!
# The cluster: three masters and three replicas on 7101-7106 (cluster bus 17101-17106),
# killed by PID at exit like the single Redis.
cluster_dir="$redis_dir/cluster"
stop_redis() {
  kill "$redis_pid" 2>/dev/null || true
  if [ -f "$cluster_dir/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$cluster_dir/pids"
  fi
  rm -rf "$redis_dir"
}
trap stop_redis EXIT
for _ in $(seq 100); do redis-cli -p 6399 ping >/dev/null 2>&1 && break; sleep 0.1; done
cluster_addrs=$(scripts/redis-cluster.sh "$cluster_dir" 7101)
FERRY_TEST_REDIS_URL=redis://127.0.0.1:6399/0 FERRY_TEST_REDIS_CLUSTER=$cluster_addrs go test -race -count=1 ./...
log "go test -race ./bridge/ again, its servers on plain I/O (--io plain, the pooled I/O's twin)"
FERRY_TEST_IO=plain FERRY_TEST_REDIS_URL=redis://127.0.0.1:6399/0 FERRY_TEST_REDIS_CLUSTER=$cluster_addrs go test -race -count=1 ./bridge/
stop_redis
trap - EXIT
log "go test ./transport/... without -race: the allocation counts that the race detector hides"
go test -count=1 ./transport/...

log "fuzz smoke runs"
scripts/fuzz.sh "${FUZZTIME:-10s}"

# --- JS client ----------------------------------------------------------------------
log "client-js tests"
npm run --silent test:client

# --- end to end -----------------------------------------------------------------------
log "e2e scenarios"
npm run --silent test:e2e

log "demo pages in Chromium"
node --test e2e/demo/

log "client package: npm pack, used from a scratch project in Node and bundled by esbuild"
node --test e2e/pack/

log "all tests passed"
