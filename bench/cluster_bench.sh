#!/usr/bin/env bash
# End-to-end decode throughput of the disaggregated cluster against the single-process engine,
# on the same model, backend and batch, measured in the same run (the machine is shared and
# noisy: only the ratio means something).
#   bench/cluster_bench.sh [BUILD_DIR] [MODEL_DIR]
# Baseline: `switchyard serve-api` (every role in one process, one DecodeBatcher). Cluster:
# `switchyard local` with a router, one prefill and one decode process over UCX tcp. Each round
# sends BATCH concurrent greedy requests of TOKENS tokens through yardctl and times them from the
# first send to the last answer; aggregate tokens/s = BATCH * TOKENS / seconds. Rounds alternate
# between the two so drifting load hits both alike; the report gives medians and the ratio.
# SY_BENCH_MODE=experts: baseline the same cluster with the routed experts in the decode process,
# against the experts on 2 expert-host processes. SY_BENCH_MODE=overlap: both with 2 expert hosts,
# two-micro-batch overlap off (baseline) against on.
# Knobs: SY_BENCH_BATCH (8), SY_BENCH_TOKENS (64), SY_BENCH_ROUNDS (5), SY_BENCH_MODE (engine).
set -euo pipefail
build=${1:-build}
model=${2:-$build/test-models/tiny-seed7}
sy="$build/apps/switchyard"
yardctl="$build/apps/yardctl"
batch=${SY_BENCH_BATCH:-8}
tokens=${SY_BENCH_TOKENS:-64}
rounds=${SY_BENCH_ROUNDS:-5}
mode=${SY_BENCH_MODE:-engine}
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "build switchyard and yardctl in $build first"; exit 1; }
[ -f "$model/config.json" ] || { echo "no model at $model (switchyard make-tiny-model DIR)"; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n

wait_for() {  # FILE PATTERN
  for _ in $(seq 1 600); do grep -qs "$2" "$1" && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1"; cat "$1"; exit 1
}

# start_local TAG ARGS...: a local cluster; prints nothing, sets the address into $work/TAG.addr.
start_local() {
  local tag=$1
  shift
  "$sy" local --model "$model" --prefill 1 --decode 1 --rpc-port 0 --http-port 0 --max-batch "$batch" --kv-pages 512 "$@" \
    >"$work/$tag.out" 2>"$work/$tag.err" &
  pids+=($!)
}
local_address() { sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/$1.out"; }

case "$mode" in
  engine)
    base_label="single process (serve-api)"
    test_label="cluster: router + prefill + decode over UCX tcp"
    "$sy" serve-api --model "$model" --listen 127.0.0.1:0 --max-batch "$batch" --kv-pages 512 \
      >"$work/single.out" 2>"$work/single.err" &
    pids+=($!)
    start_local cluster
    wait_for "$work/single.out" "api listening on"
    wait_for "$work/cluster.out" 'cluster "local" ready'
    single=$(sed -n 's/^api listening on //p' "$work/single.out")
    cluster=$(local_address cluster)
    ;;
  experts)
    base_label="cluster, experts in the decode process"
    test_label="cluster, experts on 2 expert hosts (overlap on)"
    start_local base
    start_local test --expert-hosts 2
    wait_for "$work/base.out" 'cluster "local" ready'
    wait_for "$work/test.out" 'cluster "local" ready'
    single=$(local_address base)
    cluster=$(local_address test)
    ;;
  overlap)
    base_label="2 expert hosts, no overlap"
    test_label="2 expert hosts, two-micro-batch overlap"
    start_local base --expert-hosts 2 --no-overlap
    start_local test --expert-hosts 2
    wait_for "$work/base.out" 'cluster "local" ready'
    wait_for "$work/test.out" 'cluster "local" ready'
    single=$(local_address base)
    cluster=$(local_address test)
    ;;
  *) echo "unknown SY_BENCH_MODE $mode (engine | experts | overlap)"; exit 2 ;;
esac

# round ADDRESS: prints aggregate tokens/s of one round.
round() {
  local start end i
  local clients=()
  start=$(date +%s.%N)
  for i in $(seq 1 "$batch"); do
    "$yardctl" --address "$1" generate --prompt "benchmark request $i of a round" --max-tokens "$tokens" \
      >/dev/null 2>"$work/client.$i.err" &
    clients+=($!)
  done
  for pid in "${clients[@]}"; do wait "$pid" || { cat "$work"/client.*.err; exit 1; }; done
  end=$(date +%s.%N)
  python3 -c "print(f'{$batch * $tokens / ($end - $start):.1f}')"
}

round "$single" >/dev/null  # warm-up: page in weights, first connections
round "$cluster" >/dev/null
s_rates=() c_rates=()
for _ in $(seq 1 "$rounds"); do
  s_rates+=("$(round "$single")")
  c_rates+=("$(round "$cluster")")
done
python3 - "$batch" "$tokens" "${s_rates[*]}" "${c_rates[*]}" "$base_label" "$test_label" <<'EOF'
import statistics, sys
batch, tokens = int(sys.argv[1]), int(sys.argv[2])
s = [float(x) for x in sys.argv[3].split()]
c = [float(x) for x in sys.argv[4].split()]
base_label, test_label = sys.argv[5], sys.argv[6]
ms, mc = statistics.median(s), statistics.median(c)
print(f"batch {batch} x {tokens} tokens, {len(s)} rounds each (aggregate tokens/s, median (min-max))")
print(f"| setup | tokens/s | ratio |")
print(f"|---|---|---|")
print(f"| {base_label} | {ms:.1f} ({min(s):.1f}-{max(s):.1f}) | 1.00 |")
print(f"| {test_label} | {mc:.1f} ({min(c):.1f}-{max(c):.1f}) | **{mc / ms:.2f}** |")
EOF
