#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds Switchyard, makes the tiny
# DeepSeek-V3-architecture model, shows it (inspect, tokenize, single-process generate), then
# starts a local disaggregated cluster on it (`switchyard local`: router, prefill and two decode
# processes over UCX) and streams a demo generation through the cluster API with yardctl.
# Interactive (a terminal on stdin): the cluster keeps serving until Ctrl-C. Otherwise (CI,
# scripts) it is stopped after the demo. Environment: SY_BUILD_DIR (default build), SY_MODEL_DIR
# (default <data dir>/models/tiny), SY_RPC_PORT (default 7433; 0 picks a free port).
set -euo pipefail
cd "$(dirname "$0")/.."

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
echo "== a local cluster: router, prefill0, decode0, decode1 as separate processes over UCX =="
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-quickstart.XXXXXX")
cluster_pid=
stop_cluster() {
  if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
    kill -TERM "$cluster_pid"
    wait "$cluster_pid" || true
  fi
  cluster_pid=
}
trap 'stop_cluster; rm -rf "$work"' EXIT
"$sy" local --model "$model" --prefill 1 --decode 2 --rpc-port "${SY_RPC_PORT:-7433}" --kv-pages 512 \
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
echo
echo "== yardctl generate (streamed from the decode nodes through the router) =="
"$yardctl" --address "$address" generate --prompt "What does a switchyard do?" --max-tokens 32
echo
echo "== yardctl status =="
"$yardctl" --address "$address" status
echo
if [ -t 0 ]; then
  echo "quickstart: the cluster serves at $address; try: $yardctl --address $address generate --prompt \"Hello\""
  echo "quickstart: Ctrl-C stops it"
  wait "$cluster_pid" || true
  cluster_pid=
else
  stop_cluster
  echo "quickstart: done (cluster stopped: not interactive). Model at $model."
fi
