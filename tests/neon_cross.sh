#!/bin/sh
# Cross-compiles test programs for aarch64 and runs them under qemu-aarch64:
# the kernels (NEON against the scalar reference), the layers' and the models'
# gradient checks on the NEON kernels. Usage: tests/neon_cross.sh BUILD_DIR
set -eu
if [ $# -lt 1 ]; then echo "usage: $0 BUILD_DIR" >&2; exit 2; fi
here=$(cd "$(dirname "$0")" && pwd)
out="$1/neon"
mkdir -p "$out"
run() { # name, extra environment
    name=$1; shift
    aarch64-linux-gnu-gcc -O2 -std=c11 -Wall -Wextra -Werror -DMOEMLORA_SOURCE_DIR="\"$here/..\"" \
        "$here/$name.c" -o "$out/${name}_aarch64" /usr/lib/aarch64-linux-gnu/libsleef.so -lm -lpthread
    log="$out/${name}_aarch64.log"
    env "$@" qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/${name}_aarch64" >"$log" 2>&1 || {
        cat "$log"; echo "neon_cross: $name FAILED" >&2; exit 1; }
    tail -n 3 "$log"
}
run test_kernels
grep -q '^neon ' "$out/test_kernels_aarch64.log" || { echo "neon_cross: NEON table was not tested" >&2; exit 1; }
run test_layers MOEMLORA_ISA=neon
run test_model MOEMLORA_ISA=neon MOEMLORA_TEST_QUICK=1 MOEMLORA_TEST_ONE_THREAD=1
run test_models MOEMLORA_ISA=neon MOEMLORA_TEST_QUICK=1 MOEMLORA_TEST_ONE_THREAD=1
echo "neon_cross: ok"
