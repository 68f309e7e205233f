#!/usr/bin/env bash
# Reproduces docs/RESULTS_SWR.md: every model x adapter on MovieLens-1M under
# the Scenario-Wise Rec protocol (3 domains by age, label rating > 3, random
# 80/10/10 split, dim 16), with its seven feature fields and with the paper's
# three fields on the same rows (--features paper), over several training
# seeds; then MovieLens-1M with every attribute (--features all) next to the
# paper's three fields, domains by gender, age and occupation, with the
# paper's MovieLens settings (--paper movielens).
#   scripts/results_swr.sh [BUILD_DIR] [RAW_ML1M_DIR] [OUT_MD]
# Environment: SEEDS (training seeds of the SWR runs, "1 2 3"), THREADS (2),
# WORK (a folder that keeps the prepared sets and each run's JSON: runs whose
# JSON is there are not run again, so an interrupted run resumes; default: a
# temporary folder), PARTS ("swr all": which of the two tables to run),
# MODELS (the models to run, all nine by default; rows of the others read
# "n/a"), ALL_SEEDS (training seeds of the every-attribute runs, "1 2 3"),
# REPORT_ONLY (1: run nothing, report what WORK holds; rows with fewer
# seeds say how many), COMMIT (the commit the runs were made with, named in
# the report; default this checkout's), RUNS (where each run's JSON goes and
# is read from; default WORK: docs/runs/ml1m holds the runs of the published
# report, so `REPORT_ONLY=1 RUNS=docs/runs/ml1m` rebuilds it from them). A
# part left out of PARTS keeps its section of an existing OUT_MD as it is, so
# one part can be rerun alone.
set -euo pipefail
build=${1:-build}
raw=${2:-../shared/data/ml-1m}
out=${3:-docs/RESULTS_SWR.md}
seeds=${SEEDS:-1 2 3}
threads=${THREADS:-2}
parts=${PARTS:-swr all}
[ -f "$raw/users.dat" ] || { echo "results_swr.sh: $raw/users.dat (MovieLens-1M) not found" >&2; exit 1; }
if [ -n "${WORK:-}" ]; then work=$WORK; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
runs=${RUNS:-$work}
mkdir -p "$runs"
all_models="mlp wdl deepfm nfm pnn dcn xdeepfm autoint fibinet"
models=${MODELS:-$all_models}
all_seeds=${ALL_SEEDS:-1 2 3}
report_only=${REPORT_ONLY:-}
commit=${COMMIT:-$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)}
prep() { # name, then moemlora-prepare movielens flags
  local name=$1; shift
  [ -z "$report_only" ] || return 0
  [ -f "$work/$name/meta.txt" ] || "$build/examples/moemlora-prepare" movielens --raw "$raw" "$@" --out "$work/$name" >/dev/null
}
train() { # json, data, flags...
  local json=$1 data=$2; shift 2
  [ -f "$json" ] || [ -n "$report_only" ] && return 0
  "$build/examples/moemlora-train" --data "$data" --threads "$threads" --quiet --results "$json.tmp" "$@" >/dev/null
  mv "$json.tmp" "$json" # an interrupted run leaves no JSON, so it runs again
  echo "done $(basename "$json" .json)" >&2
}
case " $parts " in *" swr "*)
  prep swr --protocol swr
  prep swr3 --protocol swr --features paper
  for seed in $seeds; do
    for model in $models; do
      for adapter in none mlora moe; do
        for set in swr swr3; do
          train "$runs/${set}_${model}_${adapter}_s$seed.json" "$work/$set" --model "$model" --adapter "$adapter" \
            --emb 16 --seed "$seed"
        done
      done
    done
  done;;
esac
case " $parts " in *" all "*)
  for split in gender age occupation; do
    prep "all_$split" --split "$split" --features all
    prep "paper_$split" --split "$split"
    for seed in $all_seeds; do
      for model in $models; do
        for adapter in none mlora moe; do
          for set in all paper; do
            train "$runs/${set}_${split}_${model}_${adapter}_s$seed.json" "$work/${set}_$split" --model "$model" \
              --adapter "$adapter" --paper movielens --seed "$seed"
          done
        done
      done
    done
  done;;
