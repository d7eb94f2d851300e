#!/usr/bin/env bash
# A cluster across three "hosts" (issue 9): network namespaces joined by veth pairs and a bridge
# (deploy/netns/cluster.sh), each node at its host's own address, over UCX tcp:
#   host 1: router (+ load_stats, controller)   host 2: prefill0, decode0   host 3: expert0, expert1
# The config is a real multi-host one (deploy/netns/three-hosts.toml: one address per host, the
# same ports on every host), started with `cluster.sh serve`, the client (yardctl) outside.
#  1. Greedy outputs and logits through the cluster API equal the single-process engine's.
#  2. Cutting host 3's link (`ip link set <its veth> down`, a pulled cable: no packet, no reset)
#     while a request generates: the client gets the documented error (docs/deployment.md "When a
#     host drops off the network") within 5 s: decode's expert call times out after 4 s and the
#     request fails (yardctl exit 1) naming the silent expert hosts; the router counts it as
#     failed, no node stops. With the link back up, a new request is served correctly again.
# Root only (ip netns); skips with exit 77 otherwise. Needs SY_BUILD_DIR (ctest sets it). Every
# wait is bounded; a trap stops what it started and removes the namespaces.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "SKIP: switchyard or yardctl not built"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: netns_cluster_test needs root (network namespaces)"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-netns-test.XXXXXX")
netns="$root/deploy/netns/cluster.sh"
export SY_NETNS_PREFIX="syn$((RANDOM % 10000))" SY_NETNS_SUBNET="10.78.$((RANDOM % 250))"
netns_up=0
serve_pid=
cleanup() {
  [ -z "$serve_pid" ] || kill -TERM "$serve_pid" 2>/dev/null || true
  [ -z "$serve_pid" ] || wait_until 10 all_gone "$serve_pid" 2>/dev/null || true
  pkill -KILL -f "$work/cluster.toml" 2>/dev/null || true
  [ "$netns_up" -eq 0 ] || "$netns" down || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"

model=$(tiny_model)
[ -n "$model" ] || { echo "SKIP: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
prompts=("${prompts[@]:0:6}")
make_reference

netns_up=1
"$netns" up 3 >"$work/netns.log" 2>&1 || { echo "SKIP: cannot make network namespaces here: $(tail -n 1 "$work/netns.log")"; exit 77; }
h1=$("$netns" address 1) h2=$("$netns" address 2) h3=$("$netns" address 3)
# The sample with this run's addresses and model.
sed -e "s|10\.77\.0\.11|$h1|g; s|10\.77\.0\.12|$h2|g; s|10\.77\.0\.13|$h3|g" \
    -e "s|^path = .*|path = \"$model\"|; s|^kv_pages = .*|kv_pages = 256|" \
    "$root/deploy/netns/three-hosts.toml" >"$work/cluster.toml"

t0=$SECONDS
mkdir -p "$work/netns.dumps"
SWITCHYARD="$sy" SY_DUMP_LOGITS_DIR="$work/netns.dumps" UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n \
  setsid "$netns" serve "$work/cluster.toml" >"$work/nodes.out" 2>"$work/nodes.err" &
serve_pid=$!
nodes=$(grep -c '^\[\[node\]\]' "$work/cluster.toml")
all_ready() { [ "$(grep -c ' ready (roles' "$work/nodes.out" 2>/dev/null)" -eq "$nodes" ]; }
wait_until 60 all_ready || fail "netns: not all $nodes nodes ready within 60 s"
health() { curl -fsS --max-time 2 "http://$h1:8000/health" 2>/dev/null | grep -q '"status":"ok"'; }
wait_until 5 health || fail "netns: the router's /health is not ok with every node up"
echo "netns: $nodes nodes ready on 3 hosts ($h1 $h2 $h3) in $((SECONDS - t0)) s"

address="$h1:7433"
check_prompts netns
echo "netns: ${#prompts[@]} prompts across 3 hosts token-identical, logits bitwise equal"

echo "== cutting host 3's link (expert0, expert1) while a request generates"
"$yardctl" --address "$address" generate --prompt "long generation" --max-tokens 4000 \
  >"$work/long.txt" 2>"$work/long.err" &
long_pid=$!
decoding() { curl -fsS --max-time 1 "http://$h2:19401/metrics" 2>/dev/null | grep -Eq '^switchyard_num_requests_running [1-9]'; }
wait_until 20 decoding || fail "decode0 never ran the long request: $(cat "$work/long.err")"
lines_before=$(wc -l <"$work/nodes.err")
ip link set "${SY_NETNS_PREFIX}v3" down
cut_ms=$(date +%s%3N)
wait_until 6 all_gone "$long_pid" || fail "the client saw nothing within 6 s of the cut: $(cat "$work/long.err")"
gone_ms=$(date +%s%3N)
rc=0
wait "$long_pid" || rc=$?
echo "client: yardctl exit $rc $((gone_ms - cut_ms)) ms after the cut: $(cat "$work/long.err")"
# The poll adds up to 0.1 s; the bound is the issue's 5 s.
[ $((gone_ms - cut_ms)) -le 5000 ] || fail "the client's request ended $((gone_ms - cut_ms)) ms after the cut (bound: 5 s)"
echo "node logs since the cut:"
tail -n +"$((lines_before + 1))" "$work/nodes.err" | sed 's/^/  /'
[ "$rc" -eq 1 ] || fail "yardctl exit $rc for the cut request (expected 1: the request failed; docs/deployment.md)"
grep -Eq "^yardctl generate: internal: decode node decode0: layer [0-9]+: expert host\(s\) (expert0|expert1|expert0, expert1) did not answer within 4000 ms$" \
  "$work/long.err" || fail "the client's error is not the documented one: $(cat "$work/long.err")"
# While cut, the router still answers and counts the failure, and every node keeps running
# (a pulled cable is not a lost peer: no reset reaches anyone; docs/deployment.md).
"$yardctl" --address "$address" status >"$work/status.txt" 2>&1 || fail "the router stopped answering while host 3 was cut"
grep -q "requests   completed ${#prompts[@]}, cancelled 0, failed 1," "$work/status.txt" ||
  fail "yardctl status does not count the failed request: $(cat "$work/status.txt")"
alive "$serve_pid" && [ "$(pgrep -fc "$work/cluster.toml")" -ge "$nodes" ] || fail "node processes stopped after the cut"

ip link set "${SY_NETNS_PREFIX}v3" up
t0=$SECONDS
served_again() {
  "$yardctl" --address "$address" generate --prompt "${prompts[0]}" --max-tokens "$max_tokens" >"$work/after.txt" \
    2>"$work/after.err" && cmp -s "$work/after.txt" "$work/ref/1.txt"
}
wait_until 30 served_again || fail "no correct answer within 30 s of restoring the link: $(cat "$work/after.err")"
echo "link restored: a new request served correctly after $((SECONDS - t0)) s"

kill -TERM "$serve_pid"
wait_until 20 all_gone "$serve_pid" || fail "cluster.sh serve still running 20 s after SIGTERM"
serve_pid=
no_nodes() { ! pgrep -f "$work/cluster.toml" >/dev/null; }
wait_until 10 no_nodes || fail "node processes left after stopping: $(pgrep -af "$work/cluster.toml")"
echo "netns cluster test passed"
