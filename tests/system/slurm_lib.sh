# A private single-host Slurm for the launcher tests (source after lib.sh, with `work` set):
# Debian's munged, slurmctld and slurmd under $work/slurm, on unusual ports, with enough CPUs
# declared (config_overrides) for a cluster of node processes on a small machine. Nothing is
# mocked: sbatch, srun, squeue and scancel are the real ones. Needs root (slurmd runs jobs as their
# user, and munged must run as the munge user).
#   slurm_skip_reason      prints why Slurm cannot run here (empty: it can)
#   slurm_up CPUS          starts munged, slurmctld and slurmd; exports SLURM_CONF; returns 1
#                          with a reason in $slurm_error when the node is not idle within 30 s
#   slurm_down             stops the daemons (by PID) and waits for them; safe to call twice

slurm_pids=()
slurm_error=

slurm_skip_reason() {
  [ "$(id -u)" -eq 0 ] || { echo "needs root (slurmd and munged)"; return; }
  local b
  for b in munged mungekey slurmctld slurmd sbatch srun squeue scancel scontrol setpriv; do
    command -v "$b" >/dev/null || { echo "no $b (apt-get install slurmctld slurmd slurm-client munge)"; return; }
  done
  id munge >/dev/null 2>&1 || { echo "no munge user"; return; }
  # Slurm names the node by its host name, and the nodes reach each other by that name.
  getent hosts "$(hostname -s)" >/dev/null || echo "the host name $(hostname -s) does not resolve"
}

slurm_up() {
  local cpus=$1 d="$work/slurm" name
  name=$(hostname -s)
  mkdir -p "$d/state" "$d/spool" "$d/munge"
  chmod 755 "$work" "$d"  # munged (user munge) reaches its folder through them
  chown munge:munge "$d/munge" && chmod 755 "$d/munge"  # munged wants its socket folder open to all
  setpriv --reuid=munge --regid=munge --init-groups mungekey --create --keyfile="$d/munge/munge.key" >/dev/null 2>&1 ||
    { slurm_error="mungekey failed"; return 1; }
  setpriv --reuid=munge --regid=munge --init-groups munged -F --key-file="$d/munge/munge.key" \
    --socket="$d/munge/munge.socket.2" --pid-file="$d/munge/munged.pid" --log-file="$d/munge/munged.log" \
    --seed-file="$d/munge/munged.seed" >"$d/munged.out" 2>&1 &
  slurm_pids+=($!)
  munge_ok() { munge -n -S "$d/munge/munge.socket.2" 2>/dev/null | unmunge -S "$d/munge/munge.socket.2" >/dev/null 2>&1; }
  wait_until 5 munge_ok || { slurm_error="munged silent for 5 s: $(tail -n 3 "$d/munge/munged.log" 2>/dev/null)"; return 1; }
  cat >"$d/slurm.conf" <<EOF
ClusterName=sytest
SlurmctldHost=$name(127.0.0.1)
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$d/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
KillWait=5
NodeName=$name NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$name Default=YES MaxTime=10 State=UP OverSubscribe=YES
EOF
  export SLURM_CONF="$d/slurm.conf"
  slurmctld -D -i -f "$SLURM_CONF" >"$d/slurmctld.out" 2>&1 &
  slurm_pids+=($!)
  slurmd -D -f "$SLURM_CONF" -N "$name" >"$d/slurmd.out" 2>&1 &
  slurm_pids+=($!)
  node_idle() { timeout 5 sinfo -h -n "$name" -o %t 2>/dev/null | grep -qx 'idle'; }
  wait_until 30 node_idle || {
    slurm_error="node $name not idle within 30 s: $(timeout 5 sinfo -h -o '%t %E' 2>&1 | head -n 1); $(tail -n 2 "$d/slurmctld.log" 2>/dev/null)"
    return 1
  }
}

slurm_down() {
  local pid
  [ "${#slurm_pids[@]}" -gt 0 ] || return 0
  # Reverse order: slurmd, slurmctld, then munged (the others authenticate through it).
  for ((i = ${#slurm_pids[@]} - 1; i >= 0; i--)); do
    pid=${slurm_pids[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    wait_until 10 all_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  slurm_pids=()
}
