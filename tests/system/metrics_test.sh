#!/usr/bin/env bash
# System test of the metrics path: `switchyard local` starts 3 nodes (router, prefill0, decode0);
#  1. every node serves GET /metrics at its metrics port with switchyard_node_up 1 and
#     switchyard_node_peers{state="ready"} 2 (the other two nodes);
#  2. a real Prometheus started with the scrape config local wrote sees switchyard_node_up == 1
#     for all 3 nodes (bounded: the first scrape lands ~5 s after start);
#  3. SIGTERM stops the cluster and Prometheus; no process is left behind.
# Skips (77) without the prometheus binary. Needs SY_BUILD_DIR (ctest sets it).
set -euo pipefail

bin="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
[ -x "$bin" ] || { echo "skip: $bin is not built"; exit 77; }
command -v prometheus >/dev/null || { echo "skip: prometheus is not installed"; exit 77; }
command -v curl >/dev/null || { echo "skip: curl is not installed"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-metrics-test.XXXXXX")
started=()

cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in ${child_pids:-}; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"

ready_seen() { grep -qs 'cluster "local" ready: 3 nodes' "$work/local.out"; }

t0=$SECONDS
model=$(tiny_model)
[ -n "$model" ] || { echo "metrics_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
"$bin" local --model "$model" --prefill 1 --decode 1 --rpc-port 0 --http-port 0 --kv-pages 64 --write-config "$work/cluster.toml" \
  >"$work/write.out" || fail "write-config"
"$bin" local --config "$work/cluster.toml" --stop-timeout 8 >"$work/local.out" 2>"$work/local.err" &
sup=$!
started+=("$sup")
wait_until 60 ready_seen || fail "cluster not ready within 60 s"
child_pids=$(sed -n 's/^switchyard local: started \([a-z0-9]*\) pid \([0-9]*\) .*/\2/p' "$work/local.out" | tr '\n' ' ')
[ "$(echo "$child_pids" | wc -w)" -eq 3 ] || fail "expected 3 started lines, got: $child_pids"
scrape="$work/cluster.prometheus.yml"
grep -q "prometheus scrape config $scrape" "$work/local.out" || fail "local did not print its scrape config path"
echo "cluster ready after $((SECONDS - t0)) s"

# 1. Every node's /metrics over GET.
ports=$(sed -n 's/^ *- targets: \[.127\.0\.0\.1:\([0-9]*\).\].*/\1/p' "$scrape")
[ "$(echo "$ports" | wc -w)" -eq 3 ] || fail "expected 3 targets in $scrape: $ports"
peers_ready() { curl -fsS "http://127.0.0.1:$1/metrics" | grep -q '^switchyard_node_peers{state="ready"} 2$'; }
for port in $ports; do
  text=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/metrics") || fail "GET /metrics on port $port"
  echo "$text" | grep -qE '^switchyard_node_up\{node="[a-z0-9]+",roles="[a-z_,]+"\} 1$' \
    || fail "port $port: no switchyard_node_up 1: $(echo "$text" | grep node_up)"
  # Peers turn ready shortly after this node's own ready line (the NodeReady of the last one).
  wait_until 10 peers_ready "$port" || fail "port $port: peers not ready: $(curl -fsS "http://127.0.0.1:$port/metrics" | grep node_peers)"
  echo "$text" | grep -q '^switchyard_transport_messages_total{direction="in",peer="[a-z0-9]*"} [1-9]' \
    || fail "port $port: no transport messages counted: $(echo "$text" | grep transport_messages)"
  echo "$text" | grep -q '^switchyard_node_bad_frames_total 0$' || fail "port $port: bad frames counter"
done
echo "every node serves /metrics (node_up 1, 2 ready peers, transport counters)"

# 2. A real Prometheus scrapes them all.
prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prometheus --config.file="$scrape" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom=$!
started+=("$prom")
all_up() {
  curl -fsS --max-time 2 "http://127.0.0.1:$prom_port/api/v1/query?query=sum(switchyard_node_up)" >"$work/query.json" 2>/dev/null \
    && grep -q '"value":\[[0-9.]*,"3"\]' "$work/query.json"
}
wait_until 25 all_up || fail "prometheus did not see 3 nodes up within 25 s: $(cat "$work/query.json" 2>/dev/null)"
echo "prometheus sees switchyard_node_up for all 3 nodes after $((SECONDS - t0)) s"

# 3. Stop everything, no orphans.
kill -TERM "$prom"
kill -TERM "$sup"
wait_until 15 all_gone "$sup" "$prom" $child_pids || fail "processes left after SIGTERM"
wait "$sup" && rc=0 || rc=$?
[ "$rc" -eq 0 ] || fail "supervisor exit status $rc after SIGTERM"
echo "PASS: metrics_test in $((SECONDS - t0)) s"
