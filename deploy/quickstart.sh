#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds Switchyard, makes the tiny
# DeepSeek-V3-architecture model, shows it (inspect, tokenize, single-process generate), then
# starts a local disaggregated cluster on it (`switchyard local`: router, prefill, two decode and
# two expert-host processes over UCX, with live rebalancing) and streams a demo generation through
# the cluster API with yardctl, then asks it over the OpenAI-compatible HTTP API.
# Interactive (a terminal on stdin): the cluster keeps serving until Ctrl-C. Otherwise (CI,
# scripts) it is stopped after the demo. Environment: SY_BUILD_DIR (default build), SY_MODEL_DIR
# (default <data dir>/models/tiny), SY_RPC_PORT (default 7433) and SY_HTTP_PORT (default 8000)
# for the cluster's APIs (0 picks a free port).
# --with-monitoring: also starts Prometheus (Debian's `prometheus`, loopback only) on the scrape
# config `switchyard local` writes and prints its URL; SY_PROMETHEUS_PORT (default 9090; 0 picks a
# free port). Grafana and the dashboards: docs/operations.md "Dashboards".
set -euo pipefail
cd "$(dirname "$0")/.."

with_monitoring=0
for arg in "$@"; do
  case "$arg" in
    --with-monitoring) with_monitoring=1 ;;
    *) echo "usage: $0 [--with-monitoring]" >&2; exit 2 ;;
  esac
done

SY_DATA_DIR=$(./deploy/install-deps.sh | tail -n 1)
export SY_DATA_DIR
build=${SY_BUILD_DIR:-build}
model=${SY_MODEL_DIR:-$SY_DATA_DIR/models/tiny}

if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DSY_WITH_CUDA="${SY_WITH_CUDA:-AUTO}" >/dev/null
fi
cmake --build "$build" --target switchyard yardctl
sy="$build/apps/switchyard"
yardctl="$build/apps/yardctl"

echo "== make the tiny model in $model =="
"$sy" make-tiny-model "$model" --seed 0
echo
echo "== inspect =="
"$sy" inspect "$model"
echo
echo "== tokenize =="
"$sy" tokenize --model "$model" "Switchyard sorts tokens onto experts." "混合专家模型 🚂 1234567"
echo
echo "== the chat format =="
"$sy" tokenize --model "$model" --chat "What does a switchyard do?"
echo
echo "== generate (single-process engine, cpu backend, MTP drafts; random weights, so the text is noise) =="
"$sy" generate --model "$model" --chat --prompt "What does a switchyard do?" --max-tokens 24 --mtp
echo
echo "== a local cluster over UCX: router (+ load_stats, controller), prefill0, decode0, decode1, and the"
echo "   routed experts on expert0 and expert1 (2 redundant replicas; EPLB rebalancing every 60 s) =="
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-quickstart.XXXXXX")
cluster_pid=
stop_cluster() {
  if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
    kill -TERM "$cluster_pid"
    wait "$cluster_pid" || true
  fi
  cluster_pid=
}
prometheus_pid=
stop_prometheus() {
  if [ -n "$prometheus_pid" ] && kill -0 "$prometheus_pid" 2>/dev/null; then
    kill -TERM "$prometheus_pid"
    wait "$prometheus_pid" || true
  fi
  prometheus_pid=
}
trap 'stop_prometheus; stop_cluster; rm -rf "$work"' EXIT
"$sy" local --model "$model" --prefill 1 --decode 2 --expert-hosts 2 --redundant-experts 2 --rebalance-interval 60 \
  --rpc-port "${SY_RPC_PORT:-7433}" --http-port "${SY_HTTP_PORT:-8000}" --kv-pages 512 \
  >"$work/local.out" 2>"$work/local.err" &
cluster_pid=$!
for _ in $(seq 1 600); do
  grep -qs 'cluster "local" ready' "$work/local.out" && break
  kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/local.out" "$work/local.err"; echo "quickstart: the cluster did not start"; exit 1; }
  sleep 0.1
done
grep -qs 'cluster "local" ready' "$work/local.out" || { cat "$work/local.err"; echo "quickstart: cluster not ready in 60 s"; exit 1; }
sed -n 's/^switchyard local: //p' "$work/local.out"
address=$(sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/local.out")
if [ "$with_monitoring" = 1 ]; then
  echo
  echo "== Prometheus (loopback) scraping every node's /metrics =="
  command -v prometheus >/dev/null || { echo "quickstart: no prometheus binary (apt-get install prometheus)"; exit 1; }
  scrape=$(sed -n 's/^switchyard local: prometheus scrape config //p' "$work/local.out")
  [ -f "$scrape" ] || { echo "quickstart: switchyard local printed no scrape config"; exit 1; }
  prometheus_port=${SY_PROMETHEUS_PORT:-9090}
  if [ "$prometheus_port" = 0 ]; then
    prometheus_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  fi
  prometheus --config.file="$scrape" --storage.tsdb.path="$work/prometheus" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
  prometheus_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS --max-time 1 "http://127.0.0.1:$prometheus_port/-/ready" >/dev/null 2>&1 && break
    kill -0 "$prometheus_pid" 2>/dev/null || { tail -n 20 "$work/prometheus.log"; echo "quickstart: Prometheus did not start (port $prometheus_port busy? set SY_PROMETHEUS_PORT)"; exit 1; }
    sleep 0.1
  done
  echo "quickstart: Prometheus at http://127.0.0.1:$prometheus_port (scrape config $scrape);" \
    "dashboards: monitoring/grafana/, import as in docs/operations.md"
fi
echo
echo "== yardctl generate (streamed from the decode nodes through the router) =="
"$yardctl" --address "$address" generate --prompt "What does a switchyard do?" --max-tokens 32
echo
echo "== the same cluster through the OpenAI-compatible HTTP API =="
http=$(sed -n 's|^switchyard local:   api: http http://\([0-9.:]*\)/v1 .*|\1|p' "$work/local.out")
curl -fsS "http://$http/v1/completions" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$(basename "$model")\", \"prompt\": \"What does a switchyard do?\", \"max_tokens\": 16, \"temperature\": 0}"
echo
echo
echo "== yardctl status =="
"$yardctl" --address "$address" status
echo
echo "== yardctl load (the expert load per MoE layer, cold to hot) and plan (a dry-run rebalance) =="
for _ in $(seq 1 50); do  # the expert hosts report their counts every second or so
  "$yardctl" --address "$address" load --json | grep -q '"reports": 0' || break
  sleep 0.1
done
"$yardctl" --address "$address" load
"$yardctl" --address "$address" plan --max-moves 5
echo
if [ -t 0 ]; then
  echo "quickstart: the cluster serves at $address; try: $yardctl --address $address generate --prompt \"Hello\""
  echo "quickstart: operator commands (rebalance, pin, drain, ...) need the admin token:" \
    "$(sed -n 's/^switchyard local: admin token in \([^ ]*\) .*/export SY_ADMIN_TOKEN=$(cat \1)/p' "$work/local.out")"
  [ -z "$prometheus_pid" ] || echo "quickstart: Prometheus at http://127.0.0.1:$prometheus_port"
  echo "quickstart: Ctrl-C stops it"
  wait "$cluster_pid" || true
  cluster_pid=
else
  stop_cluster
  echo "quickstart: done (cluster stopped: not interactive). Model at $model."
fi
