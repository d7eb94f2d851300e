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
