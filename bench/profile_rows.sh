#!/usr/bin/env bash
# Where the training time goes, row by row: perf record of moemlora-bench
# measuring one training rate (--only dense|lazy), one thread, then the
# samples' self time grouped by what the code does. Prints a markdown table
# (docs/KERNELS.md, "Where the training time goes").
#   bench/profile_rows.sh BUILD_DIR [SECONDS]
# Needs perf (Debian: linux-perf) and kernel.perf_event_paranoid <= 2.
# Rows: ROWS="adapter:emb:precision:rate ..." (default below).
set -euo pipefail
build=${1:-build}
secs=${2:-8}
rows=${ROWS:-"none:8:fp32:lazy moe:8:fp32:lazy moe:8:fp32:dense none:128:fp32:lazy moe:128:fp32:lazy moe:128:fp32:dense moe:128:bf16:lazy"}
command -v perf >/dev/null || { echo "profile_rows.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for row in $rows; do
  IFS=: read -r a e p r <<<"$row"
  perf record -q -F 1999 -o "$out/$row.data" -- "$build/bench/moemlora-bench" --seconds "$secs" --windows 1 \
    --adapters "$a" --emb-list "$e" --threads-list 1 --precision-list "$p" --only "$r" --json |
    grep '^{' > "$out/$row.json"
  perf report -i "$out/$row.data" --no-children --sort symbol -q -g none --percent-limit 0 2>/dev/null |
    awk 'NF >= 3 && $1 ~ /%$/ {sub(/%/, "", $1); print $1, $3}' > "$out/$row.txt"
done
python3 - "$out" $rows <<'PY'
import json, os, re, sys
out, rows = sys.argv[1], sys.argv[2:]
groups = [  # first match wins
    ("GEMM micro-kernels", r"^mml__ukb?f?_|^mml__amx_block"),  # AMX: the tile loop
    ("GEMM packing", r"^mml__(pack|bf16_rows|bf16_pairs|gemm_|amx_tile|amx_transpose)"),
    ("embedding gathers", r"gather"),
    ("gradient scatters", r"scatter"),
    ("Adam (batch rows, dense tensors)", r"^mml__adam_(?!steps)"),
    ("Adam replays of deferred rows", r"catch_up|replay|adam_steps"),
    ("activations, loss, dropout, bias, column sums", r"relu|dropout|mask_scale|sigmoid|bce|softmax|add_bias|colsum"),
    ("adapter mixing (block scale/dot, gate)", r"block_|gate|mlora_weights|tf_"),
    ("wide part, interaction parts", r"side_|linear|fm_|cin|att|senet|bilinear|cross|inner|outer"),
    ("worker sync, scheduler, memset, page faults",
     r"memset|memcpy|spin|pool|clear_page|page_fault|sched|futex|task_switch|irq|exc_|do_user|handle_mm"),
    ("bench setup (FMA peak, random init, data)", r"peak|cos|log|rng|glorot|init|make_data|batch_at|rows_at"),
]
print("| row | samples/s | " + " | ".join(g for g, _ in groups) + " | other |")
print("|---|---|" + "---|" * (len(groups) + 1))
for row in rows:
    a, e, p, r = row.split(":")
    sums = [0.0] * (len(groups) + 1)
    for line in open(os.path.join(out, row + ".txt")):
        pct, sym = line.split(None, 1)
        k = next((i for i, (_, rx) in enumerate(groups) if re.search(rx, sym)), len(groups))
        sums[k] += float(pct)
    j = json.loads(open(os.path.join(out, row + ".json")).read().splitlines()[0])
    sps = j["train_samples_per_s" if r == "dense" else "train_lazy_samples_per_s"]
    name = f"{'MoE-MLoRA' if a == 'moe' else 'base' if a == 'none' else a}, emb {e}, {p}, {r} Adam"
    print(f"| {name} | {sps:,.0f} | " + " | ".join(f"{v:.1f}%" for v in sums) + " |")
PY
