#!/usr/bin/env bash
# `switchyard simulate-balance --quick` end to end: every trace kind writes its CSV (a row per
# round, the four strategies' columns), JSON (the summary fields) and SVG (one line per
# strategy); the capped mode stays within its move budget; the same seed gives the same CSV;
# bad names fail with exit code 1 and a message naming them.
# Env: SY_BUILD_DIR (set by ctest).
set -euo pipefail

build_dir=${SY_BUILD_DIR:?SY_BUILD_DIR must point at the build folder}
sy=$build_dir/apps/switchyard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "simulate_command_test: FAILED: $*"; exit 1; }

"$sy" simulate-balance --quick --output-dir "$work/a" >"$work/stdout" 2>&1 || fail "exited $?: $(cat "$work/stdout")"
for trace in drift bursts day-night; do
  base=$work/a/quick-$trace
  for ext in csv json svg; do [ -s "$base.$ext" ] || fail "missing $base.$ext"; done
  head -1 "$base.csv" | grep -q '^round,none_balancedness,none_max_over_mean,none_moves,eplb_balancedness' ||
    fail "CSV header: $(head -1 "$base.csv")"
  [ "$(wc -l <"$base.csv")" -eq 25 ] || fail "$base.csv: want a header and 24 rounds, got $(wc -l <"$base.csv") lines"
  for key in '"capped_over_eplb"' '"mean_balancedness"' '"max_moves"' '"balanced_rounds_worse_than_eplb"'; do
    grep -q "$key" "$base.json" || fail "$base.json lacks $key"
  done
  [ "$(grep -c '<polyline' "$base.svg")" -eq 4 ] || fail "$base.svg: want 4 lines"
  grep -q '</svg>' "$base.svg" || fail "$base.svg is not closed"
  # capped: at most 10% of 4 layers x 40 slots = 16 moves in any round (column 10 of the CSV).
  awk -F, 'NR > 1 && $10 > 16 { bad = 1 } END { exit bad }' "$base.csv" || fail "$base.csv: capped moved more than 16 slots"
done
grep -q "trace drift: balancedness" "$work/stdout" || fail "no per-round table: $(cat "$work/stdout")"
grep -q "capped vs eplb: mean balancedness" "$work/stdout" || fail "no capped summary: $(cat "$work/stdout")"

"$sy" simulate-balance --quick --trace drift --output-dir "$work/b" >/dev/null 2>&1 || fail "second run exited $?"
cmp -s "$work/a/quick-drift.csv" "$work/b/quick-drift.csv" || fail "the same seed gave a different CSV"

expect_error() {
  local pattern=$1
  shift
  set +e
  "$sy" simulate-balance "$@" --output-dir "$work/c" >/dev/null 2>"$work/err"
  local rc=$?
  set -e
  [ "$rc" -eq 1 ] || fail "exit code $rc (want 1) for: $*"
  grep -qF -- "$pattern" "$work/err" || fail "for '$*' expected '$pattern', got: $(cat "$work/err")"
}
expect_error 'unknown scenario "ep64"' --scenario ep64
expect_error 'unknown trace "weekly"' --quick --trace weekly
expect_error 'unknown strategy "full"' --quick --strategies eplb,full
echo "simulate_command_test: ok"
