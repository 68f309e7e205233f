#!/usr/bin/env bash
# Reproduces docs/RESULTS.md (MovieLens-100K) or docs/RESULTS_ML1M.md
# (MovieLens-1M): every model x adapter with the paper's MovieLens settings
# (moemlora-train --paper movielens), domains by gender, age and occupation,
# per-domain AUCs of the MLP, and the MoE experts-per-domain sweep.
#   scripts/results.sh [BUILD_DIR] [RAW_DIR] [OUT_MD]
# RAW_DIR holds u.data (MovieLens-100K) or users.dat (MovieLens-1M).
set -euo pipefail
build=${1:-build}
raw=${2:-../shared/data/ml-100k}
threads=${THREADS:-2}
if [ -f "$raw/u.data" ]; then
  name="MovieLens-100K"; out=${3:-docs/RESULTS.md}
elif [ -f "$raw/users.dat" ]; then
  name="MovieLens-1M"; out=${3:-docs/RESULTS_ML1M.md}
else
  echo "results.sh: neither $raw/u.data (MovieLens-100K) nor $raw/users.dat (MovieLens-1M) found" >&2; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models="mlp wdl deepfm nfm pnn dcn xdeepfm autoint fibinet"
for split in gender age occupation; do
  "$build/examples/moemlora-prepare" movielens --raw "$raw" --split "$split" --out "$work/$split" >/dev/null
  for model in $models; do
    for adapter in none mlora moe; do
      "$build/examples/moemlora-train" --data "$work/$split" --model "$model" --adapter "$adapter" \
        --paper movielens --threads "$threads" --quiet --results "$work/r_${split}_${model}_${adapter}.json" >/dev/null
      echo "done $split $model $adapter" >&2
    done
  done
  for epd in 2 4; do
    "$build/examples/moemlora-train" --data "$work/$split" --adapter moe --experts-per-domain "$epd" \
      --paper movielens --threads "$threads" --quiet --results "$work/e_${split}_${epd}.json" >/dev/null
  done
  cp "$work/r_${split}_mlp_moe.json" "$work/e_${split}_1.json"
done
for split in gender age occupation; do
  sed -n 's/^domain\.\([0-9]*\)=\(.*\)/\1 \2/p' "$work/$split/meta.txt" > "$work/names_$split.txt"
done
python3 - "$work" "$out" "$threads" "$name" "$raw" <<'PY'
import json, sys, os, datetime
work, out, threads, name, raw = sys.argv[1:6]
models = "mlp wdl deepfm nfm pnn dcn xdeepfm autoint fibinet".split()
adapters = ["none", "mlora", "moe"]
reduce = {"wdl": 16, "nfm": 4, "autoint": 4, "deepfm": 32, "dcn": 16, "xdeepfm": 32, "fibinet": 32, "pnn": 16, "mlp": 16}
L = []
L.append(f"# Results: {name}, every model with every adapter\n")
L.append("Made by `scripts/results.sh` (prepare with seed 123, 60/20/20 stratified split per domain, "
         "emb 8, tower 256-128-64, dropout 0.5, Adam 1e-3, batch 1024, patience 3, the paper's per-model "
         "adapter reduction (`--paper movielens`: " + ", ".join(f"{m} {reduce[m]}" for m in models) + "), "
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
for split in ["gender", "age", "occupation"]:
    names = {}
    for line in open(os.path.join(work, f"names_{split}.txt")):
        k, _, v = line.rstrip("\n").partition(" ")
        names[int(k)] = v
    r = [json.load(open(os.path.join(work, f"r_{split}_mlp_{a}.json"))) for a in adapters]
    L.append(f"\n## Per-domain test AUC, MLP, domains by {split}\n")
    L.append("| domain | n_test | base | MLoRA | MoE-MLoRA |")
    L.append("|---|---|---|---|---|")
    for i, d in enumerate(r[0]["domains"]):
        aucs = [x["domains"][i]["auc"] for x in r]
        best = max(range(3), key=lambda j: aucs[j])
        cells = [(f"**{v:.4f}**" if j == best else f"{v:.4f}") for j, v in enumerate(aucs)]
        L.append(f"| {names.get(d['domain'], d['domain'])} | {d['n_test']} | " + " | ".join(cells) + " |")
L.append("\n## MoE-MLoRA experts per domain (MLP)\n")
L.append("| split | 1 per domain | 2 per domain | 4 per domain |")
L.append("|---|---|---|---|")
for split in ["gender", "age", "occupation"]:
    v = [json.load(open(os.path.join(work, f"e_{split}_{k}.json")))["weighted_auc"] for k in (1, 2, 4)]
    L.append(f"| {split} | " + " | ".join(f"{x:.4f}" for x in v) + " |")
L.append(f"\nReproduce: `cmake -B build && cmake --build build -j2 && scripts/results.sh build {raw}`.\n")
tmp = out + ".tmp"
open(tmp, "w").write("\n".join(L))
os.replace(tmp, out)
print(f"wrote {out}")
PY
