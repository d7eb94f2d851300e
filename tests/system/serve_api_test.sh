#!/usr/bin/env bash
# The cluster API as real processes on loopback: `switchyard serve-api` on a free port with the
# tiny model; `yardctl generate` must print exactly the text of `switchyard generate` (same
# backend, greedy); `yardctl status` shows the model and free KV pages; exit codes for bad input
# (1), bad usage (2) and no server (3); SIGTERM stops the server cleanly (exit 0). With TLS
# (--tls-cert/--tls-key, a self-signed certificate made by openssl), yardctl --tls-ca gets the same
# text, and a plain client, an untrusted certificate or a wrong name all fail.
# Env: SY_BUILD_DIR (set by ctest), SY_DATA_DIR (default ~/.cache/switchyard). Exit 77 (skipped)
# without the tokenizer files.
set -euo pipefail

build_dir=${SY_BUILD_DIR:?SY_BUILD_DIR must point at the build folder}
data_dir=${SY_DATA_DIR:-$HOME/.cache/switchyard}
sy=$build_dir/apps/switchyard
yardctl=$build_dir/apps/yardctl
[ -s "$data_dir/tokenizer/tokenizer.json" ] ||
  { echo "serve_api_test: SKIPPED: no tokenizer files in $data_dir/tokenizer"; exit 77; }

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "serve_api_test: FAILED: $*"
  [ -f "$work/server.err" ] && { echo "--- server stderr:"; cat "$work/server.err"; }
  exit 1
}

# The C++ tests' shared tiny model when it is there, else our own.
model=$build_dir/test-models/tiny-seed7
if [ ! -f "$model/.complete" ]; then
  model=$work/tiny
  "$sy" make-tiny-model "$model" --seed 7 --tokenizer-dir "$data_dir/tokenizer" >/dev/null
fi
backend=ref  # the same backend on both sides; ref is always built

# start_server ARGS...: serve-api on a free port with ARGS; sets server_pid and address.
start_server() {
  "$sy" serve-api --model "$model" --listen 127.0.0.1:0 --backend "$backend" --kv-pages 64 "$@" \
    >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  address=
  for _ in $(seq 1 300); do
    address=$(sed -n 's/^api listening on //p' "$work/server.out")
    [ -n "$address" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "serve-api $* exited before it was ready"
    sleep 0.1
  done
  [ -n "$address" ] || fail "serve-api $*: no 'api listening on' line within 30 s"
}
start_server

"$yardctl" --address "$address" generate --ids 0,5,7 --max-tokens 16 >"$work/api.txt" 2>"$work/api.err" ||
  fail "yardctl generate exited $?: $(cat "$work/api.err")"
"$sy" generate --model "$model" --backend "$backend" --ids 0,5,7 --max-tokens 16 >"$work/local.txt" 2>/dev/null ||
  fail "switchyard generate exited $?"
cmp -s "$work/api.txt" "$work/local.txt" ||
  fail "texts differ: yardctl '$(cat "$work/api.txt")' vs generate '$(cat "$work/local.txt")'"
grep -q "^tokens 16 (prompt 3), TTFT .* ms, .* tok/s, finish length$" "$work/api.err" ||
  fail "summary line: $(cat "$work/api.err")"

"$yardctl" --address "$address" generate --ids 0,5,7 --max-tokens 4 --json >"$work/api.json" 2>/dev/null ||
  fail "yardctl generate --json exited $?"
grep -q '"finish_reason":"length"' "$work/api.json" || fail "--json: $(cat "$work/api.json")"

"$yardctl" --address "$address" status >"$work/status.txt" || fail "yardctl status exited $?"
grep -q "^model *$(basename "$model")$" "$work/status.txt" || fail "status: $(cat "$work/status.txt")"
grep -q "kv pages   used 0, free 64, total 64" "$work/status.txt" || fail "status: $(cat "$work/status.txt")"
grep -q "requests   completed 2," "$work/status.txt" || fail "status: $(cat "$work/status.txt")"

expect_exit() {
  local code=$1 pattern=$2
  shift 2
  local rc=0
  "$yardctl" "$@" >/dev/null 2>"$work/bad" || rc=$?
  [ "$rc" -eq "$code" ] || fail "yardctl $* exited $rc, expected $code: $(cat "$work/bad")"
  grep -q -- "$pattern" "$work/bad" || fail "yardctl $*: expected '$pattern', got: $(cat "$work/bad")"
}
expect_exit 1 "outside the vocabulary" --address "$address" generate --ids 0,129280
expect_exit 1 "temperature must be" --address "$address" generate --prompt hi --temperature -1
expect_exit 2 "exactly one of --prompt and --ids" --address "$address" generate
expect_exit 3 "cannot connect" --address 127.0.0.1:1 status
"$yardctl" --address "$address" status >/dev/null || fail "the server stopped serving after bad input"

kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=
[ "$rc" -eq 0 ] || fail "serve-api exited $rc on SIGTERM"
grep -q "serve-api: stopped" "$work/server.err" || fail "no clean stop line"
# TLS: a self-signed certificate for "localhost" (and a second one nobody should trust).
if command -v openssl >/dev/null; then
  for name in server other; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
      -keyout "$work/$name.key" -out "$work/$name.pem" >/dev/null 2>&1 || fail "openssl could not make a certificate"
  done
  start_server --tls-cert "$work/server.pem" --tls-key "$work/server.key"
  "$yardctl" --address "$address" --tls-ca "$work/server.pem" --tls-name localhost generate --ids 0,5,7 --max-tokens 16 \
    >"$work/tls.txt" 2>"$work/tls.err" || fail "yardctl over TLS exited $?: $(cat "$work/tls.err")"
  cmp -s "$work/tls.txt" "$work/local.txt" || fail "TLS: texts differ: '$(cat "$work/tls.txt")'"
  for args in "" "--tls-ca $work/other.pem --tls-name localhost" "--tls-ca $work/server.pem --tls-name elsewhere"; do
    rc=0
    # shellcheck disable=SC2086  # args are words on purpose
    timeout 10 "$yardctl" --address "$address" $args status >/dev/null 2>"$work/tls_bad.err" || rc=$?
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "TLS: yardctl ${args:-without TLS} got through (exit $rc)"
  done
  "$yardctl" --address "$address" --tls-ca "$work/server.pem" --tls-name localhost status >/dev/null ||
    fail "TLS: the server stopped serving after refused handshakes"
  kill -TERM "$server_pid"
  wait "$server_pid" || fail "serve-api with TLS exited $? on SIGTERM"
  server_pid=
  echo "serve_api_test: TLS ok (trusted certificate: same text; plain, untrusted and misnamed clients refused)"
else
  echo "serve_api_test: no openssl, TLS part skipped"
fi
echo "serve_api_test: ok"
