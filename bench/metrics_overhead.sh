#!/usr/bin/env bash
# Cost of the serving metrics: decode throughput of two identical local clusters (router, one
# prefill and one decode process over UCX tcp), one with metrics on and scraped every second
# like Prometheus does, one with `[cluster] metrics = false` (no exporter, no role metrics),
# measured in the same run (the machine is shared and noisy: only the ratio means something).
#   bench/metrics_overhead.sh [BUILD_DIR] [MODEL_DIR]
# Each round sends BATCH concurrent greedy requests of TOKENS tokens (--no-stop-at-eos) through
# yardctl and times them from the first send to the last answer; aggregate tokens/s = BATCH *
# TOKENS / seconds. Rounds alternate between the clusters, in turn first, so drifting load hits
# both alike; the report gives medians, min-max, the ratio of the medians on/off (target >= 0.98)
# and the median of the per-pair ratios (a round and its neighbour of the other cluster see the
# same load). Wall time on a shared machine is noisy, so it also reports the CPU time the three
# node processes spent per 1000 tokens (utime + stime from /proc): the cost itself, which other
# processes' load disturbs far less.
# Knobs: SY_BENCH_BATCH (8), SY_BENCH_TOKENS (64), SY_BENCH_ROUNDS (9).
set -euo pipefail
build=${1:-build}
model=${2:-$build/test-models/tiny-seed7}
sy="$build/apps/switchyard"
yardctl="$build/apps/yardctl"
batch=${SY_BENCH_BATCH:-8}
tokens=${SY_BENCH_TOKENS:-64}
rounds=${SY_BENCH_ROUNDS:-9}
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

# start NAME [metrics = false]: writes a config (free ports: the other cluster already holds its
# own), starts it and prints its cluster API address.
start() {
  "$sy" local --model "$model" --prefill 1 --decode 1 --rpc-port 0 --http-port 0 --max-batch "$batch" --kv-pages 512 \
    --write-config "$work/$1.toml" >/dev/null
  [ "$#" -lt 2 ] || sed -i "/^\[cluster\]$/a $2" "$work/$1.toml"
  "$sy" local --config "$work/$1.toml" >"$work/$1.out" 2>"$work/$1.err" &
  pids+=($!)
  wait_for "$work/$1.out" 'cluster "local" ready'
  sed -n 's/^switchyard local: started [a-z0-9]* pid \([0-9]*\) .*/\1/p' "$work/$1.out" | tr '\n' ' ' >"$work/$1.pids"
}
start on
start off 'metrics = false'
on=$(sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/on.out")
off=$(sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/off.out")
if curl -fsS --max-time 2 "http://$(sed -n "s/^ *- targets: \['\([0-9.:]*\)'\].*/\1/p" "$work/off.prometheus.yml" | head -1)/metrics" \
  >/dev/null 2>&1; then
  echo "the metrics-off cluster serves /metrics"; exit 1
fi

# A scraper for the metrics-on cluster: every node's /metrics once a second, as Prometheus would.
targets=$(sed -n "s/^ *- targets: \['\([0-9.:]*\)'\].*/\1/p" "$work/on.prometheus.yml")
[ -n "$targets" ] || { echo "no scrape targets in $work/on.prometheus.yml"; exit 1; }
(while :; do for t in $targets; do curl -fsS --max-time 1 "http://$t/metrics" >/dev/null || true; done; sleep 1; done) &
pids+=($!)

# cpu_ticks PID...: utime + stime of the processes, in clock ticks.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    # The fields after the command name: utime and stime are the 12th and 13th.
    total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# round NAME ADDRESS: prints "tokens/s cpu-ms-per-1000-tokens" of one round on that cluster.
round() {
  local start end i c0 c1
  local clients=()
  # shellcheck disable=SC2046
  c0=$(cpu_ticks $(cat "$work/$1.pids"))
  start=$(date +%s.%N)
  for i in $(seq 1 "$batch"); do
    "$yardctl" --address "$2" generate --prompt "benchmark request $i of a round" --max-tokens "$tokens" \
      --no-stop-at-eos >/dev/null 2>"$work/client.$i.err" &
    clients+=($!)
  done
  for pid in "${clients[@]}"; do wait "$pid" || { cat "$work"/client.*.err; exit 1; }; done
  end=$(date +%s.%N)
  # shellcheck disable=SC2046
  c1=$(cpu_ticks $(cat "$work/$1.pids"))
  python3 -c "print(f'{$batch * $tokens / ($end - $start):.1f} {($c1 - $c0) * 1000 / $(getconf CLK_TCK) * 1000 / ($batch * $tokens):.2f}')"
}

round on "$on" >/dev/null  # warm-up: page in weights, first connections
round off "$off" >/dev/null
on_rounds=() off_rounds=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then
    on_rounds+=("$(round on "$on")"); off_rounds+=("$(round off "$off")")
  else
    off_rounds+=("$(round off "$off")"); on_rounds+=("$(round on "$on")")
  fi
done
scraped=$(for t in $targets; do curl -fsS "http://$t/metrics"; done | sed -n 's/^switchyard_generation_tokens_total \(.*\)/\1/p' | head -1)
python3 - "$batch" "$tokens" "$(IFS=,; echo "${on_rounds[*]}")" "$(IFS=,; echo "${off_rounds[*]}")" "$scraped" <<'EOF'
import statistics, sys
batch, tokens = int(sys.argv[1]), int(sys.argv[2])
def parse(text):
    rows = [tuple(float(v) for v in r.split()) for r in text.split(",")]
    return [r[0] for r in rows], [r[1] for r in rows]
on, on_cpu = parse(sys.argv[3])
off, off_cpu = parse(sys.argv[4])
med = statistics.median
pairs = med([a / b for a, b in zip(on, off)])
print(f"batch {batch} x {tokens} tokens, {len(on)} rounds each (median (min-max)); the metrics-on router"
      f" counted {sys.argv[5] or '?'} generated tokens")
print("| setup | tokens/s | ratio | ratio, paired rounds | node CPU ms / 1000 tokens | CPU ratio (off/on) |")
print("|---|---|---|---|---|---|")
print(f"| metrics off (`[cluster] metrics = false`) | {med(off):.1f} ({min(off):.1f}-{max(off):.1f}) | 1.00 | 1.00 "
      f"| {med(off_cpu):.1f} ({min(off_cpu):.1f}-{max(off_cpu):.1f}) | 1.00 |")
print(f"| metrics on, scraped every 1 s | {med(on):.1f} ({min(on):.1f}-{max(on):.1f}) | **{med(on) / med(off):.3f}** "
      f"| **{pairs:.3f}** | {med(on_cpu):.1f} ({min(on_cpu):.1f}-{max(on_cpu):.1f}) | **{med(off_cpu) / med(on_cpu):.3f}** |")
EOF
