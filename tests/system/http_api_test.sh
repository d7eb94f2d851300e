#!/usr/bin/env bash
# The OpenAI-compatible HTTP API as a real process on loopback: `switchyard serve-api --http` on a
# free port with the tiny model (served as "deepseek-v3", API key from SY_API_KEY), driven by
# (1) every curl example of docs/api.md, each checked for the text its `<!-- expect: -->` names,
# and (2) the official `openai` npm package (tests/system/openai_client.mjs): completions and
# chat, plain and streamed, equal to `switchyard generate`'s text, and typed errors for bad
# requests; then a 413, and a clean SIGTERM (exit 0); (3) the same openai client against a live
# local cluster (`switchyard local`: router with the HTTP API, prefill and decode processes).
# Env: SY_BUILD_DIR (set by ctest), SY_SOURCE_DIR, SY_DATA_DIR (default ~/.cache/switchyard).
# Exit 77 (skipped) without the tokenizer files, node, or the openai package when npm cannot
# fetch it (it is installed as deploy/install-deps.sh does).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=${SY_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
build_dir=${SY_BUILD_DIR:?SY_BUILD_DIR must point at the build folder}
data_dir=${SY_DATA_DIR:-$HOME/.cache/switchyard}
sy=$build_dir/apps/switchyard
skip() { echo "http_api_test: SKIPPED: $*"; exit 77; }

[ -s "$data_dir/tokenizer/tokenizer.json" ] || skip "no tokenizer files in $data_dir/tokenizer (deploy/install-deps.sh)"
command -v node >/dev/null || skip "node is not installed (deploy/install-deps.sh)"
command -v curl >/dev/null || skip "curl is not installed (deploy/install-deps.sh)"
node_dir=$data_dir/node
if [ ! -f "$node_dir/node_modules/openai/package.json" ]; then
  # The same package and version as deploy/install-deps.sh, installed the same way.
  pkg=$(sed -n 's/^OPENAI_PKG="\(.*\)"$/\1/p' "$source_dir/deploy/install-deps.sh")
  [ -n "$pkg" ] || { echo "http_api_test: no OPENAI_PKG in deploy/install-deps.sh"; exit 1; }
  command -v npm >/dev/null || skip "npm is not installed, and $pkg is missing under $node_dir"
  mkdir -p "$node_dir"
  (cd "$node_dir" && { [ -f package.json ] || echo '{"private":true}' >package.json; } &&
   timeout 180 npm install --silent --no-audit --no-fund "$pkg" >/dev/null 2>&1) ||
    skip "npm could not install $pkg into $node_dir (registry unreachable?)"
fi

work=$(mktemp -d)
server_pid=
cluster_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then kill -TERM "$cluster_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=lib.sh
source "$here/lib.sh"

# The C++ tests' shared tiny model when it is there, else our own.
model=$build_dir/test-models/tiny-seed7
if [ ! -f "$model/.complete" ]; then
  model=$work/tiny
  "$sy" make-tiny-model "$model" --seed 7 --tokenizer-dir "$data_dir/tokenizer" >/dev/null
fi
backend=ref  # the same backend on both sides; ref is always built
context=512
export SY_API_KEY=sk-switchyard-test

"$sy" serve-api --model "$model" --listen 127.0.0.1:0 --http 127.0.0.1:0 --served-model-name deepseek-v3 \
  --backend "$backend" --kv-pages 64 --max-seq-len "$context" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
http_ready() { grep -q '^http listening on ' "$work/server.out" || { alive "$server_pid" || fail "serve-api exited"; false; }; }
wait_until 60 http_ready || fail "no 'http listening on' line within 60 s"
grep -q '^api listening on ' <(head -n 1 "$work/server.out") || fail "the api line must come first"
SY_HTTP=http://$(sed -n 's/^http listening on //p' "$work/server.out")
export SY_HTTP

