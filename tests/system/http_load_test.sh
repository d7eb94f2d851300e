#!/usr/bin/env bash
# Load on the OpenAI-compatible HTTP API of a local cluster (router, prefill0, decode0, decode1;
# tiny model), loopback only and bounded in time:
#  1. 64 concurrent streaming chat clients for SY_LOAD_SECONDS (default 60): zero server errors,
#     every stream ends with [DONE].
#  2. Beyond capacity (96 clients against the router's 64 streams in flight): the surplus is
#     answered 429 with Retry-After at once, nothing else fails.
#  3. The router's resident memory after the run is within 10% of before it (after a warm-up).
# Needs SY_BUILD_DIR (ctest sets it) and node. Every wait is bounded; a trap kills what it started.
set -euo pipefail

sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "http_load_test: SKIPPED: switchyard or yardctl not built"; exit 77; }
command -v node >/dev/null || { echo "http_load_test: SKIPPED: no node"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-http-load.XXXXXX")
started=()
cleanup() {
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
here=$(dirname "$0")
# shellcheck source=tests/system/lib.sh
. "$here/lib.sh"
model=$(tiny_model)
[ -n "$model" ] || { echo "http_load_test: SKIPPED: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$here/cluster_lib.sh"
export UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n
seconds=${SY_LOAD_SECONDS:-60}

start_cluster load 4 --prefill 1 --decode 2 --max-batch 64
http=$(sed -n 's|^switchyard local:   api: http \(http://[0-9.:]*\)/v1 .*|\1|p' "$work/load.out")
[ -n "$http" ] || fail "no http api line"
router=$(head -n 1 "$work/load.pids")
model_id=$(basename "$model")
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$router/status"; }
load() {  # CLIENTS SECONDS TAG
  node "$here/http_load.mjs" "$http" "$model_id" "$1" "$2" 16 >"$work/$3.json" 2>"$work/$3.err" ||
    fail "http_load.mjs $3 exited $?: $(cat "$work/$3.err")"
}
field() { python3 -c "import json, sys; d = json.load(open('$work/$1.json')); print($2)"; }

load 64 5 warmup
before=$(rss_kib)
echo "== 1. 64 concurrent streaming clients for $seconds s"
load 64 "$seconds" steady
echo "steady: $(cat "$work/steady.json")"
[ "$(field steady 'd["errors"]')" = "[]" ] || fail "errors under load: $(field steady 'd["errors"]')"
[ "$(field steady 'sorted(d["status"])')" = "['200']" ] || fail "non-200 answers at 64 clients: $(field steady 'd["status"]')"
[ "$(field steady 'd["completed"] == d["requests"]')" = True ] || fail "not every stream ended with [DONE]"
echo "64 clients x $seconds s: $(field steady 'd["completed"]') streams, $(field steady 'd["tokens"]') tokens, zero errors"

echo "== 2. beyond capacity"
load 96 5 burst
echo "burst: $(cat "$work/burst.json")"
[ "$(field burst 'd["errors"]')" = "[]" ] || fail "errors beyond capacity: $(field burst 'd["errors"]')"
[ "$(field burst 'set(d["status"]) <= {"200", "429"} and "429" in d["status"]')" = True ] ||
  fail "96 clients: want 200s and 429s only: $(field burst 'd["status"]')"
[ "$(field burst 'd["refused_without_retry_after"]')" = 0 ] || fail "a 429 without Retry-After"
echo "96 clients: $(field burst 'd["status"]["429"]') answers 429 with Retry-After, the rest 200"

echo "== 3. router memory"
after=$(rss_kib)
python3 -c "import sys; sys.exit(0 if $after <= 1.10 * $before else 1)" ||
  fail "router RSS grew from $before KiB to $after KiB (> 10%)"
echo "router RSS: $before KiB before, $after KiB after ($(python3 -c "print(f'{($after / $before - 1) * 100:+.1f}')")%)"
stop_cluster
echo "HTTP load test passed"
