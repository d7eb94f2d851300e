#!/usr/bin/env bash
# System test of the cluster API's operator calls (schemas/cluster.capnp) through every yardctl
# subcommand, against a live local cluster on the tiny model (router + load_stats + controller,
# prefill0, decode0, decode1, expert0, expert1; every expert once plus 2 redundant):
#  1. status, generate, load (heat map, --json), placement (table, --json, --export), history,
#     balancing, plan, rebalance, pause/resume, set-interval, set-threshold, pin/unpin, import,
#     drain/undrain, each checked against what the cluster then does.
#  2. Bad input, each with its message and exit code and no effect on serving: no token, a wrong
#     token, a layer that is no MoE layer, an expert out of range, an interval of 0, malformed and
#     incompatible placement files, draining the last decode node, an unknown node.
#  3. 16 clients dropped mid-stream: `status` shows every KV page free within 2 s.
#  4. After all of it, 16 concurrent prompts still give the single-process text.
#  5. Every yardctl example of docs/api.md, as written, shows the text its comment names.
# Needs SY_BUILD_DIR (ctest sets it). Every wait is bounded; a trap kills what it started.
set -euo pipefail

sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "operator_api_test: SKIPPED: switchyard or yardctl not built"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-operator-test.XXXXXX")
started=()
cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"
model=$(tiny_model)
[ -n "$model" ] || { echo "operator_api_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
make_reference
export UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n
export SY_ADMIN_TOKEN=operator-test-token

start_cluster ops 6 --prefill 1 --decode 2 --expert-hosts 2 --redundant-experts 2 --rebalance-interval 2
y() { "$yardctl" --address "$address" "$@"; }
# expect_exit CODE MESSAGE CMD...: CMD exits CODE and prints MESSAGE (a grep -F pattern) on stderr.
expect_exit() {
  local code=$1 message=$2 got=0
  shift 2
  "$@" >"$work/expect.out" 2>"$work/expect.err" || got=$?
  [ "$got" -eq "$code" ] || fail "'$*' exited $got, not $code: $(cat "$work/expect.err")"
  grep -qF -- "$message" "$work/expect.err" || fail "'$*' did not say '$message': $(cat "$work/expect.err")"
}
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

echo "== 1. every subcommand"
y status >"$work/status.txt"
grep -q '^decode1 .*healthy' "$work/status.txt" || fail "status: $(cat "$work/status.txt")"
[ "$(y status --json | json 'len(d["nodes"])')" = 6 ] || fail "status --json: not 6 nodes"
check_concurrent warm  # load for the window, and generate against the reference
y load --color never >"$work/load.txt"
grep -q '^HOST ' "$work/load.txt" && grep -q '^expert1 ' "$work/load.txt" || fail "load table: $(cat "$work/load.txt")"
y load --color always | grep -q $'\e\[48;5;' || fail "load --color always printed no colours"
# The expert hosts report their counts every second or so: wait for the requests above to show.
reported() { y load --json >"$work/load.json" && [ "$(json 'sum(h["tokens"] for h in d["hosts"]) > 0' <"$work/load.json")" = True ]; }
wait_until 10 reported || true
tokens=$(json 'sum(sum(l["tokens"]) for l in d["layers"])' <"$work/load.json")
host_tokens=$(json 'sum(h["tokens"] for h in d["hosts"])' <"$work/load.json")
[ "$tokens" -gt 0 ] && [ "$tokens" = "$host_tokens" ] || fail "load: layer total $tokens vs host total $host_tokens"
echo "load: $tokens expert token rows in the window, the same summed per host"
y placement >"$work/placement.txt"
grep -q '^layer 1' "$work/placement.txt" || fail "placement table: $(head -3 "$work/placement.txt")"
y placement --export "$work/exported.json" 2>/dev/null
[ "$(json 'd["slots"]' <"$work/exported.json")" = 34 ] || fail "exported placement: $(head -c 300 "$work/exported.json")"
y history --json | json 'len(d)' >/dev/null
y balancing | grep -q '^automatic rounds  every 2 s' || fail "balancing: $(y balancing)"
outcome=$(y plan --json | json 'd["round"]["outcome"]')
[ "$outcome" = planned ] || [ "$outcome" = skipped ] || fail "plan: outcome $outcome"
y pause | grep -q '^automatic rounds  paused' || fail "pause"
rounds=$(y history --json | json 'len(d)')
sleep 4.5  # two intervals: no automatic round while paused
[ "$(y history --json | json 'len(d)')" = "$rounds" ] || fail "a round ran while paused"
y set-interval 100 | grep -q 'paused' || fail "set-interval while paused"
y set-threshold 0.25 | grep -q '^threshold         0.25' || fail "set-threshold"
y resume | grep -q '^automatic rounds  every 100 s' || fail "resume"
epoch=$(y placement --json | json 'd["epoch"]')
y rebalance --json >"$work/rebalance.json" || fail "rebalance: $(cat "$work/rebalance.json")"
outcome=$(json 'd["round"]["outcome"]' <"$work/rebalance.json")
case $outcome in
  completed) [ "$(y placement --json | json 'd["epoch"]')" = $((epoch + 1)) ] || fail "rebalance completed, epoch not $((epoch + 1))" ;;
  skipped) ;;
  *) fail "rebalance: $outcome: $(json 'd["round"]["detail"]' <"$work/rebalance.json")" ;;
