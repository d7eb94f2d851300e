#!/usr/bin/env bash
# The Slurm launcher on a real Slurm (issue 9): Debian's munged, slurmctld and slurmd on this host
# (tests/system/slurm_lib.sh; installed with apt-get when missing), the job script
# deploy/slurm/switchyard.sbatch submitted with sbatch for the 5-task layout of
# deploy/slurm/cluster.toml (router + load_stats + controller, prefill, decode, two expert hosts;
# only the model path and the ports changed) on the tiny model. Checks:
#  - every task's node reports ready and the router's /health says ok (200) only then;
#  - greedy outputs and logits through the cluster API equal the single-process engine's;
#  - scancel ends the job and leaves no switchyard process behind; the daemons stop.
# Root only (skips with exit 77 otherwise, or when Slurm cannot be installed or started here).
# Needs SY_BUILD_DIR (ctest sets it). Every wait is bounded; a trap stops what it started.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
yardctl="$SY_BUILD_DIR/apps/yardctl"
[ -x "$sy" ] && [ -x "$yardctl" ] || { echo "SKIP: switchyard or yardctl not built"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: slurm_launcher_test needs root (slurmd, munged)"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-slurm-test.XXXXXX")
job=
cleanup() {
  [ -z "$job" ] || timeout 10 scancel "$job" 2>/dev/null || true
  slurm_down
  # Only what this test started: node processes are the ones reading this test's config.
  pkill -KILL -f "$work/cluster.toml" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/system/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/system/slurm_lib.sh
. "$(dirname "$0")/slurm_lib.sh"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null ||
   ! command -v sbatch >/dev/null; then
  echo "installing Debian's slurmctld slurmd slurm-client munge"
  timeout 120 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >"$work/apt.log" 2>&1 ||
    { echo "SKIP: cannot install Slurm here: $(tail -n 1 "$work/apt.log")"; exit 77; }
fi
reason=$(slurm_skip_reason)
[ -z "$reason" ] || { echo "SKIP: $reason"; exit 77; }

model=$(tiny_model)
[ -n "$model" ] || { echo "SKIP: no tiny model and no tokenizer files to make one"; exit 77; }
# shellcheck source=tests/system/cluster_lib.sh
. "$(dirname "$0")/cluster_lib.sh"
prompts=("${prompts[@]:0:6}")  # six of the sixteen (ASCII, CJK, Hangul, code): the time limit is tight
make_reference

t0=$SECONDS
slurm_up 8 || { echo "SKIP: Slurm does not start here: $slurm_error"; exit 77; }
echo "slurm: munged, slurmctld and slurmd up, node idle ($((SECONDS - t0)) s)"

# deploy/slurm/cluster.toml with this model and free ports (a shared machine may run other tests).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rpc_port=$(free_port)
http_port=$(free_port)
base=$((20000 + RANDOM % 20000))
awk -v model="$model" -v rpc="$rpc_port" -v http="$http_port" -v base="$base" '
  /^path = /           { print "path = \"" model "\""; next }
  /^rpc = /            { print "rpc = \"0.0.0.0:" rpc "\""; next }
  /^http = /           { print "http = \"0.0.0.0:" http "\""; next }
  /^kv_pages = /       { print "kv_pages = 256"; next }
  /^transport_port = / { print "transport_port = " base + $3 - 17400; next }
  /^metrics_port = /   { print "metrics_port = " base + 100 + $3 - 19400; next }
  { print }' "$root/deploy/slurm/cluster.toml" >"$work/cluster.toml"
nodes=$(grep -c '^\[\[node\]\]' "$work/cluster.toml")
[ "$nodes" -ge 5 ] || fail "deploy/slurm/cluster.toml has $nodes nodes, the test wants at least 5"

t0=$SECONDS
mkdir -p "$work/slurm.dumps"
job=$(SWITCHYARD="$sy" SY_DUMP_LOGITS_DIR="$work/slurm.dumps" UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n \
  timeout 20 sbatch --parsable --ntasks="$nodes" --time=5 --output="$work/job.out" \
  "$root/deploy/slurm/switchyard.sbatch" "$work/cluster.toml") || fail "sbatch failed: $job"
job=${job%%;*}
echo "slurm: submitted job $job ($nodes tasks)"
job_state() { timeout 5 squeue -h -j "$job" -o %T 2>/dev/null || true; }
ready_count() { local n; n=$(grep -c ' ready (roles' "$work/job.out" 2>/dev/null || true); echo "${n:-0}"; }
all_ready() { [ "$(ready_count)" -eq "$nodes" ]; }
wait_until 90 all_ready ||
  fail "slurm: $(ready_count) of $nodes nodes ready within 90 s (job state '$(job_state)'): $(tail -n 20 "$work/job.out" 2>/dev/null)"
[ "$(job_state)" = RUNNING ] || fail "slurm: job $job is '$(job_state)', not RUNNING"
sed -n 's/^\([0-9]*\): node \([a-z0-9]*\) ready (roles \([^)]*\)).*/  rank \1: \2 (\3)/p' "$work/job.out" | sort -n -k2
# The ranks followed the [[node]] order.
for spec in "0 router" "1 prefill0" "2 decode0" "3 expert0" "4 expert1"; do
  read -r rank name <<<"$spec"
  grep -q "^$rank: node $name ready" "$work/job.out" || fail "slurm: rank $rank is not node $name: $(grep ' ready ' "$work/job.out")"
done
code=$(curl -s -o "$work/health.json" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$http_port/health" || true)
[ "$code" = 200 ] && grep -q '"status":"ok"' "$work/health.json" ||
  fail "slurm: router /health answered $code: $(cat "$work/health.json" 2>/dev/null)"
echo "slurm: all $nodes nodes ready, /health ok ($((SECONDS - t0)) s after sbatch)"

address="127.0.0.1:$rpc_port"
check_prompts slurm
echo "slurm: ${#prompts[@]} prompts through the job token-identical to the single process, logits bitwise equal"

t0=$SECONDS
timeout 10 scancel "$job" || fail "scancel failed"
job_gone() { [ -z "$(job_state)" ] || [ "$(job_state)" = CANCELLED ]; }
wait_until 30 job_gone || fail "slurm: job $job still '$(job_state)' 30 s after scancel"
no_nodes() { ! pgrep -f "$work/cluster.toml" >/dev/null; }
wait_until 15 no_nodes || fail "slurm: switchyard processes left after scancel: $(pgrep -af "$work/cluster.toml")"
# scancel's SIGTERM reached every node, and each stopped politely (before SIGKILL).
stopped=$(grep -c 'stopping (SIGTERM)' "$work/job.out" || true)
[ "$stopped" -eq "$nodes" ] || fail "slurm: $stopped of $nodes nodes logged 'stopping (SIGTERM)': $(tail -n 20 "$work/job.out")"
echo "slurm: scancel ended job $job; all $nodes nodes stopped on SIGTERM; no switchyard process left ($((SECONDS - t0)) s)"
job=
daemons=("${slurm_pids[@]}")
slurm_down
all_gone "${daemons[@]}" || fail "slurm daemons still running"
echo "slurm launcher test passed"
