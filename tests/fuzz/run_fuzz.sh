#!/usr/bin/env bash
# Runs one libFuzzer binary for a fixed time on a scratch copy of its seed corpus (the checked-in
# corpus is never modified) and prints libFuzzer's final "Done N runs in S second(s)" line. Exit 0
# on a clean run, 77 when the binary was not built (configure with clang and -DSY_FUZZ=ON), the
# fuzzer's status otherwise; a crash input is kept and its path printed.
# Usage: tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS FUZZER
#   FUZZER: safetensors_header (model/safetensors.hpp) or wire_decode (schemas/wire.hpp); its
#   corpus is tests/fuzz/corpus/<corpus of FUZZER>.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS safetensors_header|wire_decode" >&2
  exit 2
fi
build_dir=$1
seconds=$2
case $3 in
  safetensors_header) corpus=safetensors_header max_len=4096 ;;
  wire_decode) corpus=wire max_len=8192 ;;
  *) echo "unknown fuzzer '$3' (safetensors_header or wire_decode)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fuzzer="$build_dir/tests/$3_fuzz"
if [[ ! -x "$fuzzer" ]]; then
  echo "skipped: $fuzzer not built (CC=clang CXX=clang++ cmake ... -DSY_FUZZ=ON)"
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sy_fuzz.XXXXXX")
mkdir -p "$work/corpus" "$work/artifacts"
cp "$here/corpus/$corpus/"* "$work/corpus/"
log="$work/fuzz.log"

status=0
"$fuzzer" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" >"$log" 2>&1 || status=$?

if [[ $status -ne 0 ]]; then
  tail -n 60 "$log"
  echo "fuzzer failed (status $status); crash inputs and log kept in $work" >&2
  exit "$status"
fi
grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1
rm -rf "$work"
