#!/usr/bin/env bash
# `switchyard generate` end to end on the tiny model (default backend): streamed text and the stats
# line, --dump-logits size, --mtp giving the greedy text of a plain run, --chat, and exit code 1
# with a message naming the problem for each kind of bad input.
# Env: SY_BUILD_DIR (set by ctest), SY_DATA_DIR (default ~/.cache/switchyard). Exit 77 (skipped)
# without the tokenizer files.
set -euo pipefail

build_dir=${SY_BUILD_DIR:?SY_BUILD_DIR must point at the build folder}
data_dir=${SY_DATA_DIR:-$HOME/.cache/switchyard}
sy=$build_dir/apps/switchyard
[ -s "$data_dir/tokenizer/tokenizer.json" ] ||
  { echo "generate_command_test: SKIPPED: no tokenizer files in $data_dir/tokenizer"; exit 77; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The C++ tests' shared tiny model when it is there, else our own.
model=$build_dir/test-models/tiny-seed7
if [ ! -f "$model/.complete" ]; then
  model=$work/tiny
  "$sy" make-tiny-model "$model" --seed 7 --tokenizer-dir "$data_dir/tokenizer" >/dev/null
fi

fail() { echo "generate_command_test: FAILED: $*"; exit 1; }

"$sy" generate --model "$model" --prompt Hello --max-tokens 8 >"$work/out" 2>"$work/err" || fail "generate exited $?"
grep -q "prompt tokens 2, generated 8" "$work/err" || fail "stats line: $(cat "$work/err")"
[ -s "$work/out" ] || fail "no text on stdout"

"$sy" generate --model "$model" --ids 0,5,7 --max-tokens 6 --mtp --dump-logits "$work/logits.bin" \
  >"$work/mtp" 2>"$work/mtp_err" || fail "--mtp exited $?"
grep -q "MTP acceptance" "$work/mtp_err" || fail "no MTP stats: $(cat "$work/mtp_err")"
"$sy" generate --model "$model" --ids 0,5,7 --max-tokens 6 >"$work/plain" 2>/dev/null
cmp -s "$work/mtp" "$work/plain" || fail "--mtp text differs from plain greedy"
# 6 rows of vocab_size (129280) float32 values, unless it stopped at EOS.
size=$(stat -c %s "$work/logits.bin")
[ "$size" -gt 0 ] && [ $((size % (129280 * 4))) -eq 0 ] && [ "$size" -le $((6 * 129280 * 4)) ] ||
  fail "--dump-logits wrote $size bytes"

"$sy" generate --model "$model" --prompt "What is 2+2?" --chat --max-tokens 3 --temperature 0.7 --seed 1 \
  >/dev/null 2>&1 || fail "--chat with sampling exited $?"

expect_error() {
  local pattern=$1
  shift
  if "$sy" generate --model "$model" "$@" >/dev/null 2>"$work/bad"; then fail "accepted: $*"; fi
  grep -q -- "$pattern" "$work/bad" || fail "for '$*' expected '$pattern', got: $(cat "$work/bad")"
}
expect_error "outside the vocabulary" --ids 0,129280
expect_error "not a token id" --ids 0,abc
expect_error "exceeds the context length" --prompt hi --max-tokens 200000
expect_error "exceeds the context length 16" --prompt hi --max-tokens 15 --max-seq-len 16
expect_error "temperature must be" --prompt hi --temperature -1
expect_error "top_p must be" --prompt hi --top-p 0
expect_error "top_k must be" --prompt hi --top-k -2
expect_error "unknown backend" --prompt hi --backend nope
expect_error "unknown numerics" --prompt hi --numerics fp16
expect_error "exactly one of --prompt and --ids" --max-tokens 2
echo "generate_command_test: ok"
