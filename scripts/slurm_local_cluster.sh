#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for tests (tests/slurm/): munged, slurmctld and slurmd from Debian's
# slurm-wlm and munge, every file of it (config, key, sockets, state, spool, logs, pid files) in one directory, on
# ports that were free when it started. No systemd, nothing in /etc, nothing left running after `stop`.
#
#   scripts/slurm_local_cluster.sh start DIR   # DIR must not exist (or be empty); prints the SLURM_CONF to export
#   scripts/slurm_local_cluster.sh stop DIR    # cancels every job, stops the daemons by their pid files
#   scripts/slurm_local_cluster.sh logs DIR    # the daemons' logs, for a failed test
#
# The node claims more CPUs than the machine has, and 8 stand-in GPUs (SlurmdParameters=config_overrides), and the
# partition shares them (OverSubscribe=FORCE), so a 2-core machine holds a 4-task job and the GPU job scripts of
# launch/slurm/ run as they are. MpiDefault is pmix where Debian's Slurm has the plugin (bookworm's does), else
# pmi2. A start that fails prints the logs, stops what it started and exits 1.
set -euo pipefail

readonly kNodeName=fhnode
readonly kPartition=debug
readonly kNodeCpus=64
readonly kNodeGpus=8
readonly kStartTimeoutS=60

log() { printf '[slurm_local_cluster] %s\n' "$*" >&2; }

