#!/usr/bin/env bash
# Reproduces the bf16 section of docs/RESULTS_ML1M.md: WDL and DeepFM with
# each adapter on MovieLens-1M (the paper's layout, domains by gender and by
# occupation, --paper movielens), trained with --precision fp32 and with
# --precision bf16 from the same seeds; prints the markdown section (test
# weighted AUC, mean ± sd over the seeds, and the paired bf16 - fp32
# difference).
#   scripts/results_bf16.sh [BUILD_DIR] [RAW_ML1M_DIR] > section.md
# Environment: SEEDS ("1 2 3"), THREADS (1), WORK (a folder that keeps the
# prepared sets and each run's JSON, so an interrupted run resumes; default:
# a temporary folder), REPORT_ONLY (1: run nothing, report the runs WORK
# holds; a pair missing a run is left out and the seeds counted), ONLY
# (run only these rows, as split:model:adapter, e.g. "gender:wdl:moe"; to add
# seeds to some rows, then report with every seed in SEEDS).
set -euo pipefail
build=${1:-build}
raw=${2:-../shared/data/ml-1m}
seeds=${SEEDS:-1 2 3}
threads=${THREADS:-1}
[ -f "$raw/users.dat" ] || { echo "results_bf16.sh: $raw/users.dat (MovieLens-1M) not found" >&2; exit 1; }
if [ -n "${WORK:-}" ]; then work=$WORK; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
for split in gender occupation; do
  [ "${REPORT_ONLY:-0}" = 1 ] && break
  [ -f "$work/$split/meta.txt" ] ||
    "$build/examples/moemlora-prepare" movielens --raw "$raw" --split "$split" --out "$work/$split" >/dev/null
  for seed in $seeds; do
    for model in wdl deepfm; do
      for adapter in none mlora moe; do
        [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $split:$model:$adapter "* ]] || continue
        for prec in fp32 bf16; do
          json="$work/${split}_${model}_${adapter}_${prec}_s$seed.json"
          [ -f "$json" ] && continue
          "$build/examples/moemlora-train" --data "$work/$split" --model "$model" --adapter "$adapter" \
            --paper movielens --precision "$prec" --seed "$seed" --threads "$threads" --quiet \
            --results "$json" >/dev/null
          echo "done $(basename "$json" .json)" >&2
        done
      done
    done
  done
done
python3 - "$work" "$seeds" "$threads" <<'PY'
import json, os, sys, statistics
work, seeds, threads = sys.argv[1], sys.argv[2].split(), sys.argv[3]
def wauc(split, m, a, p, s):
    f = os.path.join(work, f"{split}_{m}_{a}_{p}_s{s}.json")
    return json.load(open(f))["weighted_auc"] if os.path.exists(f) else None
def ms(xs):
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"
def isa():
    return json.load(open(os.path.join(work, f"gender_wdl_none_bf16_s{seeds[0]}.json"))).get("isa", "?")
print("| split | model | adapter | seeds | fp32 WAUC | bf16 WAUC | bf16 - fp32 (paired) | within 0.0005 |")
print("|---|---|---|---|---|---|---|---|")
worst = 0.0
for split in ["gender", "occupation"]:
    for m in ["wdl", "deepfm"]:
        for a, an in [("none", "base"), ("mlora", "MLoRA"), ("moe", "MoE-MLoRA")]:
            pairs = [(wauc(split, m, a, "fp32", s), wauc(split, m, a, "bf16", s)) for s in seeds]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if not pairs:
                print(f"| {split} | {m} | {an} | 0 | n/a | n/a | n/a | n/a |")
                continue
            f, b = [x for x, _ in pairs], [y for _, y in pairs]
            d = [y - x for x, y in pairs]
            mean_d = statistics.mean(d)
            worst = max(worst, abs(mean_d))
            print(f"| {split} | {m} | {an} | {len(pairs)} | {ms(f)} | {ms(b)} | {mean_d:+.4f} ± "
                  f"{statistics.stdev(d) if len(d) > 1 else 0.0:.4f} | {'yes' if abs(mean_d) <= 0.0005 else 'no'} |")
print(f"\nSeeds {', '.join(seeds)}; {threads} thread(s); kernels {isa()}. Largest |mean difference|: {worst:.4f}.")
PY
