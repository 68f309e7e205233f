#!/usr/bin/env python3
"""Checks what moemlora-bench counts, not how fast anything runs.

  check_bench_counts.py MOEMLORA_BENCH

Runs moemlora-bench briefly and checks, per row of its JSON:
- inference FLOPs per sample are those of the tower that runs: the folded
  tower reads only the user and item columns in its first layer (2 emb wide;
  the domain's part is in the bias), the base model all three (3 emb);
- training FLOPs per sample are exactly 3x the forward for the base model
  (forward, input and weight gradients), at least that with adapters, and
  below the unfolded all-experts count where domain folding runs fewer
  (MoE-MLoRA, emb 8, first layer);
- without dropout (--dropout 0) domain-folded training runs the base weight
  inside each run's folded matrix: MoE-MLoRA's training count is the base
  model's plus the per-step folding terms (experts' A_e B_e, the mixtures),
  under 1.3x the base model's at emb 8 and 128, where with dropout the base
  products run beside the adapters' (about 2x);
- one and two threads count the same inference work (every worker counted);
- bf16 rows (--precision-list fp32,bf16) count the same training work as
  fp32 (the tower's bf16 GEMMs are counted too);
- the GFLOP/s figures are those counts times the rates;
- no dense-Adam row is still owed its catch-up when the training rate ends;
- --hog reports, per row, the four rates and the two ratios (2 threads / 1,
  without and with the spinning process), all positive.
"""
import json, subprocess, sys

HID = (256, 128, 64)


def tower(d_in):
    dims = (d_in,) + HID
    return sum(2 * dims[i] * dims[i + 1] for i in range(3)) + 2 * HID[-1]


def unfolded_all_experts(emb, experts, reduce=16):
    """Forward FLOPs per sample as the peer's analytic count has them."""
    dims = (3 * emb,) + HID
    ad = sum(2 * experts * (dims[i] * max(dims[i + 1] // reduce, 1) + max(dims[i + 1] // reduce, 1) * dims[i + 1])
             for i in range(3))
    return tower(3 * emb) + ad


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = []
    for adapters, emb in (("none,mlora,moe", "8"), ("none,moe", "128")):
        cmd = [sys.argv[1], "--seconds", "0.05", "--windows", "1", "--adapters", adapters, "--emb-list", emb,
               "--threads-list", "1,2", "--precision-list", "fp32,bf16", "--json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows += [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    bad = []

    def expect(ok, what):
        if not ok:
            bad.append(what)

    cmd = [sys.argv[1], "--seconds", "0.05", "--windows", "1", "--adapters", "none,moe", "--emb-list", "8,128",
           "--threads-list", "1", "--only", "dense", "--dropout", "0", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    d0 = {(r["adapter"], r["emb"]): r["train_flops_per_sample"]
          for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}
    for e in (8, 128):
        base, moe = d0.get(("none", e)), d0.get(("moe", e))
        expect(base is not None and abs(base - 3 * tower(3 * e)) <= 1e-3 * base, f"dropout 0, emb {e}: base model training {base} FLOPs/sample, "
               f"not 3x the forward {tower(3 * e)}")
        expect(base is not None and moe is not None and base < moe < 1.3 * base,
               f"dropout 0, emb {e}: MoE-MLoRA training {moe} FLOPs/sample against the base model's {base}: "
               f"the folded layers should carry the base product")

    for r in rows:
        a, e, t = r["adapter"], r["emb"], r["threads"]
        tag = f"{a} {r.get('precision', 'fp32')} emb {e} threads {t}"
        want_inf = tower(3 * e if a == "none" else 2 * e)
        # figures derived from the rates where the bench does not report its counts
        inf = r.get("infer_flops_per_sample", r["infer_gflops"] * 1e9 / r["infer_samples_per_s"])
        tr = r.get("train_flops_per_sample", r["train_gflops"] * 1e9 / r["train_samples_per_s"])
        expect(abs(inf - want_inf) <= 1e-3 * want_inf, f"{tag}: inference {inf:.0f} FLOPs/sample, the tower runs {want_inf}")
        if a == "none":
            expect(abs(tr - 3 * inf) <= 1e-3 * tr, f"{tag}: training {tr:.0f} FLOPs/sample, not 3x the forward {inf:.0f}")
        else:
            expect(tr > 3 * want_inf, f"{tag}: training {tr:.0f} FLOPs/sample, below 3x the folded forward {want_inf}")
        if a == "moe" and e == 8:
            full = 3 * unfolded_all_experts(e, 10)
            expect(tr < 0.9 * full, f"{tag}: training {tr:.0f} FLOPs/sample credits every expert unfolded ({full})")
        for k, sps in (("train_gflops", "train_samples_per_s"), ("infer_gflops", "infer_samples_per_s")):
            per = "train_flops_per_sample" if k == "train_gflops" else "infer_flops_per_sample"
            if per in r:
                g = r[per] * r[sps] / 1e9
                expect(abs(r[k] - g) <= 0.01 * g + 0.01, f"{tag}: {k} {r[k]} is not {per} x {sps} ({g:.3f})")
        expect(r.get("train_rows_owed", -1) == 0, f"{tag}: dense-Adam rows still owed their catch-up after the "
               f"training rate: {r.get('train_rows_owed', 'not reported')}")
        share = r.get("train_catchup_share", -1.0)
        expect(0.0 <= share < 1.0, f"{tag}: catch-up share {share} (not reported, or not a share)")
    for a, e in (("none", 8), ("mlora", 8), ("moe", 8), ("none", 128), ("moe", 128)):
        for p in ("fp32", "bf16"):
            inf = {r["threads"]: r.get("infer_flops_per_sample") for r in rows
                   if r["adapter"] == a and r["emb"] == e and r.get("precision") == p}
            expect(inf.get(1) is not None and inf.get(1) == inf.get(2), f"{a} {p} emb {e}: inference FLOPs by threads {inf}")
        for t in (1, 2):
            tr = {r.get("precision"): r.get("train_flops_per_sample") for r in rows
                  if r["adapter"] == a and r["emb"] == e and r["threads"] == t}
            expect(tr.get("fp32") is not None and tr.get("fp32") == tr.get("bf16"),
                   f"{a} emb {e} threads {t}: training FLOPs by precision {tr}")
    expect(len(rows) == 20, f"{len(rows)} rows, expected 20")
    cmd = [sys.argv[1], "--hog", "--seconds", "0.2", "--windows", "2", "--adapters", "none", "--emb-list", "8", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    busy = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    keys = ("train_1thr", "train_2thr", "ratio", "hog_train_1thr", "hog_train_2thr", "hog_ratio")
    expect(len(busy) == 1 and all(busy[0].get(k, 0) > 0 for k in keys) and busy[0].get("hog_cpu", -1) >= 0,
           f"--hog: expected one row with {', '.join(keys)} positive and the hog's CPU, got {busy}")
    for b in bad:
        print("FAIL", b)
    print(f"{len(rows)} rows, {len(bad)} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
