#!/bin/sh
# Cross-compiles test programs for aarch64 and runs them under qemu-aarch64:
# the kernels (NEON against the scalar reference), the layers' and the models'
# gradient checks on the NEON kernels. qemu's default CPU (max) has BF16, so
# the bf16 GEMMs run bfdot; test_kernels runs again with them forced to the
# emulated path and on a CPU without BF16 (cortex-a72), where detection must
# fall back. Usage: tests/neon_cross.sh BUILD_DIR
set -eu
if [ $# -lt 1 ]; then echo "usage: $0 BUILD_DIR" >&2; exit 2; fi
here=$(cd "$(dirname "$0")" && pwd)
out="$1/neon"
mkdir -p "$out"
build() { # name
    nice -n 10 aarch64-linux-gnu-gcc -O2 -std=c11 -Wall -Wextra -Werror -DMOEMLORA_SOURCE_DIR="\"$here/..\"" \
        "$here/$1.c" -o "$out/$1_aarch64" /usr/lib/aarch64-linux-gnu/libsleef.so -lm -lpthread
}
run() { # name, log tag, extra environment
    name=$1 log="$out/$1_aarch64$2.log"; shift 2
    env "$@" nice -n 10 qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/${name}_aarch64" >"$log" 2>&1 || {
        cat "$log"; echo "neon_cross: $name $* FAILED" >&2; exit 1; }
    tail -n 3 "$log"
}
expect() { # log tag, pattern, what it means
    grep -q "$2" "$out/test_kernels_aarch64$1.log" || { echo "neon_cross: $3" >&2; exit 1; }
}
build test_kernels
run test_kernels ""
expect "" '^neon ' "NEON table was not tested"
expect "" '^bf16 gemm (neon): bfdot$' "bf16 GEMMs did not run bfdot on a CPU with BF16"
run test_kernels _emulate MOEMLORA_BF16=emulate
expect _emulate '^bf16 gemm (neon): emulated$' "MOEMLORA_BF16=emulate did not force the emulated bf16 path"
run test_kernels _a72 QEMU_CPU=cortex-a72
expect _a72 '^bf16 gemm (neon): emulated$' "a CPU without BF16 did not fall back to the emulated bf16 path"
for t in test_layers test_model test_models; do build $t; done
run test_layers "" MOEMLORA_ISA=neon
run test_model "" MOEMLORA_ISA=neon MOEMLORA_TEST_QUICK=1 MOEMLORA_TEST_ONE_THREAD=1
# native: resolve fails (and the test with it) unless the bf16 steps run bfdot
run test_models "" MOEMLORA_ISA=neon MOEMLORA_BF16=native MOEMLORA_TEST_QUICK=1 MOEMLORA_TEST_ONE_THREAD=1
grep -q '^bf16 precision (bfdot GEMMs)' "$out/test_models_aarch64.log" || {
    echo "neon_cross: test_models' bf16 steps did not run bfdot" >&2; exit 1; }
echo "neon_cross: ok"
