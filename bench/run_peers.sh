#!/usr/bin/env bash
# Measures moemlora and its peer side by side: the FMA peak of one core, the
# PyTorch peer (torch_moemlora.py, OpenBLAS SkylakeX kernel) and
# moemlora-bench on the peer's model configurations, then the dense GEMM
# against OpenBLAS sgemm at the model's shapes; prints markdown tables ready
# for the README's Performance section.
#
# Each of our rows is compared with the strongest peer configuration of the
# same semantics at no more threads than ours: our dense Adam with the peer's
# `--impl fused` (all experts as two GEMMs per layer, torch.optim.Adam), our
# lazy Adam with `--impl fused --sparse-emb` (SparseAdam on the embeddings),
# our inference with the faster of the two. The peer runs at 1 and 2 threads
# (PyTorch at 2 threads can be far slower than at 1), and the tables name the
# configuration each ratio used. The peer's bfloat16 autocast variants
# (`--bf16`, PyTorch's own mixed precision) are candidates too (PEER_BF16=0
# leaves them out: they double the peer's time). Our rows run in each of
# PRECISIONS (default "fp32,bf16": moemlora-bench --precision-list).
#
# A shared machine's speed drifts over minutes (both sides move by up to 2x),
# so the whole comparison is repeated REPS times: each repetition runs every
# peer configuration once and moemlora-bench once (one window of SECONDS, as
# the peer measures), and the tables give the median of each figure and the
# range of each ratio over the repetitions (a ratio is taken within one
# repetition, never across; there the peer's fastest candidate counts).
# Each repetition also runs moemlora-bench --hog: our 2 threads against 1,
# without and with a process spinning on one CPU, in 4 windows of SECONDS/4
# where the two thread counts take turns (its ratio: the median of the 4
# side-by-side pairs; its rates: the best window).
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

# Rows: adapter and embedding width (the base model at emb 128 included).
rows=("none 8" "mlora 8" "moe 8" "none 128" "moe 128")
peer_threads=(1 2)
peer_modes=("" "--sparse-emb")
peer_prec=("")
if [ "${PEER_BF16:-1}" = 1 ]; then peer_prec+=("--bf16"); fi
precisions=${PRECISIONS:-fp32,bf16}

# The FMA peak is an upper bound that a slow moment can only understate: it
# is measured in every repetition (and by moemlora-bench), and the highest
# reading is the peak.
if [ -f "$peers/peak_fma.c" ]; then gcc -O2 "$peers/peak_fma.c" -o "$out/peak_fma"; fi
grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' > "$out/cpu.txt" || true

