#!/usr/bin/env bash
# System test of live expert rebalancing (the controller, DESIGN.md "Placement, epochs,
# migration"): a local cluster on the tiny model (router + load_stats + controller, prefill0,
# decode0, expert0..3; every expert on two hosts) with a round every second, no gain threshold and
# the "balanced" placement policy, under continuous load (16 concurrent greedy streams, over and over).
#  1. At least 5 rounds complete (each a new epoch: stage, commit, release) while it serves: zero
#     failed requests, every text equal to the single-process engine's, and each round's
#     predicted balancedness is at least the one before it.
#  1b. Inter-token latency with migrations running (a loop importing two placements that differ
#     in 16 slots per layer, as fast as rounds complete) against automatic rounds paused, in
#     alternating phases of 16 concurrent 64-token streams: p99 with <= 1.5 x p99 without,
#     measured from the clients' token arrival times (yardctl generate --json).
#  2. Kill the receiving host in the middle of a migration (expert hosts hold their stage ack
#     back 3 s, a test seam): the round fails and rolls back, requests keep completing through the
#     replicas, and after the host is started again the next round completes.
# Needs SY_BUILD_DIR (ctest sets it). Every wait is bounded; a trap kills what it started.
set -euo pipefail

sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "rebalance_test: SKIPPED: switchyard or yardctl not built"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-rebalance-test.XXXXXX")
started=()
cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  pkill -KILL -f "$work/cluster.toml" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"
model=$(tiny_model)
[ -n "$model" ] || { echo "rebalance_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
make_reference
export UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n
export SY_ADMIN_TOKEN=rebalance-test-token

"$sy" local --model "$model" --prefill 1 --decode 1 --expert-hosts 4 --redundant-experts 32 --rebalance-interval 1 \
  --rpc-port 0 --http-port 0 --kv-pages 256 --write-config "$work/cluster.toml" >/dev/null
# No gain threshold (every round with moves migrates); the "balanced" placement policy.
sed -i 's/^threshold = .*/threshold = 0/; s/^stage_delay_ms = .*/stage_delay_ms = 0/; s/^policy = .*/policy = "balanced"/' \
  "$work/cluster.toml"

run_cluster() {  # TAG: starts `switchyard local --config`, sets sup and address
  local tag=$1
  "$sy" local --config "$work/cluster.toml" --stop-timeout 8 >"$work/$tag.out" 2>"$work/$tag.err" &
  sup=$!
  started+=("$sup")
  ready() { grep -qs 'cluster "local" ready: 7 nodes' "$work/$tag.out"; }
  wait_until 60 ready || fail "$tag: cluster not ready within 60 s"
  address=$(sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/$tag.out")
}

# load TAG ROUND: the 16 prompts at once; every one must succeed with the reference text.
load() {
  local tag=$1 round=$2 pids=() i
  for i in "${!prompts[@]}"; do
    "$yardctl" --address "$address" generate --prompt "${prompts[$i]}" --max-tokens "$max_tokens" \
      >"$work/$tag.$round.$i.txt" 2>"$work/$tag.$round.$i.err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || fail "$tag: round $round prompt $((i + 1)) failed: $(cat "$work/$tag.$round.$i.err")"
    cmp -s "$work/$tag.$round.$i.txt" "$work/ref/$((i + 1)).txt" ||
      fail "$tag: round $round prompt $((i + 1)) differs during rebalancing: '$(cat "$work/$tag.$round.$i.txt")'"
  done
}

echo "== 1. rounds under load"
t0=$SECONDS
run_cluster live
completed() { grep -c 'controller: epoch [0-9]* installed' "$work/${1:-live}.err" || true; }
round=0
while [ "$(completed)" -lt 5 ]; do
  [ $((SECONDS - t0)) -lt 150 ] || fail "only $(completed) rounds completed in 150 s"
  round=$((round + 1))
  load live "$round"
done
requests=$((round * ${#prompts[@]}))
echo "$(completed) rounds completed while $requests requests ran, all with the single-process text ($((SECONDS - t0)) s)"
grep -q 'round failed' "$work/live.err" && fail "a round failed: $(grep 'round failed' "$work/live.err")"
# Each round's balancedness (predicted from the window's load): never worse after than before.
sed -n 's/.*controller: round for epoch [0-9]* ([a-z-]*): [0-9]* moves ([0-9.]* MiB), balancedness \([0-9.]*\) -> \([0-9.]*\);.*/\1 \2/p' \
  "$work/live.err" >"$work/balancedness.txt"
[ "$(wc -l <"$work/balancedness.txt")" -ge 5 ] || fail "fewer than 5 rounds logged their balancedness"
while read -r before after; do
  python3 -c "import sys; sys.exit(0 if float('$after') >= float('$before') else 1)" ||
    fail "a round lowered balancedness: $before -> $after"
done <"$work/balancedness.txt"
grep 'controller: round for epoch' "$work/live.err" | sed 's/.*controller: /  /' | head -8

echo "== 1b. inter-token latency during migrations"
y() { "$yardctl" --address "$address" "$@"; }
y pause >/dev/null
y placement --export "$work/a.json" 2>/dev/null
python3 - "$work/a.json" "$work/b.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
half = p["slots"] // 2  # slot s and slot s + half sit on different hosts
for layer in p["layers"]:
    row = layer["phy2log"]
    for s in range(8):
        row[s], row[s + half] = row[s + half], row[s]
json.dump(p, open(sys.argv[2], "w"))
PY
streams() {  # PHASE: 16 concurrent 64-token streams with their push times
  local phase=$1 pids=() i
  for i in "${!prompts[@]}"; do
    y generate --prompt "${prompts[$i]}" --max-tokens 64 --no-stop-at-eos --json >"$work/itl.$phase.$i.json" \
      2>"$work/itl.$phase.$i.err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || fail "itl $phase: stream $i failed: $(cat "$work/itl.$phase.$i.err")"; done
}
migrating() {  # runs imports back and forth until $work/stop-migrating exists
  local n=0
  while [ ! -e "$work/stop-migrating" ] && [ -d "$work" ]; do
    for f in b a; do
      y import "$work/$f.json" --json >"$work/import.$n.json" 2>&1 || true
      n=$((n + 1))
    done
  done
}
for phase in quiet1 migrating1 quiet2 migrating2; do
  if [[ $phase == migrating* ]]; then
    rm -f "$work/stop-migrating"
    migrating &
    migrator=$!
    started+=("$migrator")  # a failure below must not leave it running
    streams "$phase"
    touch "$work/stop-migrating"
    wait "$migrator"
  else
    streams "$phase"
  fi
done
python3 - "$work" <<'PY' || fail "inter-token latency during migrations above 1.5x"
import glob, json, os, sys
work = sys.argv[1]
def samples(kind):
    out = []
    for f in glob.glob(os.path.join(work, f"itl.{kind}*.json")):
        pushes = json.load(open(f))["pushes"]
        for (t0, _), (t1, n) in zip(pushes, pushes[1:]):
            if n > 0:
                out += [(t1 - t0) / n] * n
    return sorted(out)
def p99(v):
    return v[min(len(v) - 1, int(0.99 * len(v)))]
quiet, moving = samples("quiet"), samples("migrating")
done = 0
for f in glob.glob(os.path.join(work, "import.*.json")):
    try:
        done += json.load(open(f))["round"]["outcome"] == "completed"
    except (ValueError, KeyError):
        pass
ratio = p99(moving) / p99(quiet)
print(f"inter-token latency p99: {p99(quiet):.1f} ms paused, {p99(moving):.1f} ms while {done} migrations "
      f"completed ({len(quiet)} and {len(moving)} samples): ratio {ratio:.2f}")
sys.exit(0 if done >= 2 and ratio <= 1.5 else 1)
PY
kill -TERM "$sup"
wait_until 20 all_gone "$sup" || fail "supervisor still running 20 s after SIGTERM"

echo "== 2. the receiving host killed during a migration"
sed -i 's/^stage_delay_ms = .*/stage_delay_ms = 3000/' "$work/cluster.toml"
run_cluster kill
load kill 0  # load in the window, so the next round has something to balance
staging() { grep -qs 'controller: round for epoch .*; staging' "$work/kill.err"; }
wait_until 30 staging || fail "no round started"
victim=$(sed -n 's/^switchyard local: started expert1 pid \([0-9]*\) .*/\1/p' "$work/kill.out")
kill -KILL "$victim"
rolled_back() { grep -qs 'controller: round failed: stage: .*expert1.*rolled back to epoch' "$work/kill.err"; }
wait_until 10 rolled_back || fail "the round did not roll back: $(grep controller "$work/kill.err" | tail -5)"
grep 'controller: round failed' "$work/kill.err" | head -1 | sed 's/.*controller: /  /'
load kill 1  # serving goes on through the replicas on the other hosts
echo "requests after the failed round completed through the replicas"
before=$(completed kill)
"$sy" serve --config "$work/cluster.toml" --node expert1 >"$work/expert1.out" 2>"$work/expert1.err" &
started+=($!)
host_back() { grep -qs '^node expert1 ready' "$work/expert1.out"; }
wait_until 60 host_back || fail "expert1 did not come back: $(tail -5 "$work/expert1.err")"
load kill 2
next_round() { [ "$(completed kill)" -gt "$before" ]; }
wait_until 40 next_round || fail "no round completed after expert1 came back: $(grep controller "$work/kill.err" | tail -5)"
load kill 3
echo "after expert1 came back the next round completed: $(grep 'controller: epoch [0-9]* installed' "$work/kill.err" | tail -1 | sed 's/.*controller: //')"
echo "rebalance system test passed"
