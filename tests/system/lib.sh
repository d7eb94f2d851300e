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
