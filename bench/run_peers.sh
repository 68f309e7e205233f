#!/usr/bin/env bash
# Measures moemlora and its peers side by side in one run: the FMA peak of one
# core, the PyTorch peer (CPU, 1 thread, OpenBLAS SkylakeX kernel) and
# moemlora-bench, on the peer's model configurations; prints a markdown table
# with the ratios.   bench/run_peers.sh BUILD_DIR [SECONDS]
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
for cfg in "none 8" "mlora 8" "moe 8" "moe 128"; do
  set -- $cfg
  if [ $have_torch -eq 1 ]; then
    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$peers/torch_moemlora.py" bench --adapter "$1" --emb "$2" \
      --domains 10 --threads 1 --seconds "$secs" > "$out/peer_$1_$2.json"
  fi
done
"$build/bench/moemlora-bench" --seconds "$secs" --emb-list 8,128 --threads-list 1,2 --json > "$out/ours.txt"
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
print("\nPeer (PyTorch CPU, 1 thread, same run):")
for a, e in (("none", 8), ("mlora", 8), ("moe", 8), ("moe", 128)):
    p = peer(a, e)
    if p:
        print(f"- {a}, emb {e}: train {p['train_samples_per_s']:,} samples/s, inference {p['infer_samples_per_s']:,} samples/s, batch-1 {p['batch1_latency_us']} us")
PY