usage() {
  sed -n '5,7p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}

# The daemons run as the caller with SlurmUser=root: tests run as root (CI's container does too).
require_binaries() {
  local missing=()
  for b in munged munge slurmctld slurmd srun sbatch squeue scontrol sinfo scancel; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  if ((${#missing[@]})); then
    log "missing ${missing[*]}: install Debian's slurmctld slurmd slurm-client munge (scripts/bootstrap.sh does)"
    exit 1
  fi
}

# N TCP ports nobody listens on now, from the kernel's ephemeral picks (bind to port 0), so two clusters started
# at once, or a CI container with its own services, do not collide on a fixed number. (They are released before
# slurmctld and slurmd bind them; a start that loses that race fails with the logs and can be run again.)
free_ports() {
  local n=$1
  python3 - "$n" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

mpi_default() {
  local plugin_dir
  for plugin_dir in /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib/aarch64-linux-gnu/slurm-wlm /usr/lib64/slurm \
                    /usr/lib/slurm; do
    if [[ -e "$plugin_dir/mpi_pmix.so" ]]; then echo pmix; return; fi
  done
  echo pmi2
}

pid_of() {  # prints the pid in a pid file if that process is alive
  local file=$1 pid
  [[ -s "$file" ]] || return 1
  pid=$(<"$file")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

print_logs() {
  local dir=$1 f
  for f in "$dir"/munged.log "$dir"/slurmctld.log "$dir"/slurmd.log; do
    [[ -f "$f" ]] || continue
    printf '\n----- %s (last 80 lines) -----\n' "$f" >&2
    tail -n 80 "$f" >&2
  done
}

write_config() {
  local dir=$1 ctld_port=$2 slurmd_port=$3
  local first_job_id=$((1000 + RANDOM * 16))
  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm_local_cluster.sh for one test run; everything lives under $dir.
ClusterName=freehold-test
MailProg=/bin/true
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
# Jobs' scratch (PMIx puts a directory per step there; the default /tmp/spmix_appdir_<uid>_<job>.<step> would be
# shared by every cluster on the machine), and job ids that another cluster started at once is unlikely to use.
TmpFS=$dir/tmp
FirstJobId=$first_job_id
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
# Schedule within a second of a submit, a requeue or a finished job (the defaults wait up to a minute).
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=$(mpi_default)
ReturnToService=2
JobRequeue=1
MinJobAge=600
InactiveLimit=0
KillWait=30
SlurmdTimeout=300
# Stand-in GPUs (gres.conf): job scripts written for GPU nodes (--gpus-per-node) run unchanged, ranks on the CPU.
GresTypes=gpu
NodeName=$kNodeName NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$kNodeCpus Gres=gpu:$kNodeGpus State=UNKNOWN
PartitionName=$kPartition Nodes=$kNodeName Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  # Slurm drops a GPU without a device file; empty files stand in for /dev/nvidia0..7 (no cgroup reads them).
  mkdir -p "$dir/dev"
  for ((i = 0; i < kNodeGpus; ++i)); do : >"$dir/dev/gpu$i"; done
  echo "NodeName=$kNodeName Name=gpu File=$dir/dev/gpu[0-$((kNodeGpus - 1))]" >"$dir/gres.conf"
  mkdir -p "$dir/tmp"
  echo "PMIxCliTmpDirBase=$dir/tmp" >"$dir/mpi.conf"
  : >"$dir/plugstack.conf"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${seconds}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

node_idle() { [[ "$(sinfo -h -n "$kNodeName" -o %T 2>/dev/null)" == idle* ]]; }

start() {
  local dir=$1
  require_binaries
  if [[ -e "$dir" && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
    log "$dir exists and is not empty; give a new directory"
    exit 2
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  # munged refuses a key or socket directory that others can read or write.
  chmod 0700 "$dir"
  mkdir -m 0700 -p "$dir/key" "$dir/state" "$dir/spool"
  mkdir -m 0755 -p "$dir/munge"  # clients reach the socket through it
  if ((${#dir} > 80)); then
    log "$dir is too long for the Unix sockets under it (keep it under 80 characters, e.g. mktemp -d in /tmp)"
    exit 2
  fi
  trap 'log "start failed"; print_logs "$dir"; stop "$dir" || true; exit 1' ERR

  dd if=/dev/urandom of="$dir/key/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$dir/key/munge.key"
  munged --force --key-file="$dir/key/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/key/munged.seed"
  wait_for 10 "munged" munge -n -S "$dir/munge/munge.socket"

  read -r ctld_port slurmd_port < <(free_ports 2)
  write_config "$dir" "$ctld_port" "$slurmd_port"
  export SLURM_CONF="$dir/slurm.conf"
  # -i: ignore state from an earlier run (there is none; this also skips reading it).
  slurmctld -i -f "$SLURM_CONF"
  wait_for 20 "slurmctld" scontrol ping
  slurmd -N "$kNodeName" -f "$SLURM_CONF"
  wait_for "$kStartTimeoutS" "node $kNodeName to be idle" node_idle
  trap - ERR
  log "up: slurmctld :$ctld_port, slurmd :$slurmd_port, MpiDefault=$(mpi_default), partition $kPartition"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
  local dir=$1
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  export SLURM_CONF="$dir/slurm.conf"
  if pid_of "$dir/slurmctld.pid" >/dev/null && [[ -f "$SLURM_CONF" ]]; then
    # Jobs first: their slurmstepd processes outlive slurmd, so they are ended through Slurm and waited for.
    scancel --full --quiet --partition="$kPartition" 2>/dev/null || true
    local deadline=$((SECONDS + 40))
    while [[ -n "$(squeue -h -t pending,configuring,running,suspended,completing -o %i 2>/dev/null)" ]] &&
          ((SECONDS < deadline)); do
      sleep 0.5
    done
  fi
  local name pid
  for name in slurmd slurmctld munged; do
    if pid=$(pid_of "$dir/$name.pid"); then
      kill -TERM "$pid" 2>/dev/null || true
      local deadline=$((SECONDS + 15))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) did not stop in 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  done
  kill_leftovers "$dir"
}

# Processes of this cluster's jobs that Slurm did not end (its controller was already gone): a slurmstepd, or a
# job's process, carries this cluster's SLURM_CONF in its environment (a job's process SLURM_JOB_ID as well, so a
# shell that merely exported SLURM_CONF is left alone, as are this script and its caller).
kill_leftovers() {
  local conf="SLURM_CONF=$1/slurm.conf" proc pid env comm
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [[ $pid == "$$" || $pid == "$PPID" || $pid == "$BASHPID" ]] && continue
    env=$(tr '\0' '\n' 2>/dev/null <"$proc/environ") || continue
    grep -qxF "$conf" <<<"$env" || continue
    comm=$(cat "$proc/comm" 2>/dev/null) || continue
    if [[ $comm == slurmstepd ]] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then
      log "killing $comm ($pid), left over from a job of this cluster"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

main() {
  (($# == 2)) || usage
  case "$1" in
    start) start "$2" ;;
    stop) stop "$2" ;;
    logs) print_logs "$2" ;;
    *) usage ;;
  esac
}

main "$@"