# (1) docs/api.md's examples, as written.
doc_examples "$source_dir/docs/api.md" sh expect
n=$doc_example_count
[ "$n" -ge 5 ] || fail "found only $n examples in docs/api.md"
run_doc_examples docs/api.md
echo "http_api_test: $n docs/api.md examples ok"

# (2) The openai package, against `switchyard generate` on the same prompts.
"$sy" generate --model "$model" --backend "$backend" --ids 0,5,7 --max-tokens 16 >"$work/gen_ids.txt" 2>/dev/null ||
  fail "switchyard generate --ids exited $?"
"$sy" generate --model "$model" --backend "$backend" --prompt "The quick brown fox" --max-tokens 12 \
  >"$work/gen_text.txt" 2>/dev/null || fail "switchyard generate --prompt exited $?"
"$sy" generate --model "$model" --backend "$backend" --chat --prompt "Hello, who are you?" --max-tokens 16 \
  >"$work/gen_chat.txt" 2>/dev/null || fail "switchyard generate --chat exited $?"
cat >"$work/cases.json" <<EOF
{"context": $context,
 "ids": {"prompt": [0, 5, 7], "max_tokens": 16, "expected_file": "$work/gen_ids.txt"},
 "text": {"prompt": "The quick brown fox", "max_tokens": 12, "expected_file": "$work/gen_text.txt"},
 "chat": {"prompt": "Hello, who are you?", "max_tokens": 16, "expected_file": "$work/gen_chat.txt"}}
EOF
node "$here/openai_client.mjs" "$node_dir/node_modules" "$SY_HTTP" deepseek-v3 "$SY_API_KEY" "$work/cases.json" \
  >"$work/client.log" 2>&1 || fail "openai_client.mjs failed"
cat "$work/client.log"

# An oversize body (the default limit is 1 MiB) is refused before it is used.
head -c 1100000 /dev/zero | tr '\0' 'a' >"$work/big.json"
code=$(curl -s -o "$work/big.out" -w '%{http_code}' "$SY_HTTP/v1/completions" -H "Authorization: Bearer $SY_API_KEY" \
  -H "Content-Type: application/json" --data-binary "@$work/big.json")
[ "$code" = 413 ] && grep -q '"code":"request_too_large"' "$work/big.out" || fail "oversize body: $code $(cat "$work/big.out")"
pages_free() { curl -sf "$SY_HTTP/health" | grep -q '"kv_pages_free":64'; }
wait_until 5 pages_free || fail "KV pages not all free after the run: $(curl -s "$SY_HTTP/health")"

kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=
[ "$rc" -eq 0 ] || fail "serve-api exited $rc on SIGTERM"
grep -q "serve-api: stopped" "$work/server.err" || fail "no clean stop line"

# (3) The cluster's router serves the same HTTP API (model id: the folder's name).
"$sy" local --model "$model" --prefill 1 --decode 1 --rpc-port 0 --http-port 0 --backend "$backend" \
  --kv-pages 64 --max-seq-len "$context" --stop-timeout 8 >"$work/cluster.out" 2>"$work/cluster.err" &
cluster_pid=$!
cluster_ready() { grep -q 'cluster "local" ready' "$work/cluster.out" || { alive "$cluster_pid" || fail "local exited"; false; }; }
wait_until 60 cluster_ready || fail "the local cluster was not ready within 60 s"
cluster_http=http://$(sed -n 's|^switchyard local:   api: http http://\([0-9.:]*\)/v1 .*|\1|p' "$work/cluster.out")
node "$here/openai_client.mjs" "$node_dir/node_modules" "$cluster_http" "$(basename "$model")" "$SY_API_KEY" \
  "$work/cases.json" >"$work/cluster_client.log" 2>&1 || { cat "$work/cluster_client.log"; fail "openai_client.mjs against the cluster failed"; }
echo "against the local cluster:"
cat "$work/cluster_client.log"
kill -TERM "$cluster_pid"
wait "$cluster_pid" || fail "switchyard local exited $? on SIGTERM"
cluster_pid=
echo "http_api_test: ok"
