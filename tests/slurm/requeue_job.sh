#!/usr/bin/env bash
# The batch script of tests/slurm/slurm_test.py's preemption test: `srun FREEHOLD train CONFIG [KEY=VALUE...]`,
# with the batch shell's USR1 (from --signal=B:USR1@N, or `scancel --signal=USR1 --batch`) forwarded to the ranks
# through srun. Ranks that checkpoint and exit 75 make the script requeue its own job, which then resumes from
# that checkpoint (resume: auto). Submit with --requeue.
set -uo pipefail
freehold=$1
shift

echo "job $SLURM_JOB_ID start $((${SLURM_RESTART_COUNT:-0} + 1)) on $SLURM_JOB_NODELIST: ${SLURM_NTASKS:-1} task(s)"
srun "$freehold" train "$@" &
step_pid=$!
# The batch shell is the only process Slurm signals with B:; srun passes USR1 on to every task of the step.
trap 'echo "USR1: forwarding to the ranks"; kill -USR1 "$step_pid"' USR1

# `wait` returns early (status > 128) whenever a trapped signal arrives; wait again until srun has exited.
while true; do
  wait "$step_pid"
  rc=$?
  kill -0 "$step_pid" 2>/dev/null || break
done

if ((rc == 75)); then
  echo "exit code 75: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "freehold exited $rc"
exit "$rc"
