#!/usr/bin/env bash
# Measures moemlora and its peers side by side in one run: the FMA peak of one
# core, the PyTorch peer (CPU, 1 thread, OpenBLAS SkylakeX kernel) and
# moemlora-bench, on the peer's model configurations; prints a markdown table
# with the ratios; then the dense GEMM against OpenBLAS sgemm at the model's
# shapes, in the same run.   bench/run_peers.sh BUILD_DIR [SECONDS]
# The peer needs python3-torch and, for its fast BLAS, libopenblas0-pthread
# (apt-get install -y python3-torch libopenblas0-pthread); without OpenBLAS,
# torch falls back to the reference BLAS and the peer looks far slower.
set -euo pipefail
build=${1:-build}
secs=${2:-3}
peers=${PEERS:-$(dirname "$0")/../../shared/peers}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
[ -x "$build/bench/moemlora-bench" ] || { echo "run_peers.sh: build $build/bench/moemlora-bench first" >&2; exit 1; }

peak="n/a"
if [ -f "$peers/peak_fma.c" ]; then
  gcc -O2 "$peers/peak_fma.c" -o "$out/peak_fma"
  peak=$("$out/peak_fma" | awk '{print $2}' | sort -n | tail -1)
fi
echo "FMA peak (AVX-512, 1 core): $peak GFLOP/s" >&2

have_torch=0
if [ -f "$peers/torch_moemlora.py" ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then have_torch=1; fi
# the peer: best of three runs of S/3 seconds each (moemlora-bench takes the
# best of three windows of S/3 seconds)
win=$(python3 -c "print($secs / 3)")
for cfg in "none 8" "mlora 8" "moe 8" "moe 128"; do
  set -- $cfg
  if [ $have_torch -eq 1 ]; then
    for rep in 1 2 3; do
      OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$peers/torch_moemlora.py" bench --adapter "$1" --emb "$2" \
        --domains 10 --threads 1 --seconds "$win" > "$out/peer_$1_$2.$rep.json"
    done
    python3 - "$out" "$1" "$2" <<'PY'
import json, sys
out, a, e = sys.argv[1:]
runs = [json.load(open(f"{out}/peer_{a}_{e}.{r}.json")) for r in (1, 2, 3)]
best = dict(runs[0])
best["train_samples_per_s"] = max(r["train_samples_per_s"] for r in runs)
best["infer_samples_per_s"] = max(r["infer_samples_per_s"] for r in runs)
best["batch1_latency_us"] = min(r["batch1_latency_us"] for r in runs)
json.dump(best, open(f"{out}/peer_{a}_{e}.json", "w"))
PY
  fi
done
"$build/bench/moemlora-bench" --seconds "$secs" --emb-list 8,128 --threads-list 1,2 --json > "$out/ours.txt"
if [ -x "$build/bench/bench_kernels" ]; then
  "$build/bench/bench_kernels" --benchmark_filter='gemm_nn/avx512/M1024_K(24_N256|256_N128|128_N64|384_N256)$' \
    --benchmark_min_time=0.5 2>/dev/null | awk '/^gemm_nn/ {for (i = 1; i <= NF; i++) if ($i ~ /^GFLOP\/s=/) print $1, $i}' > "$out/gemm.txt" || true
fi
if [ $have_torch -eq 1 ]; then
  OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 - > "$out/blas.txt" <<'PY'
import time, torch
torch.set_num_threads(1)
for K, N in [(24, 256), (256, 128), (128, 64), (384, 256)]:
    a, b = torch.rand(1024, K), torch.rand(K, N)
    for _ in range(20): a @ b
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < 1.0:
        a @ b; n += 1
    print(K, N, 2 * 1024 * K * N * n / (time.perf_counter() - t) / 1e9)
PY
fi
grep '^{' "$out/ours.txt" > "$out/ours.json"
python3 - "$out" "$peak" <<'PY'
import json, sys, os
out, peak = sys.argv[1], sys.argv[2]
ours = [json.loads(l) for l in open(os.path.join(out, "ours.json"))]
def peer(a, e):
    p = os.path.join(out, f"peer_{a}_{e}.json")
    return json.load(open(p)) if os.path.exists(p) else None
print(f"FMA peak of one core (AVX-512, measured in this run): {peak} GFLOP/s\n")
print("| adapter | emb | threads | train samples/s (dense Adam) | vs peer | train, lazy Adam | inference samples/s (batch 1024) | vs peer | batch-1 latency median / p99 (us) | peer latency (us) | train GFLOP/s (% of peak) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    p = peer(r["adapter"], r["emb"])
    tr = f"{r['train_samples_per_s']/p['train_samples_per_s']:.1f}x" if p else "-"
    inf = f"{r['infer_samples_per_s']/p['infer_samples_per_s']:.1f}x" if p else "-"
    pl = f"{p['batch1_latency_us']:.0f}" if p else "-"
    pk = float(peak) * r["threads"] if peak not in ("n/a", "") else r["peak_gflops"] * r["threads"]
    print(f"| {r['adapter']} | {r['emb']} | {r['threads']} | {r['train_samples_per_s']:,.0f} | {tr} | "
          f"{r['train_lazy_samples_per_s']:,.0f} | {r['infer_samples_per_s']:,.0f} | {inf} | "
          f"{r['batch1_latency_us']:.1f} / {r['batch1_p99_us']:.1f} | {pl} | {r['train_gflops']:.0f} ({100*r['train_gflops']/pk:.0f}%) |")
gemm = {}
if os.path.exists(os.path.join(out, "gemm.txt")):
    for line in open(os.path.join(out, "gemm.txt")):
        name, val = line.split()
        k = name.split("_K")[1]
        gemm[(int(k.split("_N")[0]), int(k.split("_N")[1]))] = float(val.replace("G/s", "").replace("GFLOP/s=", ""))
blas = {}
if os.path.exists(os.path.join(out, "blas.txt")):
    for line in open(os.path.join(out, "blas.txt")):
        k, n, v = line.split()
        blas[(int(k), int(n))] = float(v)
if gemm:
    print("\nDense GEMM C[1024,N] = A[1024,K] B[K,N], one core, GFLOP/s (same run):\n")
    print("| (K,N) | moemlora gemm_nn (AVX-512) | OpenBLAS sgemm (SkylakeX, via torch) | ratio | % of FMA peak |")
    print("|---|---|---|---|---|")
    for kn in [(24, 256), (256, 128), (128, 64), (384, 256)]:
        g = gemm.get(kn)
        b = blas.get(kn)
        pk = float(peak) if peak not in ("n/a", "") else 0
        print(f"| {kn} | {g:.0f} | {b:.0f} | {g/b:.2f}x | {100*g/pk:.0f}% |" if g and b and pk else f"| {kn} | {g} | {b} | - | - |")
print("\nPeer (PyTorch CPU, 1 thread, same run):")
for a, e in (("none", 8), ("mlora", 8), ("moe", 8), ("moe", 128)):
    p = peer(a, e)
    if p:
        print(f"- {a}, emb {e}: train {p['train_samples_per_s']:,} samples/s, inference {p['infer_samples_per_s']:,} samples/s, batch-1 {p['batch1_latency_us']} us")
PY