esac
python3 - "$work" "$out" "$threads" "$seeds" "$parts" "$all_models" "$all_seeds" "$commit" "$runs" <<'PY'
import json, os, sys, statistics, datetime, platform
work, out, threads, seeds, parts, models, all_seeds, commit, runs = sys.argv[1:10]
seeds, models, all_seeds = seeds.split(), models.split(), all_seeds.split()
adapters = [("none", "base"), ("mlora", "MLoRA"), ("moe", "MoE-MLoRA")]
def load(p):
    p = os.path.join(runs, p)
    return json.load(open(p)) if os.path.exists(p) else None
def ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs: return None
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs))
def wauc(name, seed_list):
    """mean, sd, n of the weighted AUC of the runs name_s<seed>.json that exist"""
    return ms([(load(f"{name}_s{seed}.json") or {}).get("weighted_auc") for seed in seed_list])
def leads(x, y):
    """x leads y: both (mean, sd, n), the difference of the means beyond the larger sd"""
    return x[0] - y[0] > max(x[1], y[1])
def fmt(t, d=4):
    if t is None: return "n/a"
    return f"{t[0]:.{d}f} ± {t[1]:.{d}f}" if t[2] > 1 else f"{t[0]:.{d}f}"
def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): name = line.split(":", 1)[1].strip(); break
        fam = mod = "?"
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu family"): fam = line.split(":")[1].strip()
            if line.startswith("model\t"): mod = line.split(":")[1].strip()
        return f"{name} (family {fam}, model {mod})"
    except OSError:
        return platform.processor() or "unknown CPU"
def names(d):
    r = {}
    try:
        for line in open(os.path.join(work, d, "meta.txt")):
            if line.startswith("domain.") and "=" in line:
                k, v = line.strip().split("=", 1); r[int(k[7:])] = v
    except OSError:
        pass
    return r
heads = {"swr": "\n## Scenario-Wise Rec protocol\n", "all": "\n## Every attribute (`--features all`) next to the paper's three fields\n"}
kept = {}  # the sections of an existing report whose part is not run now
if os.path.exists(out):
    text = open(out).read()
    for p in heads:
        i = text.find(heads[p])
        if p not in parts.split() and i >= 0:
            j = min([k for k in (text.find(h, i + 1) for h in heads.values()) if k > i] + [len(text)])
            kept[p] = text[i:j].rstrip("\n") + "\n"
made = (f"Made by `scripts/results_swr.sh` on {datetime.date.today().isoformat()}, commit {commit}, {cpu()}, "
        f"{threads} thread(s)." + (f" Each run's JSON is in `{runs}`." if os.environ.get("RUNS") else "") + "\n")
title = {"swr": "feature fields (Scenario-Wise Rec protocol)", "all": "every attribute"}
L = ["# Results: MovieLens-1M with " + " and with ".join(title[p] for p in heads if p in parts.split() or p in kept) + "\n",
     "Test-set numbers; AUC per domain, weighted AUC (WAUC, by test rows) and log loss. "
     "Mean ± sd over the training seeds; a difference is called a lead only where it exceeds the larger sd. "
     "Each section names the commit, CPU and thread count its runs were made with.\n"]
if "swr" in kept:
    L.append(kept["swr"])
