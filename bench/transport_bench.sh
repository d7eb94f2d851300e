#!/usr/bin/env bash
# Runs transport_bench with ucx_perftest baselines measured in the same run, on the same UCX
# transports (sm: UCX_TLS=sm,tcp; tcp: UCX_TLS=tcp; UCX_NET_DEVICES=lo): ucp_put_bw at 1, 4, 16,
# 64 MiB (overall MB/s, MB = 2^20 B, converted to GB/s = 1e9 B/s) and ucp_am_lat at 1 KiB (its
# 50th-percentile one-way latency, doubled to a round trip). Prints transport_bench's table.
# Usage: bench/transport_bench.sh [BUILD_DIR] [-- extra transport_bench args]  (~60 s on 2 cores)
set -euo pipefail

build=${1:-build}
shift || true
[[ ${1:-} == "--" ]] && shift
bench="$build/bench/transport_bench"
[[ -x $bench ]] || { echo "no $bench (ninja -C $build transport_bench)" >&2; exit 1; }
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
  timeout 30 ucx_perftest -p "$port" >"$tmp/server.log" 2>&1 &
  server=$!
  local line="" try
  for try in $(seq 50); do
    if line=$(timeout 30 ucx_perftest 127.0.0.1 -p "$port" -t "$1" -s "$2" -n "$3" \
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

for tls in sm tcp; do
  if [[ $tls == sm ]]; then export UCX_TLS=sm,tcp; budget=512; else export UCX_TLS=tcp; budget=128; fi
  for mib in 1 4 16 64; do
    bytes=$((mib << 20))
    iters=$(( budget / mib > 4 ? budget / mib : 4 ))
    # Final: iters p50 avg overall(overhead us) bw_avg bw_overall(MB/s) mr_avg mr_overall
    perftest ucp_put_bw "$bytes" "$iters" |
      awk -v t="$tls" -v b="$bytes" '{ printf "%s put %s %.4f\n", t, b, $7 * 1048576 / 1e9 }' >>"$tmp/baselines"
  done
  iters=$([[ $tls == sm ]] && echo 20000 || echo 5000)
  # Final: iters p50 avg overall(latency us, one way) ...: a round trip is twice the p50.
  perftest ucp_am_lat 1024 "$iters" |
    awk -v t="$tls" '{ printf "%s am_rtt 1024 %.4f\n", t, 2 * $3 }' >>"$tmp/baselines"
done
unset UCX_TLS  # transport_bench sets TLS per context (UcxOptions)
echo "ucx_perftest baselines (GB/s, round-trip us):" >&2
cat "$tmp/baselines" >&2
"$bench" --baselines "$tmp/baselines" "$@"
