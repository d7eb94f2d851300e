#!/usr/bin/env bash
# System test of the node skeleton: real `switchyard serve` processes over UCX tcp on loopback,
# started by `switchyard local` (apps/switchyard/local_command.cpp).
#  1. a 4-node cluster (router, prefill0, decode0, decode1 on free ports) becomes ready; 4 serve
#     children exist; SIGTERM to the supervisor stops every child within 10 s (no orphans), exit 0;
#  2. SIGKILL of one decode child: the supervisor reports it (name, pid, signal 9) and the
#     cluster goes on (decode0 still hosts the role); SIGKILL of the last decode child: reported,
#     the others stopped, exit 1 (no node left for a role);
#  3. SIGKILL of the supervisor itself: PR_SET_PDEATHSIG stops every child within 10 s;
#  4. a node whose peers never come up fails after its peer timeout naming "peer X at ADDR".
# Needs SY_BUILD_DIR (ctest sets it). Every wait is bounded; a trap kills what it started.
set -euo pipefail

bin="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
[ -x "$bin" ] || { echo "skip: $bin is not built"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-local-test.XXXXXX")
started=()  # pids to kill on the way out

cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # Children are in their own process groups; kill any that a failure left behind.
  for pid in $(cat "$work"/*.pids 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"

ready_seen() { grep -qs 'cluster "local" ready: 4 nodes' "$1"; }

# Starts `switchyard local --config` in the background; sets sup and child_pids; waits for ready.
start_cluster() {
  local tag=$1
  "$bin" local --config "$work/cluster.toml" --stop-timeout 8 >"$work/$tag.out" 2>"$work/$tag.err" &
  sup=$!
  started+=("$sup")
  wait_until 60 ready_seen "$work/$tag.out" || fail "$tag: cluster not ready within 60 s"
  alive "$sup" || fail "$tag: supervisor died"
  # The pids the supervisor printed, checked against the process table.
  child_pids=$(sed -n 's/^switchyard local: started \([a-z0-9]*\) pid \([0-9]*\) .*/\2/p' "$work/$tag.out" | tr '\n' ' ')
  echo "$child_pids" >"$work/$tag.pids"
  [ "$(echo "$child_pids" | wc -w)" -eq 4 ] || fail "$tag: expected 4 started lines, got: $child_pids"
  local listed
  listed=$(pgrep -P "$sup" | sort | tr '\n' ' ')
  [ "$(echo "$listed" | wc -w)" -eq 4 ] || fail "$tag: expected 4 children of $sup, pgrep says: $listed"
  for pid in $child_pids; do
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q " serve --config $work/cluster.toml --node " ||
      fail "$tag: pid $pid is not a serve child: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
  done
}

pid_of() { sed -n "s/^switchyard local: started $2 pid \([0-9]*\) .*/\1/p" "$work/$1.out"; }

# A 4-node config on free loopback ports (the supervisor binds port 0 to find them), serving the
# tiny model.
model=$(tiny_model)
[ -n "$model" ] || { echo "local_cluster_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
"$bin" local --model "$model" --prefill 1 --decode 2 --rpc-port 0 --http-port 0 --kv-pages 64 --write-config "$work/cluster.toml" >/dev/null
[ "$(grep -c '^\[\[node\]\]' "$work/cluster.toml")" -eq 4 ] || fail "generated config has not 4 nodes"

t0=$SECONDS
echo "== 1. ready, 4 serve children, SIGTERM stops all"
start_cluster sigterm
grep -q '^\[decode1\] node decode1 ready (roles decode, peers router prefill0 decode0)$' "$work/sigterm.out" ||
  fail "no ready line from decode1"
kill -TERM "$sup"
wait_until 15 all_gone "$sup" || fail "supervisor still running 15 s after SIGTERM"
wait "$sup" && rc=0 || rc=$?
[ "$rc" -eq 0 ] || fail "supervisor exit status $rc after SIGTERM (expected 0)"
# shellcheck disable=SC2086
wait_until 10 all_gone $child_pids || fail "serve children left after SIGTERM: $child_pids"
grep -q 'all nodes stopped' "$work/sigterm.out" || fail "no 'all nodes stopped'"
echo "ok ($((SECONDS - t0)) s)"

t0=$SECONDS
echo "== 2. SIGKILL of a decode child: reported, the cluster goes on; of the last one: all stopped, exit 1"
start_cluster childkill
victim=$(pid_of childkill decode1)
kill -KILL "$victim"
survived() { grep -qs "node decode1 (pid $victim) was killed by signal 9 (Killed); the cluster goes on without it" "$work/childkill.err"; }
wait_until 10 survived || fail "the supervisor did not report decode1's death as survivable"
alive "$sup" || fail "the supervisor stopped after losing one of two decode nodes"
victim=$(pid_of childkill decode0)
kill -KILL "$victim"
wait_until 20 all_gone "$sup" || fail "supervisor still running 20 s after the last decode child was killed"
wait "$sup" && rc=0 || rc=$?
[ "$rc" -eq 1 ] || fail "supervisor exit status $rc after a child died (expected 1)"
grep -q "node decode0 (pid $victim) was killed by signal 9 .* while the cluster was running" "$work/childkill.err" ||
  fail "the supervisor did not report decode0's death"
# shellcheck disable=SC2086
wait_until 10 all_gone $child_pids || fail "serve children left after a child died: $child_pids"
echo "ok ($((SECONDS - t0)) s)"

t0=$SECONDS
echo "== 3. SIGKILL of the supervisor: children stop by themselves (PR_SET_PDEATHSIG)"
start_cluster supkill
kill -KILL "$sup"
wait "$sup" 2>/dev/null || true
# shellcheck disable=SC2086
wait_until 10 all_gone $child_pids || fail "serve children orphaned after the supervisor was killed: $child_pids"
echo "ok ($((SECONDS - t0)) s)"

t0=$SECONDS
echo "== 4. a peer that never comes up is named after the peer timeout"
sed 's/^peer_timeout_s = .*/peer_timeout_s = 2/' "$work/cluster.toml" >"$work/short.toml"
router_addr=$(awk '/^name = .router./{f=1} f && /^transport_port/{print "127.0.0.1:" $3; exit}' "$work/short.toml")
export UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n
# decode0 sorts first among the names, so it dials every other node; none is up.
rc=0
timeout 30 "$bin" serve --config "$work/short.toml" --node decode0 >"$work/alone.out" 2>"$work/alone.err" || rc=$?
[ "$rc" -eq 1 ] || fail "lonely decode0 exit status $rc (expected 1)"
grep -q "switchyard serve: node decode0: timed out after 2 s waiting for peer router at $router_addr (not reachable" \
  "$work/alone.err" || fail "no 'waiting for peer router at $router_addr' error"
[ ! -s "$work/alone.out" ] || fail "a node that never got ready printed to stdout"
echo "ok ($((SECONDS - t0)) s)"

echo "local cluster system test passed"
