#!/usr/bin/env bash
# System test of the serving metrics (issue 8): `switchyard local` runs router, prefill0 and
# decode0 (MTP on) on the tiny model; Debian's `prometheus` (loopback, the scrape config local
# wrote, 1 s scrapes) scrapes them while yardctl sends requests. Queried through Prometheus's
# HTTP API once the last scrape follows the last request:
#  - switchyard_generation_tokens_total sums to the tokens the clients received ("tokens N" on
#    yardctl's stderr), switchyard_prompt_tokens_total to their prompt tokens;
#  - time to first token, end-to-end and queue time histograms count one sample per request, and
#    the inter-token latency histogram one per token after each request's first;
#  - switchyard_requests_total{outcome="ok"} is the number of requests, {outcome="error"} counts
#    the one over-long prompt the router refused;
#  - decode's gauges are back at rest (no running request, every KV page free, used + free = pool)
#    and MTP drafted tokens, accepting at most as many.
# Skips (77) without prometheus, curl or a tiny model. Needs SY_BUILD_DIR (ctest sets it).
set -euo pipefail

sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "skip: switchyard or yardctl is not built"; exit 77; }
command -v prometheus >/dev/null || { echo "skip: prometheus is not installed"; exit 77; }
command -v curl >/dev/null || { echo "skip: curl is not installed"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-serving-metrics.XXXXXX")
started=()

cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in ${child_pids:-}; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"
export UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n

t0=$SECONDS
model=$(tiny_model)
[ -n "$model" ] || { echo "serving_metrics_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
kv_pages=64
"$sy" local --model "$model" --prefill 1 --decode 1 --rpc-port 0 --http-port 0 --kv-pages "$kv_pages" --mtp \
  --write-config "$work/cluster.toml" >"$work/write.out" || fail "write-config"
"$sy" local --config "$work/cluster.toml" --stop-timeout 8 >"$work/local.out" 2>"$work/local.err" &
sup=$!
started+=("$sup")
ready_seen() { grep -qs 'cluster "local" ready: 3 nodes' "$work/local.out"; }
wait_until 60 ready_seen || fail "cluster not ready within 60 s"
child_pids=$(sed -n 's/^switchyard local: started \([a-z0-9]*\) pid \([0-9]*\) .*/\2/p' "$work/local.out" | tr '\n' ' ')
address=$(sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/local.out")
[ -n "$address" ] || fail "local printed no cluster API address"
scrape="$work/cluster.prometheus.yml"
[ -f "$scrape" ] || fail "local wrote no scrape config at $scrape"

prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prometheus --config.file="$scrape" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom=$!
started+=("$prom")

# q EXPR: the value of an instant query with one (or no) result; "none" when it is empty.
q() {
  curl -fsS --max-time 2 --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    python3 -c 'import json,sys
r = json.load(sys.stdin)["data"]["result"]
print("none" if not r else r[0]["value"][1] if len(r) == 1 else "many")' || echo "none"
}
# is EXPR WANT: the query's value equals WANT (numerically).
is() { python3 -c 'import sys; sys.exit(0 if sys.argv[1] not in ("none", "many") and float(sys.argv[1]) == float(sys.argv[2]) else 1)' "$(q "$1")" "$2"; }
scraped() { is 'sum(switchyard_node_up)' 3 && is 'count(switchyard_requests_total)' 5; }
wait_until 25 scraped || fail "prometheus does not see 3 nodes and the router's requests series: $(q 'sum(switchyard_node_up)')"
echo "cluster and prometheus up after $((SECONDS - t0)) s"

# Requests: 3 one after another, then 5 at once; greedy, various lengths; one refused.
n=0
send() {  # TAG MAX_TOKENS PROMPT
  "$yardctl" --address "$address" generate --prompt "$3" --max-tokens "$2" --no-stop-at-eos \
    >"$work/client.$1.txt" 2>"$work/client.$1.err"
}
for m in 5 12 20; do
  n=$((n + 1))
  send "$n" "$m" "sequential request $n" || fail "request $n: yardctl exited $?: $(cat "$work/client.$n.err")"
done
pids=()
for m in 3 8 16 24 31; do
  n=$((n + 1))
  send "$n" "$m" "concurrent request $n asks for $m tokens" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || fail "a concurrent request failed: $(cat "$work"/client.*.err)"; done
if "$yardctl" --address "$address" generate --prompt "too long" --max-tokens 10000000 >/dev/null 2>"$work/refused.err"; then
  fail "an over-long request was accepted"
fi
tokens=0
prompt_tokens=0
for i in $(seq 1 "$n"); do
  line=$(grep -E '^tokens [0-9]+ \(prompt [0-9]+\)' "$work/client.$i.err") || fail "request $i: no usage line: $(cat "$work/client.$i.err")"
  tokens=$((tokens + $(echo "$line" | sed -E 's/^tokens ([0-9]+) .*/\1/')))
  prompt_tokens=$((prompt_tokens + $(echo "$line" | sed -E 's/^tokens [0-9]+ \(prompt ([0-9]+)\).*/\1/')))
done
echo "$n requests: clients received $tokens tokens for $prompt_tokens prompt tokens"

# Prometheus scrapes every second: wait for the counters to settle, then check each figure.
settled() { is 'sum(switchyard_generation_tokens_total)' "$tokens" && is 'sum(switchyard_requests_total{outcome="error"})' 1; }
wait_until 15 settled || true
check() {  # EXPR WANT
  is "$1" "$2" || fail "$1 is $(q "$1"), expected $2"
  echo "ok: $1 = $2"
}
check 'sum(switchyard_generation_tokens_total)' "$tokens"
check 'sum(switchyard_prompt_tokens_total)' "$prompt_tokens"
check 'sum(switchyard_time_to_first_token_seconds_count)' "$n"
check 'sum(switchyard_e2e_request_latency_seconds_count)' "$n"
check 'sum(switchyard_request_queue_time_seconds_count)' "$n"
check 'sum(switchyard_inter_token_latency_seconds_count)' "$((tokens - n))"
check 'sum(switchyard_requests_total{outcome="ok"})' "$n"
check 'sum(switchyard_requests_total{outcome="error"})' 1
check 'sum(switchyard_requests_total{outcome=~"cancelled|rejected|timeout"})' 0
check 'sum(switchyard_num_requests_running)' 0
check 'sum(switchyard_num_requests_waiting)' 0
check 'sum(switchyard_kv_pages_free)' "$kv_pages"
check 'sum(switchyard_kv_pages_used)' 0
drafts=$(q 'sum(switchyard_mtp_draft_tokens_total)')
accepted=$(q 'sum(switchyard_mtp_accepted_tokens_total)')
python3 -c 'import sys; d, a = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if d > 0 and 0 <= a <= d else 1)' \
  "$drafts" "$accepted" || fail "MTP counters: $accepted accepted of $drafts drafts"
echo "ok: MTP accepted $accepted of $drafts drafts"
# The histograms' quantiles are answerable (what the dashboards ask).
p50=$(q 'histogram_quantile(0.5, sum by (le) (switchyard_time_to_first_token_seconds_bucket))')
python3 -c 'import sys; v = float(sys.argv[1]); sys.exit(0 if 0 < v < 60 else 1)' "$p50" || fail "TTFT p50 is $p50"
echo "ok: TTFT p50 ${p50} s"

kill -TERM "$prom"
kill -TERM "$sup"
wait_until 15 all_gone "$sup" "$prom" $child_pids || fail "processes left after SIGTERM"
echo "PASS: serving_metrics_test in $((SECONDS - t0)) s"
