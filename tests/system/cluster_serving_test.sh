#!/usr/bin/env bash
# System test of the disaggregated cluster (issue: transport and the disaggregated cluster):
# separate `switchyard serve` processes (router, prefill0, decode0, decode1) started by
# `switchyard local` on the tiny model, talking over real UCX on loopback.
#  1. Determinism, once over UCX tcp and once over shared memory (UCX_TLS=sm,tcp): 16 prompts
#     through the cluster API (yardctl generate, greedy) give exactly the text of the
#     single-process `switchyard generate`, and the logits every node dumps (SY_DUMP_LOGITS_DIR:
#     prefill writes row 0, decode the rest) are bitwise equal to `generate --dump-logits`.
#     The same 16 prompts sent at once (continuous batching across both decode nodes) give the
#     same texts again.
#     With root (CI), once more with every node in its own network namespace, its own address on
#     a veth pair joined by a bridge (deploy/netns/cluster.sh), the client outside them all.
#  2. Failure (tcp, where UCX notices a dead peer): kill -9 of a decode node while it generates;
#     the client gets a retryable error (yardctl exit 4) naming the node within 5 s, and a new
#     request is served by the other decode node with the right text.
# Needs SY_BUILD_DIR (ctest sets it). Every wait is bounded; a trap kills what it started.
set -euo pipefail

sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "cluster_serving_test: SKIPPED: switchyard or yardctl not built"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-cluster-test.XXXXXX")
started=()
netns=$(cd "$(dirname "$0")/../.." && pwd)/deploy/netns/cluster.sh
export SY_NETNS_PREFIX="syt$((RANDOM % 10000))" SY_NETNS_SUBNET="10.79.$((RANDOM % 250))"
netns_up=0
cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # Nodes started in namespaces (their pids are in `started`; this catches any a failure left).
  pkill -KILL -f "$work/netns.toml" 2>/dev/null || true
  [ "$netns_up" -eq 0 ] || "$netns" down || true
  for pid in $(cat "$work"/*.pids 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"

model=$(tiny_model)
[ -n "$model" ] || { echo "cluster_serving_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
make_reference

determinism() {
  local tag=$1
  local t0=$SECONDS
  start_cluster "$tag" 4 --prefill 1 --decode 2
  check_prompts "$tag"
  echo "$tag: ${#prompts[@]} prompts token-identical, logits bitwise equal ($((SECONDS - t0)) s)"
  # All at once: the decode nodes batch them; the texts must not change.
  check_concurrent "$tag"
  grep -q "requests   completed $((2 * ${#prompts[@]}))," <("$yardctl" --address "$address" status) ||
    fail "$tag: status does not count $((2 * ${#prompts[@]})) completed requests: $("$yardctl" --address "$address" status)"
  echo "$tag: ${#prompts[@]} concurrent prompts identical ($((SECONDS - t0)) s)"
  stop_cluster
}

export UCX_NET_DEVICES=lo UCX_WARN_UNUSED_ENV_VARS=n
UCX_TLS=tcp determinism tcp
UCX_TLS=sm,tcp determinism sm

if [ "$(id -u)" -ne 0 ]; then
  echo "netns: SKIPPED: separate network namespaces need root"
elif ! "$netns" up 4 >"$work/netns.log" 2>&1; then
  netns_up=1
  echo "netns: SKIPPED: cannot make network namespaces here: $(tail -n 1 "$work/netns.log")"
else
  netns_up=1
  t0=$SECONDS
  # The same cluster as `switchyard local` makes, but each node at its own address.
  {
    echo '[cluster]'
    echo 'name = "netns"'
    echo 'peer_timeout_s = 60'
    echo '[model]'
    echo "path = \"$model\""
    echo '[api]'
    echo "rpc = \"$("$netns" address 1):7433\""
    echo '[decode]'
    echo 'kv_pages = 256'
  } >"$work/netns.toml"
  for spec in "1 router router" "2 prefill0 prefill" "3 decode0 decode" "4 decode1 decode"; do
    read -r i name role <<<"$spec"
    printf '\n[[node]]\nname = "%s"\nhost = "%s"\ntransport_port = 17400\nmetrics_port = 19400\nroles = ["%s"]\n' \
      "$name" "$("$netns" address "$i")" "$role" >>"$work/netns.toml"
  done
  mkdir -p "$work/netns.dumps"
  for spec in "1 router" "2 prefill0" "3 decode0" "4 decode1"; do
    read -r i name <<<"$spec"
    SY_DUMP_LOGITS_DIR="$work/netns.dumps" UCX_TLS=tcp "$netns" exec "$i" "$sy" serve --config "$work/netns.toml" \
      --node "$name" >"$work/netns.$name.out" 2>"$work/netns.$name.err" &
    started+=($!)
  done
  all_ready() { for n in router prefill0 decode0 decode1; do grep -qs "^node $n ready" "$work/netns.$n.out" || return 1; done; }
  wait_until 60 all_ready || fail "netns: nodes not ready within 60 s"
  address="$("$netns" address 1):7433"
  check_prompts netns
  echo "netns: ${#prompts[@]} prompts token-identical, logits bitwise equal across 4 namespaces ($((SECONDS - t0)) s)"
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait_until 20 all_gone "${started[@]}" || fail "netns: nodes still running 20 s after SIGTERM"
  started=()
  "$netns" down
  netns_up=0
fi

echo "== kill -9 of a decode node mid-generation (tcp)"
export UCX_TLS=tcp
start_cluster kill 4 --prefill 1 --decode 2
# Two long generations: the router spreads them over both decode nodes (free pages).
long_pids=()
for k in 1 2; do
  "$yardctl" --address "$address" generate --prompt "long generation $k" --max-tokens 4000 \
    >"$work/long$k.txt" 2>"$work/long$k.err" &
  long_pids+=($!)
done
# Kill decode1 once it is decoding one of them (its /metrics say so).
metrics_port=$(sed -n 's/^switchyard local:   decode1 .* metrics 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/kill.out")
decoding() { curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -Eq '^switchyard_num_requests_running [1-9]'; }
wait_until 20 decoding || fail "decode1 never ran one of the two long requests: $(cat "$work"/long*.err)"
victim=$(sed -n 's/^switchyard local: started decode1 pid \([0-9]*\) .*/\1/p' "$work/kill.out")
kill -KILL "$victim"
killed_at=$SECONDS
failed_one() {
  for k in 1 2; do grep -qs "decode1" "$work/long$k.err" && return 0; done
  return 1
}
wait_until 5 failed_one || fail "no client saw decode1's loss within 5 s: $(cat "$work"/long*.err)"
echo "a client failed $((SECONDS - killed_at)) s after the kill: $(grep -h decode1 "$work"/long*.err)"
for k in 1 2; do
  if grep -qs decode1 "$work/long$k.err"; then
    rc=0
    wait "${long_pids[$((k - 1))]}" || rc=$?
    [ "$rc" -eq 4 ] || fail "yardctl exit status $rc for the lost request (expected 4: retryable)"
    grep -q "unavailable" "$work/long$k.err" || fail "the error is not 'unavailable': $(cat "$work/long$k.err")"
  else
    kill -TERM "${long_pids[$((k - 1))]}" 2>/dev/null || true  # the survivor: the client goes away
  fi
done
alive "$sup" || fail "the supervisor stopped after losing one decode node"
"$yardctl" --address "$address" generate --prompt "${prompts[0]}" --max-tokens "$max_tokens" >"$work/after.txt" \
  2>"$work/after.err" || fail "a new request after the kill failed: $(cat "$work/after.err")"
cmp -s "$work/after.txt" "$work/ref/1.txt" || fail "after the kill: '$(cat "$work/after.txt")' differs"
echo "a new request after the kill was served correctly"
stop_cluster
echo "cluster serving system test passed"
