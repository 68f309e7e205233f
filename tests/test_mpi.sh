#!/usr/bin/env bash
# moemlora-train-mpi under mpiexec -n 2 against moemlora-train in one process,
# on the built-in synthetic data:
#   - the same schedule: weighted test AUC within 0.01 of the one-process run;
#   - rank 0 alone prints the tables and writes --results and --save, and the
#     checkpoint it wrote serves predictions;
#   - the processes really train one model: given different data (different
#     synthetic seeds, MPMD), they stop with "different data" instead of training;
#   - a failure (missing data) ends every process with a non-zero exit, no hang.
#   tests/test_mpi.sh BIN_DIR MPIEXEC
set -u
bin=$1
mpiexec=$2
[ -x "$bin/moemlora-train-mpi" ] || { echo "skipped: $bin/moemlora-train-mpi not built"; exit 77; }
if [ "$(id -u)" -eq 0 ]; then # Open MPI refuses root unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAIL: $2"; fail=1; fi; }
wauc() { sed -n 's/.*"weighted_auc": \([0-9.]*\).*/\1/p' "$1"; }

args=(--syn-samples 30000 --syn-users 600 --syn-items 200 --syn-domains 3 --hidden 32,16 --epochs 4 --threads 1)
timeout 300 "$mpiexec" -n 2 --oversubscribe "$bin/moemlora-train-mpi" "${args[@]}" \
  --results "$dir/mpi.json" --save "$dir/mpi.mml" > "$dir/mpi.out" 2> "$dir/mpi.err"
rc=$?
check "[ $rc -eq 0 ]" "mpiexec -n 2 moemlora-train-mpi exits 0 (got $rc)"
[ $rc -eq 0 ] || cat "$dir/mpi.err"
"$bin/moemlora-train" "${args[@]}" --quiet --results "$dir/one.json" > /dev/null 2>&1
check "[ -s $dir/mpi.json ] && [ -s $dir/one.json ]" "both runs wrote their results"
a=$(wauc "$dir/mpi.json"); b=$(wauc "$dir/one.json")
echo "weighted test AUC: 2 processes ${a:-?}, one process ${b:-?}"
check "awk -v a='${a:-0}' -v b='${b:-9}' 'BEGIN { d = a - b; exit !(d < 0.01 && d > -0.01) }'" \
  "2 processes within 0.01 of one process"
n=$(grep -c "^final:" "$dir/mpi.out")
check "[ '$n' = 1 ]" "one final line printed (by rank 0), got $n"
check "grep -q '2 processes' $dir/mpi.out" "the model line names the 2 processes"
p=$(echo "1,2,0" | "$bin/moemlora-serve" "$dir/mpi.mml" 2>&1)
check "awk -v p='$p' 'BEGIN { exit !(p > 0 && p < 1) }'" "rank 0's checkpoint serves a probability ($p)"
timeout 120 "$mpiexec" --oversubscribe -n 1 "$bin/moemlora-train-mpi" "${args[@]}" --syn-seed 1 \
  : -n 1 "$bin/moemlora-train-mpi" "${args[@]}" --syn-seed 2 > /dev/null 2> "$dir/diff.err"
rc=$?
check "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'different data' $dir/diff.err" \
  "processes with different data stop with \"different data\" (exit $rc)"
timeout 120 "$mpiexec" -n 2 --oversubscribe "$bin/moemlora-train-mpi" --data "$dir/missing" > /dev/null 2> "$dir/bad.err"
rc=$?
check "[ $rc -ne 0 ] && [ $rc -ne 124 ]" "missing data: non-zero exit without a hang (got $rc)"
check "grep -q 'missing' $dir/bad.err" "missing data: the error names the directory"
[ $fail -eq 0 ] && echo "test_mpi: passed" || echo "test_mpi: FAILED"
exit $fail
