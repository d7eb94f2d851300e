# Shared by the cluster system tests (source after lib.sh, with work, sy, yardctl set): sixteen
# prompts, their single-process reference (text and logits), a check of a cluster against it,
# and starting/stopping `switchyard local`.

max_tokens=24
prompts=(
  "Hello, world" "The capital of France is" "def fibonacci(n):" "1 2 3 4 5 6 7 8"
  "混合专家模型" "Once upon a time" "SELECT * FROM users WHERE" "東京の天気は"
  "The quick brown fox" "import numpy as np" "안녕하세요" "In 1492, Columbus"
  "🙂 emoji test 🚀" "Mixture of experts routes each token" "x" "A long time ago in a galaxy far, far away"
)

# check_prompts TAG: the 16 prompts one at a time through $address: text and dumped logits equal
# the reference.
check_prompts() {
  local tag=$1
  for i in "${!prompts[@]}"; do
    local n=$((i + 1))
    "$yardctl" --address "$address" generate --prompt "${prompts[$i]}" --max-tokens "$max_tokens" \
      >"$work/$tag.$n.txt" 2>"$work/$tag.$n.err" || fail "$tag: yardctl generate exited $? on prompt $n: $(cat "$work/$tag.$n.err")"
    cmp -s "$work/$tag.$n.txt" "$work/ref/$n.txt" ||
      fail "$tag: prompt $n: cluster '$(cat "$work/$tag.$n.txt")' vs single process '$(cat "$work/ref/$n.txt")'"
    # Request ids count from 1 in submission order, one request at a time here.
    cmp -s "$work/$tag.dumps/request-$n.f32" "$work/ref/$n.f32" ||
      fail "$tag: prompt $n: logits differ ($(stat -c %s "$work/$tag.dumps/request-$n.f32" 2>/dev/null || echo no) bytes vs $(stat -c %s "$work/ref/$n.f32"))"
  done
}

# check_concurrent TAG: the 16 prompts all at once through $address (batched together); each
# text equals the reference.
check_concurrent() {
  local tag=$1 pids=() i
  for i in "${!prompts[@]}"; do
    "$yardctl" --address "$address" generate --prompt "${prompts[$i]}" --max-tokens "$max_tokens" \
      >"$work/$tag.c$((i + 1)).txt" 2>"$work/$tag.c$((i + 1)).err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || fail "$tag: concurrent prompt $((i + 1)): yardctl exited $?: $(cat "$work/$tag.c$((i + 1)).err")"
    cmp -s "$work/$tag.c$((i + 1)).txt" "$work/ref/$((i + 1)).txt" || fail "$tag: concurrent prompt $((i + 1)) differs"
  done
}

# start_cluster TAG NODES LOCAL_ARGS...: `switchyard local --model $model LOCAL_ARGS` with logit
# dumps into $work/TAG.dumps; waits for "ready: NODES nodes"; sets sup and address.
start_cluster() {
  local tag=$1 nodes=$2
  shift 2
  mkdir -p "$work/$tag.dumps"
  SY_DUMP_LOGITS_DIR="$work/$tag.dumps" "$sy" local --model "$model" --rpc-port 0 --http-port 0 --kv-pages 256 --stop-timeout 8 \
    "$@" >"$work/$tag.out" 2>"$work/$tag.err" &
  sup=$!
  started+=("$sup")
  ready() { grep -qs "cluster \"local\" ready: $nodes nodes" "$work/$tag.out"; }
  wait_until 60 ready || fail "$tag: cluster not ready within 60 s"
  sed -n 's/^switchyard local: started [a-z0-9]* pid \([0-9]*\) .*/\1/p' "$work/$tag.out" >"$work/$tag.pids"
  address=$(sed -n 's/^switchyard local:   api: rpc \([0-9.:]*\) .*/\1/p' "$work/$tag.out")
  [ -n "$address" ] || fail "$tag: no api line"
}

stop_cluster() {
  kill -TERM "$sup"
  wait_until 20 all_gone "$sup" || fail "supervisor still running 20 s after SIGTERM"
  wait "$sup" || true
}

# make_reference: every prompt through the single-process `switchyard generate`, text and logits
# into $work/ref/N.{txt,f32}.
make_reference() {
  mkdir -p "$work/ref"
  for i in "${!prompts[@]}"; do
    "$sy" generate --model "$model" --prompt "${prompts[$i]}" --max-tokens "$max_tokens" \
      --dump-logits "$work/ref/$((i + 1)).f32" >"$work/ref/$((i + 1)).txt" 2>/dev/null ||
      fail "switchyard generate failed on prompt $((i + 1))"
  done
  echo "reference: ${#prompts[@]} prompts generated in one process"
}
