#!/usr/bin/env bash
# Starts a Redis Cluster on loopback for the tests: three masters and three replicas,
# ports BASE..BASE+5 (each node's cluster bus listens on its port + 10000), in DIR.
# Prints the nodes' addresses, comma-separated, for FERRY_TEST_REDIS_CLUSTER; their PIDs
# are in DIR/pids, one a line, for the caller to kill.
#   usage: scripts/redis-cluster.sh DIR [BASE]   (BASE defaults to 7101)
set -euo pipefail
dir=$1
base=${2:-7101}
mkdir -p "$dir"
: >"$dir/pids"
addrs=()
for i in 0 1 2 3 4 5; do
  port=$((base + i))
  mkdir -p "$dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout 2000 \
    --save '' --appendonly no --dir "$dir/$port" --daemonize no >"$dir/$port/log" 2>&1 &
  echo $! >>"$dir/pids"
  addrs+=("127.0.0.1:$port")
done
for a in "${addrs[@]}"; do
  for _ in $(seq 100); do redis-cli -h 127.0.0.1 -p "${a##*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
  cat "$dir/create.log" >&2
  exit 1
}
# Ready when every node agrees that all slots are served.
for a in "${addrs[@]}"; do
  for _ in $(seq 200); do
    redis-cli -p "${a##*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
done
(IFS=,; echo "${addrs[*]}")
