#!/usr/bin/env bash
# `switchyard eplb` end to end: the reference README's published example (phy2log as printed
# there, log2phy and logcnt as the reference computes them) and a global-policy case (3 groups
# on 2 nodes) as the reference computes it, checked exactly; then exit code 1 with a message
# naming the case and the problem for each kind of bad input.
# Env: SY_BUILD_DIR (set by ctest).
set -euo pipefail

build_dir=${SY_BUILD_DIR:?SY_BUILD_DIR must point at the build folder}
sy=$build_dir/apps/switchyard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "eplb_command_test: FAILED: $*"; exit 1; }

cat >"$work/cases.json" <<'JSON'
[{"weight": [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
             [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]],
  "num_replicas": 16, "num_groups": 4, "num_nodes": 2, "num_gpus": 8},
 {"weight": [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]],
  "num_replicas": 16, "num_groups": 3, "num_nodes": 2, "num_gpus": 8}]
JSON
"$sy" eplb --input "$work/cases.json" --output "$work/out.json" >"$work/stdout" 2>&1 ||
  fail "exited $?: $(cat "$work/stdout")"
grep -q "2 case(s)" "$work/stdout" || fail "summary line: $(cat "$work/stdout")"

# nlohmann_json writes keys in sorted order: log2phy, logcnt, phy2log. Compared with all
# whitespace removed, so the check needs nothing beyond coreutils.
cat >"$work/expected.json" <<'JSON'
[{"log2phy": [[[12, -1], [15, 13], [11, -1], [6, -1], [7, 5], [0, 2], [1, -1], [3, -1], [4, -1], [9, -1],
               [8, 10], [14, -1]],
              [[13, -1], [15, 11], [8, -1], [14, -1], [9, -1], [10, 12], [2, 4], [0, -1], [6, 3], [7, -1],
               [1, -1], [5, -1]]],
  "logcnt": [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1], [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]],
  "phy2log": [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
              [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]},
 {"log2phy": [[[4, -1], [14, 15], [5, -1], [13, -1], [11, 7], [8, 10], [1, -1], [3, -1], [12, -1], [9, -1],
               [0, 2], [6, -1]]],
  "logcnt": [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]],
  "phy2log": [[10, 6, 10, 7, 0, 2, 11, 4, 5, 9, 5, 4, 8, 3, 1, 1]]}]
JSON
got=$(tr -d ' \n' <"$work/out.json")
want=$(tr -d ' \n' <"$work/expected.json")
[ "$got" = "$want" ] || fail "output differs from the reference:
got:  $got
want: $want"

expect_error() {
  local pattern=$1 input=$2
  printf '%s' "$input" >"$work/bad.json"
  set +e
  "$sy" eplb --input "$work/bad.json" --output "$work/bad_out.json" >/dev/null 2>"$work/err"
  local rc=$?
  set -e
  [ "$rc" -eq 1 ] || fail "exit code $rc (want 1) for: $input"
  grep -qF -- "$pattern" "$work/err" || fail "for '$input' expected '$pattern', got: $(cat "$work/err")"
}
good='"weight": [[1, 2, 3, 4]], "num_groups": 2, "num_nodes": 1, "num_gpus": 2'
expect_error "case 1: num_replicas (5) is not a multiple of num_gpus (2)" \
  "[{$good, \"num_replicas\": 4}, {$good, \"num_replicas\": 5}]"
expect_error "case 0: num_replicas (2) is less than the number of experts (4)" "[{$good, \"num_replicas\": 2}]"
expect_error "case 0: weight row 1 has 2 experts, row 0 has 4" \
  '[{"weight": [[1, 2, 3, 4], [1, 2]], "num_replicas": 4, "num_groups": 2, "num_nodes": 1, "num_gpus": 2}]'
expect_error "case 0: weight[0][1] is -2" \
  '[{"weight": [[1, -2, 3, 4]], "num_replicas": 4, "num_groups": 2, "num_nodes": 1, "num_gpus": 2}]'
expect_error "case 0: missing \"num_replicas\"" "[{$good}]"
expect_error "case 0: unknown key \"num_replica\"" "[{$good, \"num_replicas\": 4, \"num_replica\": 4}]"
expect_error "case 0: \"num_gpus\" is \"2\", not an integer" \
  '[{"weight": [[1, 2]], "num_replicas": 2, "num_groups": 1, "num_nodes": 1, "num_gpus": "2"}]'
expect_error "is not valid JSON" '[{"weight": '
expect_error "must hold a JSON list of cases" '{"weight": [[1]]}'
echo "eplb_command_test: ok"
