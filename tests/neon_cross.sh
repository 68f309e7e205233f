#!/bin/sh
# Cross-compiles tests/test_kernels.c for aarch64 and runs it under qemu-aarch64
# (NEON kernels against the scalar reference). Usage: tests/neon_cross.sh BUILD_DIR
set -eu
if [ $# -lt 1 ]; then echo "usage: $0 BUILD_DIR" >&2; exit 2; fi
here=$(cd "$(dirname "$0")" && pwd)
out="$1/neon"
mkdir -p "$out"
aarch64-linux-gnu-gcc -O2 -std=c11 -Wall -Wextra -Werror "$here/test_kernels.c" \
    -o "$out/test_kernels_aarch64" /usr/lib/aarch64-linux-gnu/libsleef.so -lm
log="$out/test_kernels_aarch64.log"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/test_kernels_aarch64" >"$log" 2>&1 || {
    cat "$log"; echo "neon_cross: FAILED" >&2; exit 1; }
cat "$log"
grep -q '^neon ' "$log" || { echo "neon_cross: NEON table was not tested" >&2; exit 1; }
echo "neon_cross: ok"