elif "swr" in parts.split():
    dn = names("swr")
    L.append(heads["swr"])
    L.append(made)
    L.append("`moemlora-prepare movielens --protocol swr`: 3 domains by age ({1, 18}, {25}, {35, 45, 50, 56}), "
             "label rating > 3, fields user, movie, gender, occupation, zip, first genre (categorical, dim 16) and "
             "age (numeric, min-max), a random 80/10/10 split (prepare seed 123). `--features paper` keeps the same "
             "rows, split and domains with the three fields user, movie, domain (dim 16). Training: "
             f"`moemlora-train --emb 16 --seed S` (S in {', '.join(seeds)}), every other setting the default "
             "(tower 256-128-64, dropout 0.5, Adam 1e-3, batch 1024, patience 3, adapter rank d_out/16).\n")
    for metric, heading, total in [("auc", "Test AUC per domain and weighted AUC (WAUC)", "weighted_auc"),
                                   ("logloss", "Test log loss per domain and over the whole test set", "logloss")]:
        L.append(f"\n### {heading}\n")
        L.append("| model | adapter | fields | seeds | " + " | ".join(f"{dn.get(k, k)}" for k in range(3)) +
                 (" | WAUC |" if metric == "auc" else " | all |"))
        L.append("|---|---|---|---|" + "---|" * 4)
        for m in models:
            for a, an in adapters:
                for s, sn in [("swr", "7 fields"), ("swr3", "3 fields")]:
                    rs = [load(f"{s}_{m}_{a}_s{seed}.json") for seed in seeds]
                    rs = [r for r in rs if r]
                    if not rs:
                        L.append(f"| {m} | {an} | {sn} | 0 | n/a | n/a | n/a | n/a |"); continue
                    dom = [fmt(ms([r["domains"][k][metric] for r in rs])) for k in range(3)]
                    L.append(f"| {m} | {an} | {sn} | {len(rs)} | " + " | ".join(dom) +
                             f" | {fmt(ms([r[total] for r in rs]))} |")
    more = []
    for m in models:
        for a, an in adapters:
            x, y = wauc(f"swr_{m}_{a}", seeds), wauc(f"swr3_{m}_{a}", seeds)
            if x and y and x[2] == y[2] == len(seeds):
                more.append((leads(x, y), x[0] - y[0]))
    if more:
        d = [v for _, v in more]
        L.append(f"\nSeven fields against three (WAUC), rows with all {len(seeds)} seeds on both sides: "
                 f"the seven lead on {sum(1 for w, _ in more if w)} of {len(more)} by more than the spread "
                 f"(difference {min(d):+.4f} to {max(d):+.4f}).\n")
    short = sorted({m for m in models for a, _ in adapters for t in ["swr", "swr3"]
                    if (wauc(f"{t}_{m}_{a}", seeds) or (0, 0, 0))[2] < len(seeds)})
    if short:
        L.append(f"Rows with fewer than {len(seeds)} seeds (their runs are not all made yet): {', '.join(short)}.\n")
    L.append("\nLeads of the adapters over the base model (WAUC, 7 fields) larger than the spread, among the "
             f"rows with all {len(seeds)} seeds:\n")
    lead = []
    for m in models:
        b = wauc(f"swr_{m}_none", seeds)
        for a, an in adapters[1:]:
            x = wauc(f"swr_{m}_{a}", seeds)
            if b and x and b[2] == x[2] == len(seeds) and leads(x, b):
                lead.append(f"{m} {an} (+{x[0] - b[0]:.4f})")
    L.append("- " + (", ".join(lead) if lead else "none") + "\n")
if "all" in kept:
    L.append(kept["all"])
elif "all" in parts.split():
    L.append(heads["all"])
    L.append(made)
    L.append("`moemlora-prepare movielens --split S --features all`: user, movie, gender, age, occupation, zip "
             "(categorical) and genres (multi-hot), label rating == 5, the paper's stratified 60/20/20 split "
             "(prepare seed 123; the same rows as the three-field set). Training: `moemlora-train --paper movielens` "
             f"(emb 8, the paper's per-model adapter reduction) with seeds {', '.join(all_seeds)}. "
             "Test WAUC, mean ± sd over the seeds.\n")
    def cell(t):
        if t is None: return "n/a"
        return fmt(t) + (f" ({t[2]} seed{'s' if t[2] > 1 else ''})" if t[2] < len(all_seeds) else "")
    for split in ["gender", "age", "occupation"]:
        have = [f for f in os.listdir(runs) if f.startswith(f"all_{split}_") and f.endswith(".json")]
        L.append(f"\n### Domains by {split}\n")
        if not have:
            L.append("Not run yet.\n"); continue
        L.append("| model | base, 3 fields | base, all | MLoRA, 3 fields | MLoRA, all | MoE-MLoRA, 3 fields | MoE-MLoRA, all |")
        L.append("|---|---|---|---|---|---|---|")
        nlead, rows = 0, 0
        for m in models:
            row = []
            for a, _ in adapters:
                p, q = (wauc(f"{s}_{split}_{m}_{a}", all_seeds) for s in ["paper", "all"])
                row += [cell(p), cell(q)]
                if p and q and p[2] == q[2] == len(all_seeds):
                    rows += 1
                    nlead += leads(q, p)
            L.append(f"| {m} | " + " | ".join(row) + " |")
        if rows:
            L.append(f"\nEvery attribute leads the three fields on {nlead} of the {rows} model-adapter pairs that "
                     f"have all {len(all_seeds)} seeds, by more than the spread.\n")
open(out, "w").write("\n".join(L) + "\n")
print(f"wrote {out}")
PY
