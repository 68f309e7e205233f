#!/usr/bin/env bash
# Reproduces docs/RESULTS.md: every model x adapter on MovieLens-100K split by
# gender, age and occupation, plus the MoE experts-per-domain sweep.
#   scripts/results.sh [BUILD_DIR] [RAW_ML100K_DIR] [OUT_MD]
set -euo pipefail
build=${1:-build}
raw=${2:-../shared/data/ml-100k}
out=${3:-docs/RESULTS.md}
threads=${THREADS:-2}
[ -f "$raw/u.data" ] || { echo "results.sh: $raw/u.data not found (MovieLens-100K raw files)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models="mlp wdl deepfm nfm pnn dcn xdeepfm autoint fibinet"
for split in gender age occupation; do
  "$build/examples/moemlora-prepare" movielens --raw "$raw" --split "$split" --out "$work/$split" >/dev/null
  for model in $models; do
    for adapter in none mlora moe; do
      "$build/examples/moemlora-train" --data "$work/$split" --model "$model" --adapter "$adapter" \
        --threads "$threads" --quiet --results "$work/r_${split}_${model}_${adapter}.json" >/dev/null
      echo "done $split $model $adapter" >&2
    done
  done
  for epd in 2 4; do
    "$build/examples/moemlora-train" --data "$work/$split" --adapter moe --experts-per-domain "$epd" \
      --threads "$threads" --quiet --results "$work/e_${split}_${epd}.json" >/dev/null
  done
  cp "$work/r_${split}_mlp_moe.json" "$work/e_${split}_1.json"
done
python3 - "$work" "$out" "$threads" <<'PY'
import json, sys, os, datetime
work, out, threads = sys.argv[1], sys.argv[2], sys.argv[3]
models = "mlp wdl deepfm nfm pnn dcn xdeepfm autoint fibinet".split()
adapters = ["none", "mlora", "moe"]
L = []
L.append("# Results: MovieLens-100K, every model with every adapter\n")
L.append("Made by `scripts/results.sh` (prepare with seed 123, 60/20/20 stratified split per domain, "
         "emb 8, tower 256-128-64, dropout 0.5, Adam 1e-3, batch 1024, patience 3, "
         f"{threads} threads, kernels as detected). Test-set weighted AUC (WAUC) and mean AUC over domains; "
         "the best adapter per model and split is in bold.\n")
for split in ["gender", "age", "occupation"]:
    L.append(f"\n## Domains by {split}\n")
    L.append("| model | base WAUC | MLoRA WAUC | MoE-MLoRA WAUC | base mean | MLoRA mean | MoE-MLoRA mean |")
    L.append("|---|---|---|---|---|---|---|")
    for m in models:
        r = [json.load(open(os.path.join(work, f"r_{split}_{m}_{a}.json"))) for a in adapters]
        w = [x["weighted_auc"] for x in r]
        best = max(range(3), key=lambda i: w[i])
        cells = [(f"**{v:.4f}**" if i == best else f"{v:.4f}") for i, v in enumerate(w)]
        L.append(f"| {m} | " + " | ".join(cells) + " | " + " | ".join(f"{x['mean_auc']:.4f}" for x in r) + " |")
L.append("\n## MoE-MLoRA experts per domain (MLP)\n")
L.append("| split | 1 per domain | 2 per domain | 4 per domain |")
L.append("|---|---|---|---|")
for split in ["gender", "age", "occupation"]:
    v = [json.load(open(os.path.join(work, f"e_{split}_{k}.json")))["weighted_auc"] for k in (1, 2, 4)]
    L.append(f"| {split} | " + " | ".join(f"{x:.4f}" for x in v) + " |")
L.append("\nReproduce: `cmake -B build && cmake --build build -j2 && scripts/results.sh build ../shared/data/ml-100k`.\n")
tmp = out + ".tmp"
open(tmp, "w").write("\n".join(L))
os.replace(tmp, out)
print(f"wrote {out}")
PY
