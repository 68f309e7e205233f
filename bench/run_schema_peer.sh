#!/usr/bin/env bash
# The Ali-CCP-like schema row side by side: `moemlora-bench --schema aliccp`
# (20 categorical fields, vocabularies 10 to 1M, 10 domains, emb 16, WDL
# tower 256-128-64, batch 1024) against bench/torch_schema_peer.py, the same
# model in PyTorch written the way a speed-minded user writes it (fused
# experts; --sparse-emb for lazy Adam). Each repetition runs every peer
# configuration once and moemlora-bench once; ratios are taken within a
# repetition against the peer's fastest configuration of the same semantics at
# no more threads than ours, and the table gives their median and range.
#   bench/run_schema_peer.sh BUILD_DIR [SECONDS] [REPS]
set -euo pipefail
build=${1:-build}
secs=${2:-3}
reps=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
[ -x "$build/bench/moemlora-bench" ] || { echo "run_schema_peer.sh: build $build/bench/moemlora-bench first" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "run_schema_peer.sh: needs python3-torch" >&2; exit 1; }
threads=(1 2)
for r in $(seq 1 "$reps"); do
  echo "repetition $r of $reps" >&2
  for a in none moe; do
    for t in "${threads[@]}"; do
      for mode in "" "--sparse-emb"; do
        OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$here/torch_schema_peer.py" --adapter $a --threads "$t" \
          $mode --seconds "$secs" > "$out/peer_${a}_${t}${mode:+_sparse}.$r.json"
      done
    done
  done
  "$build/bench/moemlora-bench" --schema aliccp --adapters none,moe --threads-list 1,2 --windows 1 \
    --seconds "$secs" --json | grep '^{' > "$out/ours.$r.json"
done
grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' > "$out/cpu.txt" || true
/usr/bin/python3 - "$out" "$reps" <<'EOF'
import glob, json, os, statistics as st, sys
out, reps = sys.argv[1], int(sys.argv[2])
cpu = open(os.path.join(out, "cpu.txt")).read().strip()
print(f"CPU: {cpu}; schema aliccp (20 categorical fields, vocabularies 10 to 1M, 10 domains), emb 16, batch 1024")
print()
print("| adapter | threads | ours: train dense | vs peer | ours: train lazy | vs peer | ours: inference | vs peer | peer configurations that won |")
print("|---|---|---|---|---|---|---|---|---|")
def peer(a, t, sparse, r):
    p = os.path.join(out, f"peer_{a}_{t}{'_sparse' if sparse else ''}.{r}.json")
    return json.load(open(p)) if os.path.exists(p) else None
for a in ("none", "moe"):
    for t in (1, 2):
        rows = {"dense": [], "lazy": [], "infer": []}
        ours = {"dense": [], "lazy": [], "infer": []}
        won = set()
        for r in range(1, reps + 1):
            o = [json.loads(l) for l in open(os.path.join(out, f"ours.{r}.json"))]
            o = next(x for x in o if x["adapter"] == a and x["threads"] == t)
            cands = {(tt, sp): peer(a, tt, sp, r) for tt in (1, 2) if tt <= t for sp in (0, 1)}
            cands = {k: v for k, v in cands.items() if v}
            for key, ok, mine, sel in (("dense", "train_samples_per_s", o["train_samples_per_s"], lambda k: k[1] == 0),
                                       ("lazy", "train_samples_per_s", o["train_lazy_samples_per_s"], lambda k: k[1] == 1),
                                       ("infer", "infer_samples_per_s", o["infer_samples_per_s"], lambda k: True)):
                best_k = max((k for k in cands if sel(k)), key=lambda k: cands[k][ok])
                rows[key].append(mine / cands[best_k][ok])
                ours[key].append(mine)
                won.add(f"{key}: {'sparse' if best_k[1] else 'dense'}, {best_k[0]} thread{'s' if best_k[0] > 1 else ''}")
        f = lambda v: f"{st.median(v):.1f}x ({min(v):.1f}x-{max(v):.1f}x)"
        print(f"| {a} | {t} | {st.median(ours['dense']):,.0f} | {f(rows['dense'])} | {st.median(ours['lazy']):,.0f} | "
              f"{f(rows['lazy'])} | {st.median(ours['infer']):,.0f} | {f(rows['infer'])} | {'; '.join(sorted(won))} |")
print()
print("Peer samples/s (median over repetitions):")
print()
print("| adapter | configuration | train | inference |")
print("|---|---|---|---|")
for a in ("none", "moe"):
    for t in (1, 2):
        for sp in (0, 1):
            v = [peer(a, t, sp, r) for r in range(1, reps + 1)]
            v = [x for x in v if x]
            if v:
                print(f"| {a} | fused, {'sparse' if sp else 'dense'}, {t} thread{'s' if t > 1 else ''} | "
                      f"{st.median(x['train_samples_per_s'] for x in v):,.0f} | {st.median(x['infer_samples_per_s'] for x in v):,.0f} |")
EOF
