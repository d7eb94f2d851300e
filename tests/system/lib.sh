# Shared by the system test scripts (source it after setting `work`, the scratch folder): fail
# with the tails of the processes' logs, and poll for process states with a deadline.

# fail MESSAGE: prints it and the last lines of every *.out, *.err and *.log in $work; exit 1.
fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done
  exit 1
}

# alive PID: the process exists and is not a zombie.
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# all_gone PID...: none of them is alive.
all_gone() { for pid in "$@"; do alive "$pid" && return 1; done; return 0; }

# wait_until SECONDS CMD...: polls CMD every 0.1 s; returns 1 after SECONDS.
wait_until() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  while ! "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# tiny_model: prints a tiny model folder: the C++ tests' shared one (SY_BUILD_DIR/test-models/
# tiny-seed7) when it is complete, else one made in $work with the tokenizer files of
# deploy/install-deps.sh. Prints nothing when neither can be had (the caller skips, exit 77).
tiny_model() {
  local shared="${SY_BUILD_DIR:?}/test-models/tiny-seed7"
  if [ -f "$shared/.complete" ]; then echo "$shared"; return 0; fi
  local data_dir="${SY_DATA_DIR:-$HOME/.cache/switchyard}"
  [ -s "$data_dir/tokenizer/tokenizer.json" ] || return 0
  "$SY_BUILD_DIR/apps/switchyard" make-tiny-model "$work/tiny" --seed 7 --tokenizer-dir "$data_dir/tokenizer" >/dev/null &&
    echo "$work/tiny"
}

# doc_examples DOC FENCE TAG: the examples of a document as written: each ```FENCE block that
# follows a "<!-- TAG: TEXT -->" comment becomes $work/example_N.sh with TEXT in
# $work/example_N.expect (N from 0). Sets doc_example_count.
doc_examples() {
  local doc=$1 fence=$2 tag=$3 line expect= in_block=false
  doc_example_count=0
  while IFS= read -r line; do
    if $in_block; then
      if [ "$line" = '```' ]; then
        in_block=false
        doc_example_count=$((doc_example_count + 1))
      else
        printf '%s\n' "$line" >>"$work/example_$doc_example_count.sh"
      fi
    elif [[ "$line" =~ ^'<!-- '"$tag"': '(.*)' -->'$ ]]; then
      expect=${BASH_REMATCH[1]}
    elif [ "$line" = '```'"$fence" ]; then
      [ -n "$expect" ] || fail "$doc: a $fence example without a '$tag' comment before it"
      printf '%s\n' "$expect" >"$work/example_$doc_example_count.expect"
      : >"$work/example_$doc_example_count.sh"
      expect=
      in_block=true
    fi
  done <"$doc"
}

# run_doc_examples DOC: runs every example doc_examples found (bash -euo pipefail, in
# $work/examples, with the caller's environment); each must succeed and print its expected text.
run_doc_examples() {
  local doc=$1 i
  mkdir -p "$work/examples"
  for i in $(seq 0 $((doc_example_count - 1))); do
    (cd "$work/examples" && bash -euo pipefail "$work/example_$i.sh") >"$work/example_$i.out" 2>&1 ||
      fail "$doc example $i failed: $(cat "$work/example_$i.sh") -> $(cat "$work/example_$i.out")"
    grep -qF -- "$(cat "$work/example_$i.expect")" "$work/example_$i.out" ||
      fail "$doc example $i: no '$(cat "$work/example_$i.expect")' in: $(cat "$work/example_$i.out")"
  done
}
