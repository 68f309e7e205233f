#!/usr/bin/env bash
# Where a training step's time goes, phase by phase, at 1 and 2 threads
# (docs/KERNELS.md, "Two threads: where a step goes"): builds moemlora-bench
# against a temporary copy of moemlora.h with clocks around each phase
# (bench/phase_times.patch; the library itself carries no timers), then runs
# each row; the bench prints microseconds per step at its exit.
#   bench/phase_times.sh [SECONDS]
# Rows: ROWS="adapter:emb:dense|lazy ..." (default below), in PRECISION
# (fp32, the default, or bf16: --precision-list). Needs gcc, patch and SLEEF
# (scripts/install-deps.sh).
set -euo pipefail
secs=${1:-4}
rows=${ROWS:-"none:8:dense none:8:lazy moe:8:dense moe:8:lazy"}
prec=${PRECISION:-fp32}
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$src/moemlora.h" "$src/moemlora_simd.h" "$tmp/"
patch -s -d "$tmp" -p1 < "$src/bench/phase_times.patch"
sed 's|"../moemlora.h"|"moemlora.h"|' "$src/bench/moemlora_bench.c" > "$tmp/bench.c"
gcc -O2 -I"$tmp" "$tmp/bench.c" -o "$tmp/bench" -lsleef -lm -lpthread
for row in $rows; do
  IFS=: read -r a e r <<<"$row"
  for t in 1 2; do
    echo "== $a emb $e, $prec, $r Adam, $t thread(s)"
    "$tmp/bench" --seconds "$secs" --windows 1 --adapters "$a" --emb-list "$e" --threads-list "$t" --only "$r" \
      --precision-list "$prec" 2>&1 |
      grep -E '^(none|mlora|moe) |us/step|^part'
  done
done
