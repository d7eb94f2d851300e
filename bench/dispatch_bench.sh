#!/usr/bin/env bash
# Runs dispatch_bench with ucx_perftest baselines measured in the same run, on the same UCX
# transports (sm: UCX_TLS=sm,tcp; tcp: UCX_TLS=tcp; UCX_NET_DEVICES=lo): ucp_am_bw at the dispatch
# and combine frame sizes of every case (overall MB/s, MB = 2^20 B, converted to GB/s = 1e9 B/s),
# ucp_am_lat at the same sizes (50th-percentile one-way latency) and at 1 KiB (the latency floor).
# The frame sizes come from `dispatch_bench --print-sizes` with the same arguments.
# Prints dispatch_bench's tables.
# Usage: bench/dispatch_bench.sh [BUILD_DIR] [-- extra dispatch_bench args]  (~1-2 min on 2 cores)
set -euo pipefail

build=${1:-build}
shift || true
[[ ${1:-} == "--" ]] && shift
bench="$build/bench/dispatch_bench"
[[ -x $bench ]] || { echo "no $bench (ninja -C $build dispatch_bench)" >&2; exit 1; }
command -v ucx_perftest >/dev/null || { echo "ucx_perftest missing (package ucx-utils)" >&2; exit 1; }

export UCX_NET_DEVICES=lo UCX_WARN_UNUSED_ENV_VARS=n
tmp=$(mktemp -d)
server=""
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$((20000 + $$ % 20000))

# perftest TEST SIZE ITERS -> the client's "Final:" line (server on a fresh port each time).
perftest() {
  port=$((port + 1))
  timeout 60 ucx_perftest -p "$port" >"$tmp/server.log" 2>&1 &
  server=$!
  local line="" try
  for try in $(seq 50); do
    if line=$(timeout 60 ucx_perftest 127.0.0.1 -p "$port" -t "$1" -s "$2" -n "$3" \
                -w $(( $3 / 10 + 1 )) 2>"$tmp/client.log" | grep '^Final:'); then
      break
    fi
    sleep 0.1  # the server was not listening yet
  done
  wait "$server" 2>/dev/null || true
  server=""
  [[ -n $line ]] || { echo "ucx_perftest $1 -s $2 failed:" >&2; cat "$tmp/client.log" >&2; exit 1; }
  echo "$line"
}

# "<tokens> <dispatch frame bytes> <combine frame bytes>" per case.
"$bench" --print-sizes "$@" >"$tmp/sizes"
sizes=$(awk '{ print $2; print $3 }' "$tmp/sizes" | sort -un)

for tls in sm tcp; do
  if [[ $tls == sm ]]; then export UCX_TLS=sm,tcp; budget=512; else export UCX_TLS=tcp; budget=128; fi
  for bytes in $sizes; do
    # iterations: about `budget` MiB per test, 10..5000
    iters=$(( budget * 1048576 / bytes ))
    (( iters < 10 )) && iters=10
    (( iters > 5000 )) && iters=5000
    # Final: iters p50 avg overall(us) bw_avg bw_overall(MB/s) mr_avg mr_overall
    perftest ucp_am_bw "$bytes" "$iters" |
      awk -v t="$tls" -v b="$bytes" '{ printf "%s am_bw %s %.4f\n", t, b, $7 * 1048576 / 1e9 }' >>"$tmp/baselines"
    lat_iters=$(( iters / 2 < 10 ? 10 : iters / 2 ))
    perftest ucp_am_lat "$bytes" "$lat_iters" |
      awk -v t="$tls" -v b="$bytes" '{ printf "%s am_lat %s %.4f\n", t, b, $3 }' >>"$tmp/baselines"
  done
  iters=$([[ $tls == sm ]] && echo 20000 || echo 5000)
  # Final: iters p50 avg overall(latency us, one way) ...
  perftest ucp_am_lat 1024 "$iters" |
    awk -v t="$tls" '{ printf "%s am_lat 1024 %.4f\n", t, $3 }' >>"$tmp/baselines"
done
unset UCX_TLS  # dispatch_bench sets TLS per context (UcxOptions)
echo "ucx_perftest baselines (am_bw GB/s, am_lat one-way us):" >&2
cat "$tmp/baselines" >&2
"$bench" --baselines "$tmp/baselines" "$@"
