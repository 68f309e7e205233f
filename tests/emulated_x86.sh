#!/bin/sh
# Runs the built test_kernels on emulated CPUs so every x86 dispatch path runs:
#   qemu-x86_64 -cpu max      (no AVX-512): detection must pick avx2
#   qemu-x86_64 -cpu Nehalem  (no AVX):     detection must pick scalar
# and checks with objdump that zmm registers appear only in *_avx512 functions
# (plus SLEEF's, which live in libsleef). Usage: tests/emulated_x86.sh BUILD_DIR
set -eu
if [ $# -lt 1 ]; then echo "usage: $0 BUILD_DIR" >&2; exit 2; fi
bin="$1/tests/test_kernels"
[ -x "$bin" ] || { echo "emulated_x86: $bin not built" >&2; exit 1; }
fail=0
run() { # cpu expected-best
    log=$(qemu-x86_64 -cpu "$1" "$bin" 2>&1) || { echo "$log"; echo "emulated_x86: -cpu $1 FAILED" >&2; fail=1; return; }
    echo "$log" | tail -n 5
    echo "$log" | grep -q "^best ISA: $2\$" || { echo "emulated_x86: -cpu $1 picked the wrong ISA (want $2)" >&2; fail=1; }
}
run max avx2
run Nehalem scalar
# zmm only inside functions whose name ends in _avx512; GCC clone suffixes
# (.part.0, .constprop.1, .isra.0, .cold) are stripped first. SLEEF's own code
# lives in libsleef.so, not in this binary.
bad=$(objdump -d --no-show-raw-insn "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = $2; sub(/^</, "", fn); sub(/>:$/, "", fn); sub(/\..*$/, "", fn); next }
    /%zmm/ { if (fn !~ /_avx512$/) print fn }' | sort -u)
if [ -n "$bad" ]; then echo "emulated_x86: zmm outside _avx512 functions:"; echo "$bad"; fail=1; fi
[ $fail -eq 0 ] && echo "emulated_x86: ok"
exit $fail