esac
echo "rebalance: $outcome ($(json 'd["round"]["detail"]' <"$work/rebalance.json"))"
# Pin: slot 0 of layer 2 gets an expert it does not hold now.
held=$(y placement --json | json '[l for l in d["layers"] if l["layer"] == 2][0]["phy2log"][0]')
want=$(((held + 5) % 32))
y pin 2 0 "$want" | grep -q "layer 2 slot 0 -> expert $want" || fail "pin"
y rebalance --json >"$work/pinned.json"
[ "$(json 'd["round"]["outcome"]' <"$work/pinned.json")" = completed ] || fail "round after pin: $(cat "$work/pinned.json")"
[ "$(y placement --json | json '[l for l in d["layers"] if l["layer"] == 2][0]["phy2log"][0]')" = "$want" ] ||
  fail "pinned expert $want is not in layer 2 slot 0"
y unpin 2 0 | grep -q '^pins              none' || fail "unpin"
echo "pin: layer 2 slot 0 holds expert $want after the next round"
# Import: back to the exported placement.
y import "$work/exported.json" --json >"$work/import.json" || fail "import: $(cat "$work/import.json")"
y placement --export "$work/now.json" 2>/dev/null
python3 - "$work/exported.json" "$work/now.json" <<'PY' || fail "the imported placement is not the one served"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
sys.exit(0 if a["layers"] == b["layers"] and b["epoch"] > a["epoch"] else 1)
PY
echo "import: the exported placement is served again at epoch $(json 'd["epoch"]' <"$work/now.json")"
# Drain decode0 while requests run; then it gets no new ones until undrained.
pids=()
for i in 1 2 3 4; do
  y generate --prompt "drain $i" --max-tokens 120 --no-stop-at-eos >/dev/null 2>"$work/drain.$i.err" &
  pids+=($!)
done
sleep 0.5
y drain decode0 >"$work/drain.txt" 2>&1 || fail "drain: $(cat "$work/drain.txt")"
grep -q '^node decode0 drained' "$work/drain.txt" || fail "drain: $(cat "$work/drain.txt")"
[ "$(y status --json | json '[n["draining"] for n in d["nodes"] if n["name"] == "decode0"][0]')" = True ] ||
  fail "status does not show decode0 draining"
for i in "${!pids[@]}"; do wait "${pids[$i]}" || fail "a request failed during the drain: $(cat "$work/drain.$((i + 1)).err")"; done
y undrain decode0 | grep -q 'gets requests again' || fail "undrain"
echo "drain: $(grep "^node decode0 drained" "$work/drain.txt")"

echo "== 2. bad input"
expect_exit 2 "give the admin token" env -u SY_ADMIN_TOKEN "$yardctl" --address "$address" pause
expect_exit 5 "permission denied: wrong admin token" y --admin-token nope pause
expect_exit 1 "layer 0 is not a MoE layer" y pin 0 0 1
expect_exit 1 "expert 99 is outside [0, 32)" y pin 1 0 99
expect_exit 1 "interval 0 s is outside [1, 86400]" y set-interval 0
echo '{"epoch": 1, "experts": ' >"$work/broken.json"
expect_exit 2 "not valid JSON" y import "$work/broken.json"
python3 -c "
import json; p = json.load(open('$work/exported.json')); p['layers'][0]['phy2log'] = [0] * p['slots']
json.dump(p, open('$work/lossy.json', 'w'))"
expect_exit 1 "expert 1 has no slot" y import "$work/lossy.json"
python3 -c "
import json; p = json.load(open('$work/exported.json')); p['hosts'] = ['expert0', 'elsewhere']
json.dump(p, open('$work/hosts.json', 'w'))"
expect_exit 1 "expert hosts differ" y import "$work/hosts.json"
y drain decode0 >/dev/null 2>&1 || fail "drain decode0 again"
expect_exit 1 "decode1 is the last decode node not drained" y drain decode1
y undrain decode0 >/dev/null
expect_exit 1 'no node named "nowhere"' y drain nowhere
expect_exit 1 "only workers drain" y drain expert0
echo "bad input: each refused with its message"

echo "== 3. dropped streams free their KV pages"
pids=()
for i in $(seq 16); do
  "$yardctl" --address "$address" generate --prompt "stream $i" --max-tokens 400 --no-stop-at-eos \
    >"$work/drop.$i.txt" 2>/dev/null &
  pids+=($!)
done
streaming() { local n=0 f; for f in "$work"/drop.*.txt; do [ -s "$f" ] && n=$((n + 1)); done; [ "$n" -eq 16 ]; }
wait_until 30 streaming || fail "the 16 streams did not all start"
used=$(y status --json | json 'd["kv_pages"]["used"]')
[ "$used" -gt 0 ] || fail "no KV pages in use while 16 streams run"
kill -KILL "${pids[@]}" 2>/dev/null
t0=$(date +%s.%N)
freed() { [ "$(y status --json | json 'd["kv_pages"]["used"]')" = 0 ]; }
wait_until 2 freed || fail "KV pages still used 2 s after 16 clients dropped: $(y status --json | json 'd["kv_pages"]')"
echo "16 dropped streams: $used KV pages in use, all free after $(python3 -c "import time; print(f'{time.time() - $t0:.2f}')") s"
{ wait "${pids[@]}"; } 2>/dev/null || true

echo "== 4. serving unchanged"
check_concurrent after
echo "16 concurrent prompts after every operator call: single-process text"
echo "== 5. docs/api.md's RPC examples, as written"
doc_examples "$(dirname "$0")/../../docs/api.md" bash rpc-expect
n=$doc_example_count
[ "$n" -ge 10 ] || fail "found only $n RPC examples in docs/api.md"
(export PATH="$SY_BUILD_DIR/apps:$PATH" SY_RPC="$address" && run_doc_examples docs/api.md)
echo "$n docs/api.md RPC examples ok"

stop_cluster
echo "operator API system test passed"
