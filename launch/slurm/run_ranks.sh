#!/bin/bash
# The body of freehold's Slurm jobs (the .sbatch files beside it): `freehold train "$@"` as one rank per task of the
# allocation through srun, a forward of the time-limit warning (`--signal=B:USR1@120` reaches only this batch shell)
# to every rank, and a requeue when freehold stopped after a committed checkpoint (exit 75), so that the requeued
# job resumes from it (resume: auto). docs/distributed.md explains the whole cycle.
#
# Environment: FREEHOLD_BIN (default: freehold on PATH); FREEHOLD_DIST_TIMEOUT_S, the dist.timeout_s of the config
# (default 600), sizes how long srun lets the surviving ranks report a lost one (exit 4) before it ends them;
# FREEHOLD_SRUN_MPI (e.g. pmix, or pmi2 on older Slurm; default: the cluster's MpiDefault) is how the tasks learn
# their MPI ranks.
set -uo pipefail

freehold="${FREEHOLD_BIN:-freehold}"
timeout_s="${FREEHOLD_DIST_TIMEOUT_S:-600}"

# One rank per task; each rank uses GPU local_rank (freehold picks it from MPI). --kill-on-bad-exit=0 and a --wait
# beyond dist.timeout_s + 30 s leave freehold's own deadline to end the other ranks with exit code 4 when one dies,
# instead of Slurm killing them before they say which rank was lost.
mpi_flag=()
if [[ -n "${FREEHOLD_SRUN_MPI:-}" ]]; then mpi_flag=(--mpi="${FREEHOLD_SRUN_MPI}"); fi
echo "freehold job ${SLURM_JOB_ID}: start $((${SLURM_RESTART_COUNT:-0} + 1)), ${SLURM_NTASKS:-1} task(s) on" \
     "${SLURM_JOB_NODELIST:-?}" >&2
srun "${mpi_flag[@]}" --kill-on-bad-exit=0 --wait=$((timeout_s + 60)) --cpu-bind=none \
  "${freehold}" train "$@" &
srun_pid=$!

forward() {
  echo "freehold job ${SLURM_JOB_ID}: $1 received; asking every rank to checkpoint and stop" >&2
  # srun passes the signal on to every task of the step; the ranks then agree on one stop step.
  kill "-$1" "${srun_pid}"
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

# `wait` returns early when a trapped signal arrives: wait again until srun itself has exited.
while :; do
  wait "${srun_pid}"
  rc=$?
  kill -0 "${srun_pid}" 2>/dev/null || break
done

case "${rc}" in
  0) echo "freehold job ${SLURM_JOB_ID}: training done" >&2 ;;
  75)
    echo "freehold job ${SLURM_JOB_ID}: stopped after a committed checkpoint; requeueing to resume" >&2
    scontrol requeue "${SLURM_JOB_ID}"
    exit 0  # this run ended as planned; the requeued one continues
    ;;
  4) echo "freehold job ${SLURM_JOB_ID}: a rank was lost (exit 4); the newest committed checkpoint is intact," \
          "requeue or resubmit to resume from it" >&2 ;;
  *) echo "freehold job ${SLURM_JOB_ID}: freehold exited with ${rc}" >&2 ;;
esac
exit "${rc}"
