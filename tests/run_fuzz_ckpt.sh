#!/bin/sh
# Fuzzes the checkpoint reader for SECONDS seconds.
#   tests/run_fuzz_ckpt.sh BUILD_DIR SECONDS
# BUILD_DIR is a clang build configured with -DMOEMLORA_BUILD_FUZZ=ON; the
# fuzz_ckpt target is built if needed. New inputs go to a scratch corpus in
# BUILD_DIR (the seed corpus in tests/corpus/fuzz_ckpt is only read); crashes
# are written to BUILD_DIR/fuzz_ckpt-artifacts/.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
secs=$2
here=$(cd "$(dirname "$0")" && pwd)
cmake --build "$build" --target fuzz_ckpt
fuzzer=$build/tests/fuzz_ckpt
[ -x "$fuzzer" ] || { echo "$fuzzer not built (configure with clang and -DMOEMLORA_BUILD_FUZZ=ON)" >&2; exit 1; }
work=$build/fuzz_ckpt-corpus
art=$build/fuzz_ckpt-artifacts
mkdir -p "$work" "$art"
exec "$fuzzer" -max_total_time="$secs" -print_final_stats=1 -max_len=4096 \
    -artifact_prefix="$art/" "$work" "$here/corpus/fuzz_ckpt"
