#!/bin/sh
# Runs dist_world_tests' deadline test as 2 ranks and passes when rank 0's run of it passed. Rank 0 leaves without
# MPI_Finalize after the loss (as freehold does), so mpirun then ends the job and its own exit code says nothing;
# rank_exit.sh records rank 0's exit code instead, and mpirun is not waited for once rank 0 is done.
#   deadline_test.sh MPIRUN_ARGS... -- DIST_WORLD_TESTS
set -u
here=$(cd "$(dirname "$0")" && pwd)
mpirun_args=
while [ "$1" != "--" ]; do mpirun_args="$mpirun_args $1"; shift; done
shift
binary=$1
dir=$(mktemp -d)
# shellcheck disable=SC2086
$mpirun_args --mca odls_base_sigkill_timeout 30 -np 2 "$here/rank_exit.sh" "$dir" "$binary" \
  --gtest_filter='WorldDeadlineTest.*' &
mpirun_pid=$!
waited=0
while [ ! -f "$dir/rank0.rc" ] && [ "$waited" -lt 600 ] && kill -0 "$mpirun_pid" 2>/dev/null; do
  sleep 0.1
  waited=$((waited + 1))
done
rc0=$(cat "$dir/rank0.rc" 2>/dev/null || echo missing)
for f in "$dir"/rank*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
kill -9 "$mpirun_pid" 2>/dev/null
wait "$mpirun_pid" 2>/dev/null
rm -rf "$dir"
echo "deadline_test.sh: rank 0 exited with $rc0"
[ "$rc0" = 0 ]
