#!/usr/bin/env bash
# Runs the test programs under valgrind memcheck (scalar kernels: valgrind does
# not emulate AVX-512). Fails on any memcheck error or leak.
set -euo pipefail
build=${1:?usage: run_valgrind.sh BUILD_DIR}
fail=0
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if MOEMLORA_ISA=scalar MOEMLORA_TEST_QUICK=1 valgrind --quiet --error-exitcode=99 --leak-check=full \
       --errors-for-leak-kinds=definite,indirect "$t" >/tmp/valgrind_$name.log 2>&1; then
    echo "valgrind: $name clean"
  else
    rc=$?
    if [ $rc -eq 77 ]; then echo "valgrind: $name skipped in whole or in part, no memcheck error"; continue; fi
    echo "valgrind: $name FAILED (rc $rc)"; tail -30 /tmp/valgrind_$name.log; fail=1
  fi
done
exit $fail
