#!/usr/bin/python3
"""PyTorch CPU peer of `moemlora-bench --schema aliccp`: the same model on an Ali-CCP-like schema.

Schema: 20 categorical fields; field 0 is the domain (10 values), field f > 0 has round(10^(1 + 5 f / 19))
ids (19 to 1M), ids skewed towards the small ones (id = V u^3, u uniform), labels 1 with probability 0.3.

Model (moemlora's WDL with an adapter, every parameter trained jointly, as moemlora-bench trains it):
  every field -> embedding (--emb floats, N(0, 1e-4)) -> concat x (20 emb)
  tower [256, 128, 64], per layer: h = dropout(x W + b) + adapter(x); x = relu(h)
    none : no adapter
    moe  : sum_e w_e ((x A_e) B_e + c_e), w = softmax(G g_d + h), g_d a 4-dim domain embedding,
           10 experts, rank max(d_out // 16, 1); written the way a speed-minded user writes it:
           all experts' down-projections as one GEMM, the gate weights applied to the rank blocks,
           one GEMM with the stacked up-projections (the shared peer's `--impl fused`)
  logit = dense(64 -> 1)(tower) + sum over fields of a per-id scalar (the wide part); BCE; Adam 1e-3.
--sparse-emb: sparse embedding gradients with SparseAdam (PyTorch's lazy Adam), Adam on the rest.
--bf16: the forward under torch.cpu.amp.autocast(dtype=torch.bfloat16) (PyTorch's mixed precision).

Usage: torch_schema_peer.py [--adapter none|moe] [--emb 16] [--threads 1] [--sparse-emb] [--bf16]
                            [--seconds 3]
Prints one JSON line: training samples/s (forward, backward, Adam; batch 1024), inference samples/s
(batch 1024, no_grad) and the batch-1 latency (median, us). Run with OPENBLAS_CORETYPE=SkylakeX on
CPUs OpenBLAS 0.3.21 does not know, as bench/run_peers.sh does.
"""
import argparse, contextlib, json, os, sys, time

if __name__ == "__main__":  # thread pools are sized when the libraries load
    _n = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = _n

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FIELDS, DOMAINS, BATCH, NB = 20, 10, 1024, 64


def vocabs():
    return [DOMAINS] + [int(10 ** (1 + 5 * f / (FIELDS - 1)) + 0.5) for f in range(1, FIELDS)]


def data(seed=4242):
    rng = np.random.default_rng(seed)
    cols = [(V * rng.random(BATCH * NB) ** (3 if f else 1)).astype(np.int64) for f, V in enumerate(vocabs())]
    ids = torch.from_numpy(np.stack(cols, 1))
    y = torch.from_numpy((rng.random(BATCH * NB) < 0.3).astype(np.float32))
    return [(ids[k * BATCH:(k + 1) * BATCH].contiguous(), y[k * BATCH:(k + 1) * BATCH].contiguous()) for k in range(NB)]


class Model(nn.Module):
    def __init__(self, emb, adapter, sparse, hidden=(256, 128, 64), experts=DOMAINS, lora_reduce=16, dropout=0.5):
        super().__init__()
        V = vocabs()
        self.emb = nn.ModuleList(nn.Embedding(v, emb, sparse=sparse) for v in V)
        self.lin = nn.ModuleList(nn.Embedding(v, 1, sparse=sparse) for v in V)
        for e in self.emb:
            nn.init.normal_(e.weight, 0, 1e-2)
        for e in self.lin:
            nn.init.zeros_(e.weight)
        dims = [FIELDS * emb] + list(hidden)
        self.base = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(hidden)))
        self.drop = nn.Dropout(dropout)
        self.adapter = adapter
        self.A, self.B, self.c = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        if adapter == "moe":
            for i in range(len(hidden)):
                r = max(dims[i + 1] // lora_reduce, 1)
                a = torch.empty(dims[i], experts * r)
                nn.init.xavier_uniform_(a)
                self.A.append(nn.Parameter(a))  # [d_in, E r]: the experts side by side
                self.B.append(nn.Parameter(torch.zeros(experts * r, dims[i + 1])))
                self.c.append(nn.Parameter(torch.zeros(experts, dims[i + 1])))
            self.gate_emb = nn.Embedding(DOMAINS, 4)
            self.gate = nn.Linear(4, experts)
        self.out = nn.Linear(hidden[-1], 1)

    def forward(self, ids):
        x = torch.cat([e(ids[:, f]) for f, e in enumerate(self.emb)], 1)
        lin = sum(e(ids[:, f]) for f, e in enumerate(self.lin))
        w = F.softmax(self.gate(self.gate_emb(ids[:, 0])), -1) if self.adapter == "moe" else None
        for i, layer in enumerate(self.base):
            h = self.drop(layer(x))
            if w is not None:
                E = w.shape[1]
                xa = (x @ self.A[i]).view(-1, E, self.A[i].shape[1] // E) * w.unsqueeze(-1)
                h = h + torch.addmm(w @ self.c[i], xa.view(xa.shape[0], -1), self.B[i])
            x = F.relu(h)
        return (self.out(x) + lin).squeeze(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", default="moe", choices=["none", "moe"])
    p.add_argument("--emb", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sparse-emb", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=123)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    m = Model(a.emb, a.adapter, a.sparse_emb)
    if a.sparse_emb:
        sp = [q for e in list(m.emb) + list(m.lin) for q in e.parameters()]
        dense = [q for q in m.parameters() if all(q is not s for s in sp)]
        opts = [torch.optim.SparseAdam(sp, lr=1e-3), torch.optim.Adam(dense, lr=1e-3)]
    else:
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3)]
    batches = data()
    lossf = nn.BCEWithLogitsLoss()
    amp = (lambda: torch.cpu.amp.autocast(dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext

    def step(k):
        xb, yb = batches[k % NB]
        for o in opts:
            o.zero_grad(set_to_none=True)
        with amp():
            loss = lossf(m(xb).float(), yb)
        loss.backward()
        for o in opts:
            o.step()

    m.train()
    for k in range(3):
        step(k)
    t, n = time.perf_counter(), 0
    while n < 5 or time.perf_counter() - t < a.seconds:
        step(n)
        n += 1
    train = n * BATCH / (time.perf_counter() - t)
    m.eval()
    with torch.no_grad(), amp():
        for k in range(3):
            m(batches[k][0])
        t, n = time.perf_counter(), 0
        while n < 5 or time.perf_counter() - t < a.seconds:
            m(batches[n % NB][0])
            n += 1
        infer = n * BATCH / (time.perf_counter() - t)
        one = [batches[0][0][k:k + 1].clone() for k in range(256)]
        lat, t = [], time.perf_counter()
        while len(lat) < 50 or (len(lat) < 20000 and time.perf_counter() - t < a.seconds):
            t0 = time.perf_counter()
            m(one[len(lat) % 256])
            lat.append(time.perf_counter() - t0)
    print(json.dumps(dict(schema="aliccp", adapter=a.adapter, emb=a.emb, threads=a.threads, sparse_emb=a.sparse_emb,
                          bf16=a.bf16, torch=torch.__version__, train_samples_per_s=round(train, 1),
                          infer_samples_per_s=round(infer, 1),
                          batch1_latency_us=round(float(np.median(lat)) * 1e6, 1))), flush=True)


if __name__ == "__main__":
    main()
