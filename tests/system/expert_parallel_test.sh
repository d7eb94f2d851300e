#!/usr/bin/env bash
# System test of expert parallelism: `switchyard local --expert-hosts 4 --redundant-experts R`
# on the tiny model (router + load_stats, prefill0, decode0, expert0..3 as separate processes over
# real UCX on loopback). Every MoE layer's routed experts run on the expert hosts.
#  1. Determinism, over UCX tcp and over shared memory (UCX_TLS=sm,tcp), redundant 4: 16 prompts
#     give exactly the single-process `switchyard generate` text, and dumped logits are bitwise
#     equal; load_stats' switchyard_expert_tokens_total sums, per MoE layer, to exactly
#     tokens x top-k (tokens = prompt tokens + generated tokens - 1 per request: the last
#     generated token is never fed back). Then the 16 prompts at once (decode steps split into
#     two micro-batches whose expert traffic overlaps the other half's attention): same texts.
#     With Debian's prometheus (tcp pass): scraping the cluster, Prometheus sees the same
#     per-layer expert token sums and a switchyard_eplb_balancedness series for every MoE layer
#     (the controller runs a round every second), and dispatch/combine latency samples.
#  2. Failure (tcp), redundant 32 (every expert on two hosts): kill -9 of one expert host while
#     requests generate: each completes (through the surviving replicas) with the single-process
#     text or fails with a clear error within 5 s; new requests are then served correctly.
# Needs SY_BUILD_DIR (ctest sets it). Every wait is bounded; a trap kills what it started.
set -euo pipefail

sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "expert_parallel_test: SKIPPED: switchyard or yardctl not built"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-ep-test.XXXXXX")
started=()
cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $(cat "$work"/*.pids 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"
model=$(tiny_model)
[ -n "$model" ] || { echo "expert_parallel_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
make_reference

read -r top_k moe_layers < <(python3 -c "
import json, sys
c = json.load(open(sys.argv[1] + '/config.json'))
n = c['num_hidden_layers'] + c.get('num_nextn_predict_layers', 0)
moe = [l for l in range(c['num_hidden_layers']) if l >= c['first_k_dense_replace'] and l % c.get('moe_layer_freq', 1) == 0]
print(c['num_experts_per_tok'], ','.join(map(str, moe)))" "$model")

# expert_tokens_by_layer PORT: "layer=sum ..." of switchyard_expert_tokens_total on that node.
expert_tokens_by_layer() {
  curl -fsS "http://127.0.0.1:$1/metrics" | python3 -c "
import sys, collections
s = collections.Counter()
for line in sys.stdin:
    if line.startswith('switchyard_expert_tokens_total{'):
        labels, value = line.rsplit(' ', 1)
        s[int(labels.split('layer=\"')[1].split('\"')[0])] += int(float(value))
print(' '.join(f'{l}={s[l]}' for l in sorted(s)))"
}

# through_prometheus TAG EXPECTED: a real Prometheus scraping the cluster (the scrape config
# `switchyard local` wrote) agrees with load_stats and shows balancedness for every MoE layer.
through_prometheus() {
  local tag=$1 expected=$2 scrape port
  command -v prometheus >/dev/null || { echo "$tag: prometheus not installed; its check skipped"; return 0; }
  scrape=$(sed -n 's/^switchyard local: prometheus scrape config //p' "$work/$tag.out")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  prometheus --config.file="$scrape" --storage.tsdb.path="$work/$tag.tsdb" --web.listen-address="127.0.0.1:$port" \
    >"$work/$tag.prometheus.log" 2>&1 &
  started+=($!)
  local prom=$!
  query() {
    curl -fsS --max-time 2 --get "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
      python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
r.sort(key=lambda x: int(x["metric"].get("layer", 0)))
print(" ".join(x["metric"].get("layer", "") + "=" + str(int(float(x["value"][1]))) for x in r))' 2>/dev/null || true
  }
  sums() { [ "$(query 'sum by (layer) (switchyard_expert_tokens_total)')" = "$expected" ]; }
  wait_until 30 sums || fail "$tag: prometheus per-layer expert tokens '$(query 'sum by (layer) (switchyard_expert_tokens_total)')', expected '$expected'"
  local want_layers have_layers
  want_layers=$(python3 -c "
import json, sys
c = json.load(open(sys.argv[1] + '/config.json'))
n = c['num_hidden_layers'] + c.get('num_nextn_predict_layers', 0)
print(sum(1 for l in range(n) if l >= c['first_k_dense_replace'] and l % c.get('moe_layer_freq', 1) == 0))" "$model")
  balanced() { have_layers=$(query 'count by (layer) (switchyard_eplb_balancedness)' | wc -w); [ "$have_layers" -eq "$want_layers" ]; }
  wait_until 30 balanced || fail "$tag: switchyard_eplb_balancedness covers $have_layers of $want_layers MoE layers"
  # Every expert host reports a load per slot it holds (rows per second over its report period).
  # (each host is scraped on its own schedule: wait until every one has been).
  local slot_series
  all_slots() { slot_series=$(query 'count(switchyard_expert_slot_load_tokens)'); [ "$slot_series" = "=36" ]; }
  wait_until 30 all_slots || fail "$tag: switchyard_expert_slot_load_tokens has $slot_series series, 36 slots expected"
  # Workers time every layer call's dispatch and combine.
  local calls
  calls=$(query 'sum(switchyard_moe_dispatch_seconds_count) + 0 * sum(switchyard_moe_combine_seconds_count)')
  [ "${calls#=}" -gt 0 ] 2>/dev/null || fail "$tag: no dispatch/combine latency samples in prometheus ($calls)"
  echo "$tag: prometheus agrees ($expected), has balancedness for all $want_layers MoE layers and ${calls#=} timed layer calls"
  kill -TERM "$prom"
}

determinism() {
  local tag=$1 t0=$SECONDS
  start_cluster "$tag" 7 --prefill 1 --decode 1 --expert-hosts 4 --redundant-experts 4 --rebalance-interval 1
  check_prompts "$tag"
  echo "$tag: ${#prompts[@]} prompts through 4 expert hosts token-identical, logits bitwise equal ($((SECONDS - t0)) s)"
  # Tokens that went through every MoE layer: prompt + generated - 1 per request.
  local tokens=0 n p g
  for n in $(seq 1 "${#prompts[@]}"); do
    read -r g p < <(sed -n 's/^tokens \([0-9]*\) (prompt \([0-9]*\)).*/\1 \2/p' "$work/$tag.$n.err")
    tokens=$((tokens + p + g - 1))
  done
  local port expected="" layer
  port=$(sed -n 's/^switchyard local:   router .* metrics 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/$tag.out")
  for layer in ${moe_layers//,/ }; do expected+="$layer=$((tokens * top_k)) "; done
  expected=${expected% }
  counts_match() { [ "$(expert_tokens_by_layer "$port")" = "$expected" ]; }
  wait_until 10 counts_match ||
    fail "$tag: load_stats per-layer tokens '$(expert_tokens_by_layer "$port")', expected '$expected' ($tokens tokens x top-$top_k)"
  echo "$tag: load_stats counts $expected (= $tokens tokens x top-$top_k per MoE layer)"
  [ "$tag" = tcp ] && through_prometheus "$tag" "$expected"
  # All at once: decode steps over many sequences split into two micro-batches (overlap on).
  check_concurrent "$tag"
  echo "$tag: ${#prompts[@]} concurrent prompts identical with two-micro-batch overlap ($((SECONDS - t0)) s)"
  stop_cluster
}

export UCX_NET_DEVICES=lo UCX_WARN_UNUSED_ENV_VARS=n
UCX_TLS=tcp determinism tcp
UCX_TLS=sm,tcp determinism sm

echo "== kill -9 of an expert host mid-generation (tcp, every expert on two hosts)"
export UCX_TLS=tcp
start_cluster kill 7 --prefill 1 --decode 1 --expert-hosts 4 --redundant-experts 32
long=()
for k in 1 2 3 4; do
  "$yardctl" --address "$address" generate --prompt "${prompts[$k]}" --max-tokens 200 >"$work/long$k.txt" \
    2>"$work/long$k.err" &
  long+=($!)
done
sleep 1
victim=$(sed -n 's/^switchyard local: started expert1 pid \([0-9]*\) .*/\1/p' "$work/kill.out")
kill -KILL "$victim"
killed_at=$SECONDS
for k in 1 2 3 4; do
  rc=0
  wait "${long[$((k - 1))]}" || rc=$?
  if [ "$rc" -eq 0 ]; then
    grep -q "finish length" "$work/long$k.err" || fail "request $k ended oddly: $(cat "$work/long$k.err")"
    "$sy" generate --model "$model" --prompt "${prompts[$k]}" --max-tokens 200 >"$work/long$k.ref" 2>/dev/null
    cmp -s "$work/long$k.txt" "$work/long$k.ref" || fail "request $k completed across the kill with different text"
  else
    grep -q "expert" "$work/long$k.err" || fail "request $k failed without naming the expert problem: $(cat "$work/long$k.err")"
    [ $((SECONDS - killed_at)) -le 5 ] || fail "request $k failed only $((SECONDS - killed_at)) s after the kill"
  fi
  echo "request $k: exit $rc: $(tail -n 1 "$work/long$k.err")"
done
alive "$sup" || fail "the supervisor stopped after losing one expert host"
"$yardctl" --address "$address" generate --prompt "${prompts[0]}" --max-tokens "$max_tokens" >"$work/after.txt" \
  2>"$work/after.err" || fail "a new request after the kill failed: $(cat "$work/after.err")"
cmp -s "$work/after.txt" "$work/ref/1.txt" || fail "after the kill: '$(cat "$work/after.txt")' differs"
echo "a new request after the kill was served correctly by the surviving replicas"
stop_cluster
echo "expert parallel system test passed"
