#!/bin/sh
# Test helper: runs one rank's command under mpirun and records its process id and exit code per rank
# (DIR/rank<R>.pid, DIR/rank<R>.rc) and its output (DIR/rank<R>.log), so a test sees what each rank did even when
# mpirun ends the job (and stops forwarding output) before the rank has finished.
#   mpirun ... tests/dist/rank_exit.sh DIR freehold train CONFIG ...
# A SIGTERM from mpirun is passed on to the rank, and this script waits for the rank's own exit code.
dir=$1
shift
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${PMI_RANK:-${SLURM_PROCID:-0}}}}
child=
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi' TERM
"$@" >"$dir/rank$rank.log" 2>&1 &
child=$!
echo "$child" > "$dir/rank$rank.pid.tmp" && mv "$dir/rank$rank.pid.tmp" "$dir/rank$rank.pid"
while :; do
  wait "$child"
  rc=$?
  kill -0 "$child" 2>/dev/null || break
done
echo "$rc" > "$dir/rank$rank.rc.tmp" && mv "$dir/rank$rank.rc.tmp" "$dir/rank$rank.rc"
exit "$rc"
