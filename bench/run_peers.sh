#!/usr/bin/env bash
# Measures moemlora and its peers side by side: the FMA peak of one core, the
# PyTorch peer (CPU, 1 thread, OpenBLAS SkylakeX kernel) and moemlora-bench on
# the peer's model configurations, then the dense GEMM against OpenBLAS sgemm
# at the model's shapes. A shared machine's speed drifts over minutes (both
# sides move by up to 2x), so the whole comparison is repeated REPS times:
# each repetition runs every peer configuration once and moemlora-bench once
# (one window of SECONDS, as the peer measures), and the tables give the
# median of each figure and the range of each ratio over the repetitions
# (a ratio is taken within one repetition, never across).
#   bench/run_peers.sh BUILD_DIR [SECONDS] [REPS]
# The peer needs python3-torch and, for its fast BLAS, libopenblas0-pthread
# (apt-get install -y python3-torch libopenblas0-pthread); without OpenBLAS,
# torch falls back to the reference BLAS and the peer looks far slower.
set -euo pipefail
build=${1:-build}
secs=${2:-3}
reps=${3:-3}
peers=${PEERS:-$(dirname "$0")/../../shared/peers}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
[ -x "$build/bench/moemlora-bench" ] || { echo "run_peers.sh: build $build/bench/moemlora-bench first" >&2; exit 1; }

# The FMA peak is an upper bound that a slow moment can only understate: it
# is measured in every repetition (and by moemlora-bench), and the highest
# reading is the peak.
have_peak=0
if [ -f "$peers/peak_fma.c" ]; then
  gcc -O2 "$peers/peak_fma.c" -o "$out/peak_fma"
  have_peak=1
fi

have_torch=0
if [ -f "$peers/torch_moemlora.py" ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then have_torch=1; fi
for rep in $(seq "$reps"); do
  echo "repetition $rep of $reps" >&2
  if [ $have_peak -eq 1 ]; then "$out/peak_fma" | awk '{print $2}' | sort -n | tail -1 >> "$out/peak.txt"; fi
  for cfg in "none 8" "mlora 8" "moe 8" "moe 128"; do
    set -- $cfg
    if [ $have_torch -eq 1 ]; then
      OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$peers/torch_moemlora.py" bench --adapter "$1" --emb "$2" \
        --domains 10 --threads 1 --seconds "$secs" > "$out/peer_$1_$2.$rep.json"
    fi
  done
  "$build/bench/moemlora-bench" --seconds "$secs" --windows 1 --emb-list 8,128 --threads-list 1,2 --json \
    | grep '^{' > "$out/ours.$rep.json"
done
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
python3 - "$out" "$reps" <<'PY'
import json, sys, os, statistics
out, reps = sys.argv[1], int(sys.argv[2])
med = statistics.median
ours = [[json.loads(l) for l in open(os.path.join(out, f"ours.{r}.json"))] for r in range(1, reps + 1)]
peaks = [q["peak_gflops"] for o in ours for q in o if q.get("peak_gflops", 0) > 0]
if os.path.exists(os.path.join(out, "peak.txt")):
    peaks += [float(v) for v in open(os.path.join(out, "peak.txt")).read().split()]
peak = max(peaks) if peaks else 0.0  # 0: no AVX-512 here, no peak columns
pct = lambda v, p: f"{v:.0f} ({100 * v / p:.0f}%)" if p > 0 else f"{v:.0f}"
def peer(a, e, r):
    p = os.path.join(out, f"peer_{a}_{e}.{r}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def span(xs, fmt):
    return fmt(med(xs)) + (f" ({fmt(min(xs))}-{fmt(max(xs))})" if len(xs) > 1 else "")
x = lambda v: f"{v:.1f}x"
print(f"FMA peak of one core (AVX-512, highest of {len(peaks)} readings in this run): {peak:.1f} GFLOP/s\n")
print(f"Medians over {reps} repetitions; ratios: median (lowest-highest), each taken within one repetition.\n")
print("| adapter | emb | threads | train samples/s (dense Adam) | vs peer | train, lazy Adam | inference samples/s (batch 1024) | vs peer | batch-1 latency median / p99 (us) | peer latency (us) | train GFLOP/s (% of peak) | inference GFLOP/s (% of peak) | 2 threads / 1 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for i, r0 in enumerate(ours[0]):
    rs = [o[i] for o in ours]
    a, e, t = r0["adapter"], r0["emb"], r0["threads"]
    ps = [peer(a, e, k + 1) for k in range(reps)]
    tr = span([r["train_samples_per_s"] / p["train_samples_per_s"] for r, p in zip(rs, ps)], x) if ps[0] else "-"
    inf = span([r["infer_samples_per_s"] / p["infer_samples_per_s"] for r, p in zip(rs, ps)], x) if ps[0] else "-"
    pl = f"{med([p['batch1_latency_us'] for p in ps]):.0f}" if ps[0] else "-"
    gf = med([r["train_gflops"] for r in rs])
    gi = med([r["infer_gflops"] for r in rs])
    scale = "-"
    if t > 1:
        one = [[q for q in o if q["adapter"] == a and q["emb"] == e and q["threads"] == 1][0] for o in ours]
        scale = span([r["train_samples_per_s"] / q["train_samples_per_s"] for r, q in zip(rs, one)], lambda v: f"{v:.2f}x")
    print(f"| {a} | {e} | {t} | {med([r['train_samples_per_s'] for r in rs]):,.0f} | {tr} | "
          f"{med([r['train_lazy_samples_per_s'] for r in rs]):,.0f} | {med([r['infer_samples_per_s'] for r in rs]):,.0f} | {inf} | "
          f"{med([r['batch1_latency_us'] for r in rs]):.1f} / {med([r['batch1_p99_us'] for r in rs]):.1f} | {pl} | "
          f"{pct(gf, peak * t)} | {pct(gi, peak * t)} | {scale} |")
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
        print(f"| {kn} | {g:.0f} | {b:.0f} | {g/b:.2f}x | {100*g/peak:.0f}% |" if g and b and peak else f"| {kn} | {g} | {b} | - | - |")
print("\nPeer (PyTorch CPU, 1 thread, same run), median (lowest-highest) over the repetitions:")
for a, e in (("none", 8), ("mlora", 8), ("moe", 8), ("moe", 128)):
    ps = [peer(a, e, k + 1) for k in range(reps)]
    if ps[0]:
        n = lambda v: f"{v:,.0f}"
        print(f"- {a}, emb {e}: train {span([p['train_samples_per_s'] for p in ps], n)} samples/s, "
              f"inference {span([p['infer_samples_per_s'] for p in ps], n)} samples/s, "
              f"batch-1 {med([p['batch1_latency_us'] for p in ps]):.1f} us")
PY