have_torch=0
if [ -f "$peers/torch_moemlora.py" ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then have_torch=1; fi
run_peer() { # adapter emb threads mode prec rep
  local f="$out/peer_$1_$2_$3${4:+_sparse}${5:+_bf16}.$6.json"
  # shellcheck disable=SC2086
  if ! OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$peers/torch_moemlora.py" bench --impl fused $4 $5 \
      --adapter "$1" --emb "$2" --domains 10 --threads "$3" --seconds "$secs" > "$f"; then
    echo "run_peers.sh: peer $* failed" >&2
    rm -f "$f"
  fi
}
for rep in $(seq "$reps"); do
  echo "repetition $rep of $reps" >&2
  if [ -x "$out/peak_fma" ]; then "$out/peak_fma" | awk '{print $2}' | sort -n | tail -1 >> "$out/peak.txt"; fi
  if [ $have_torch -eq 1 ]; then
    for row in "${rows[@]}"; do
      read -r adapter emb <<<"$row"
      for t in "${peer_threads[@]}"; do
        for mode in "${peer_modes[@]}"; do
          for prec in "${peer_prec[@]}"; do run_peer "$adapter" "$emb" "$t" "$mode" "$prec" "$rep"; done
        done
      done
    done
  fi
  for sel in "none,mlora,moe 8" "none,moe 128"; do
    read -r adapters emb <<<"$sel"
    "$build/bench/moemlora-bench" --seconds "$secs" --windows 1 --adapters "$adapters" --emb-list "$emb" --threads-list 1,2 \
      --precision-list "$precisions" --json | grep '^{' >> "$out/ours.$rep.json"
  done
  # a busy machine: our 2 threads / 1 thread beside a process spinning on one CPU
  "$build/bench/moemlora-bench" --hog --seconds "$secs" --windows 4 --adapters none,moe --emb-list 8,128 --json |
    grep '^{' >> "$out/busy.json" || true
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
python3 - "$out" "$reps" "$secs" <<'PY'
import collections, glob, json, os, re, statistics, sys
out, reps, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
ours = [[json.loads(l) for l in open(os.path.join(out, f"ours.{r}.json"))] for r in range(1, reps + 1)]
peaks = [q["peak_gflops"] for o in ours for q in o if q.get("peak_gflops", 0) > 0]
if os.path.exists(os.path.join(out, "peak.txt")):
    peaks += [float(v) for v in open(os.path.join(out, "peak.txt")).read().split()]
peak = max(peaks) if peaks else 0.0  # 0: no AVX-512 here, no peak columns
cpu = open(os.path.join(out, "cpu.txt")).read().strip() if os.path.exists(os.path.join(out, "cpu.txt")) else ""
peer_runs = collections.defaultdict(list)  # (adapter, emb, rep) -> the peer's runs
for f in glob.glob(os.path.join(out, "peer_*.json")):
    p = json.load(open(f))
    peer_runs[(p["adapter"], p["emb"], int(re.search(r"\.(\d+)\.json$", f).group(1)))].append(p)

def name(p):
    return (f"fused, {'sparse' if p['sparse_emb'] else 'dense'}{', bf16' if p.get('bf16') else ''}, "
            f"{p['threads']} thread{'s' if p['threads'] > 1 else ''}")

def fastest(a, e, r, t, key, sparse=None):
    """The peer's fastest run of repetition r at no more than t threads (sparse: its Adam; None: either)."""
    c = [p for p in peer_runs[(a, e, r)] if p["threads"] <= t and (sparse is None or p["sparse_emb"] == sparse)]
    return max(c, key=lambda p: p[key]) if c else None

def lowest_latency(a, e, r, t):
    c = [p["batch1_latency_us"] for p in peer_runs[(a, e, r)] if p["threads"] <= t]
    return min(c) if c else None

def span(xs, fmt):
    return fmt(med(xs)) + (f" ({fmt(min(xs))}-{fmt(max(xs))})" if len(xs) > 1 else "")

def which(ps):
    """The configuration the ratios used; with the share of repetitions when the fastest changed."""
    n = collections.Counter(name(p) for p in ps).most_common()
    return n[0][0] if len(n) == 1 else "; ".join(f"{k} ({c}/{len(ps)})" for k, c in n)

def versus(rs, a, e, t, ours_key, peer_key, sparse):
    """'ratio (range)', 'peer configuration' of our rows rs (one per repetition)."""
    ps = [fastest(a, e, k + 1, t, peer_key, sparse) for k in range(len(rs))]
    if not all(ps):
        return "-", "-"
    return span([r[ours_key] / p[peer_key] for r, p in zip(rs, ps)], lambda v: f"{v:.1f}x"), which(ps)

pct = lambda v, p: f"{v:.0f} ({100 * v / p:.0f}%)" if p > 0 else f"{v:.0f}"
n0 = lambda v: f"{v:,.0f}"
kof = lambda q: (q["adapter"], q.get("precision", "fp32"), q["emb"], q["threads"])
keys = [kof(r) for r in ours[0]]
table = {k: [[q for q in o if kof(q) == k][0] for o in ours] for k in keys}

print(f"CPU: {cpu or 'unknown'}; FMA peak of one core (AVX-512, highest of {len(peaks)} readings in this run): "
      f"{peak:.1f} GFLOP/s\n")
print(f"Medians over {reps} repetitions of {secs} s windows. Ratios: median (lowest-highest), each taken within one "
      "repetition against the peer's fastest configuration of the same semantics at no more threads than ours "
      "(named; with the share of repetitions where the fastest changed).\n")
def rel(rs, qs, key, key2=None):
    """Our rate ratio rs/qs, repetition by repetition."""
    return span([r[key] / q[key2 or key] for r, q in zip(rs, qs)], lambda v: f"{v:.2f}x")

print("| adapter | precision | emb | threads | train samples/s, dense Adam | of it, catch-up | vs peer | peer (dense Adam) "
      "| train samples/s, lazy Adam | vs peer | peer (lazy Adam) | 2 threads / 1 (dense) | bf16 / fp32 (lazy) "
      "| this / base model (lazy) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (a, p, e, t), rs in table.items():
    vd, nd = versus(rs, a, e, t, "train_samples_per_s", "train_samples_per_s", False)
    vl, nl = versus(rs, a, e, t, "train_lazy_samples_per_s", "train_samples_per_s", True)
    scale = rel(rs, table[(a, p, e, 1)], "train_samples_per_s") if t > 1 and (a, p, e, 1) in table else "-"
    vs32 = rel(rs, table[(a, "fp32", e, t)], "train_lazy_samples_per_s") if p != "fp32" and (a, "fp32", e, t) in table else "-"
    # a time ratio: the base model's rate over this one's
    vsbase = (rel(table[("none", p, e, t)], rs, "train_lazy_samples_per_s")
              if a != "none" and ("none", p, e, t) in table else "-")
    print(f"| {a} | {p} | {e} | {t} | {n0(med([r['train_samples_per_s'] for r in rs]))} | "
          f"{100 * med([r['train_catchup_share'] for r in rs]):.0f}% | {vd} | {nd} | "
          f"{n0(med([r['train_lazy_samples_per_s'] for r in rs]))} | {vl} | {nl} | {scale} | {vs32} | {vsbase} |")
print("\n\"this / base model\" is a ratio of training times (the base model's rate over this row's), same precision, "
      "emb and threads.")

print("\n| adapter | precision | emb | threads | inference samples/s (batch 1024) | vs peer | peer "
      "| batch-1 latency median / p99 (us) | peer batch-1 latency (us) | bf16 / fp32 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (a, p, e, t), rs in table.items():
    vi, ni = versus(rs, a, e, t, "infer_samples_per_s", "infer_samples_per_s", None)
    pl = [lowest_latency(a, e, k + 1, t) for k in range(reps)]
    pl = f"{med(pl):.0f}" if None not in pl else "-"
    vs32 = rel(rs, table[(a, "fp32", e, t)], "infer_samples_per_s") if p != "fp32" and (a, "fp32", e, t) in table else "-"
    print(f"| {a} | {p} | {e} | {t} | {n0(med([r['infer_samples_per_s'] for r in rs]))} | {vi} | {ni} | "
          f"{med([r['batch1_latency_us'] for r in rs]):.1f} / {med([r['batch1_p99_us'] for r in rs]):.1f} | {pl} | "
          f"{vs32} |")

print("\nExecuted FLOPs per sample (counted, see moemlora_bench.c) and the rates they give, % of the fp32 FMA peak "
      "of the threads used (bf16 rows run AMX tiles where the CPU has them, 16 times the fp32 FMA's rate, or "
      "vdpbf16ps, twice it, and may pass 100%):\n")
print("| adapter | precision | emb | threads | train FLOPs/sample | train GFLOP/s, dense Adam | train GFLOP/s, lazy Adam "
      "| inference FLOPs/sample | inference GFLOP/s |")
print("|---|---|---|---|---|---|---|---|---|")
for (a, p, e, t), rs in table.items():
    g = lambda k: med([r[k] for r in rs])
    print(f"| {a} | {p} | {e} | {t} | {n0(g('train_flops_per_sample'))} | {pct(g('train_gflops'), peak * t)} | "
          f"{pct(g('train_lazy_gflops'), peak * t)} | {n0(g('infer_flops_per_sample'))} | "
          f"{pct(g('infer_gflops'), peak * t)} |")

if peak > 0:
    print("\nWhat the arithmetic allows: each row's training rate if every executed FLOP ran at the peak of the "
          "threads used (fp32 rows: the FMA peak above; bf16 rows: the rate of the bf16 path named, 2 times it for "
          "vdpbf16ps and bfdot, 16 times for AMX tiles, 1 for the emulation; an upper bound, since the adapters' "
          "small products and everything around the GEMMs run in fp32), as a ratio to the peer's median above "
          "(fastest configuration of the same semantics at no more threads); the share of that peak the row's "
          "target needs (emb 8: 6x the peer; emb 128: 5x lazy, 10x dense) and the share it ran at. A target that "
          "needs more than 100% is beyond this CPU at that precision. \"FLOPs / base\" is the arithmetic's own "
          "floor for \"this / base model\".\n")
    print("| adapter | precision | emb | threads | bf16 path | at the peak: train samples/s | dense: limit vs peer "
          "| dense: target needs | dense: ran at | lazy: limit vs peer | lazy: target needs | lazy: ran at "
          "| FLOPs / base |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    mults = {"amx": 16.0, "vdpbf16ps": 2.0, "bfdot": 2.0}
    for (a, p, e, t), rs in table.items():
        flops = med([r["train_flops_per_sample"] for r in rs])
        path = rs[0].get("bf16_path", "?") if p == "bf16" else "-"
        rate = peak * t * 1e9 * (mults.get(path, 1.0) if p == "bf16" else 1.0)
        cells = []
        for key, sparse in (("train_samples_per_s", False), ("train_lazy_samples_per_s", True)):
            ps = [fastest(a, e, k + 1, t, "train_samples_per_s", sparse) for k in range(len(rs))]
            target = 6.0 if e <= 8 else (5.0 if sparse else 10.0) if e >= 128 else None
            ran = f"{100 * med([r[key] for r in rs]) * flops / rate:.0f}%"
            if not all(ps):
                cells += ["-", "-", ran]
                continue
            peer = med([q["train_samples_per_s"] for q in ps])
            cells += [f"{rate / flops / peer:.1f}x",
                      f"{100 * target * peer * flops / rate:.0f}%" if target else "-", ran]
        base = table.get(("none", p, e, t))
        fb = f"{flops / med([r['train_flops_per_sample'] for r in base]):.2f}x" if base and a != "none" else "-"
        print(f"| {a} | {p} | {e} | {t} | {path} | {n0(rate / flops)} | " + " | ".join(cells) + f" | {fb} |")

gemm, blas = {}, {}
if os.path.exists(os.path.join(out, "gemm.txt")):
    for line in open(os.path.join(out, "gemm.txt")):
        nm, val = line.split()
        k = nm.split("_K")[1]
        gemm[(int(k.split("_N")[0]), int(k.split("_N")[1]))] = float(val.replace("G/s", "").replace("GFLOP/s=", ""))
if os.path.exists(os.path.join(out, "blas.txt")):
    for line in open(os.path.join(out, "blas.txt")):
        k, n, v = line.split()
        blas[(int(k), int(n))] = float(v)
if gemm:
    print("\nDense GEMM C[1024,N] = A[1024,K] B[K,N], one core, GFLOP/s (same run):\n")
    print("| (K,N) | moemlora gemm_nn (AVX-512) | OpenBLAS sgemm (SkylakeX, via torch) | ratio | % of FMA peak |")
    print("|---|---|---|---|---|")
    for kn in [(24, 256), (256, 128), (128, 64), (384, 256)]:
        g, b = gemm.get(kn), blas.get(kn)
        print(f"| {kn} | {g:.0f} | {b:.0f} | {g/b:.2f}x | {100*g/peak:.0f}% |" if g and b and peak else f"| {kn} | {g} | {b} | - | - |")

if any(peer_runs.values()):
    print("\nPeer (PyTorch CPU, `torch_moemlora.py bench --impl fused`, same run), median (lowest-highest) over the "
          "repetitions:\n")
    print("| adapter | emb | configuration | train samples/s | inference samples/s | batch-1 latency (us) |")
    print("|---|---|---|---|---|---|")
    for a, e in dict.fromkeys((a, e) for a, _, e, _ in keys):
        runs = collections.defaultdict(list)
        for k in range(reps):
            for p in peer_runs[(a, e, k + 1)]:
                runs[name(p)].append(p)
        for nm, ps in sorted(runs.items(), key=lambda kv: (kv[1][0]["threads"], kv[0])):
            print(f"| {a} | {e} | {nm} | {span([p['train_samples_per_s'] for p in ps], n0)} | "
                  f"{span([p['infer_samples_per_s'] for p in ps], n0)} | "
                  f"{med([p['batch1_latency_us'] for p in ps]):.0f} |")

busy = collections.defaultdict(list)
if os.path.exists(os.path.join(out, "busy.json")):
    for line in open(os.path.join(out, "busy.json")):
        r = json.loads(line)
        busy[(r["adapter"], r["emb"])].append(r)
if busy:
    print("\nBusy machine (`moemlora-bench --hog`): training samples/s at 1 and 2 threads, without and with a process "
          "spinning on one CPU, the thread counts taking turns in 4 windows (a rate: the best window; a ratio: the median "
          "of the 4 side-by-side pairs), median (lowest-highest ratio) over the repetitions:\n")
    print("| adapter | emb | 1 thread | 2 threads | 2/1 | hog: 1 thread | hog: 2 threads | hog: 2/1 |")
    print("|---|---|---|---|---|---|---|---|")
    for (a, e), rs in busy.items():
        m = lambda k: statistics.median(r[k] for r in rs)
        rng = lambda k: f"{min(r[k] for r in rs):.2f}-{max(r[k] for r in rs):.2f}"
        print(f"| {a} | {e} | {m('train_1thr'):.0f} | {m('train_2thr'):.0f} | {m('ratio'):.2f}x ({rng('ratio')}) | "
              f"{m('hog_train_1thr'):.0f} | {m('hog_train_2thr'):.0f} | {m('hog_ratio'):.2f}x ({rng('hog_ratio')}) |")
PY
