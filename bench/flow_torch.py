#!/usr/bin/python3
"""PyTorch reference for bench/flow_bench.sh: log density and training speed.

Log density uses the reference algorithm: midpoint rule with 64 uniform steps
from t = 1 to t = 0, the exact divergence from a hand-written forward-mode
tangent pass (all d directions at once, batched matmuls) evaluated only at
the midpoint stage, batch 256, float32, one thread.  The weights come from
the flow ONNX written by bench/flow_bench.c, so both sides score the same
network.  Training runs the same architecture with AdamW, gradient clipping
and batch 256.  Times are process CPU seconds, as in bench/flow_bench.c, so
other jobs on a shared machine do not count against either side.

Usage: /usr/bin/python3 bench/flow_torch.py D OUTDIR
Prints "key value" lines.
"""
import sys
import time

import numpy as np
import onnx
import onnx.numpy_helper
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)

SQRT_HALF = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


def load_weights(path):
    model = onnx.load(path)
    w = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    layers = [(w["w_in"], w["b_in"])]
    k = 1
    while f"w_hidden_{k}" in w:
        layers.append((w[f"w_hidden_{k}"], w[f"b_hidden_{k}"]))
        k += 1
    return layers, (w["w_out"], w["b_out"]), w["gamma"], w["beta"]


def velocity_and_divergence(x, t, layers, out, gamma, beta, want_div):
    """Velocity [B, d] and, if wanted, exact divergence [B] by tangents."""
    d = x.shape[1]
    h = torch.cat([x, torch.full((x.shape[0], 1), t)], dim=1)
    tangent = None
    for i, (w, b) in enumerate(layers):
        p = gamma * torch.addmm(b, h, w.t()) + beta
        cdf = 0.5 * (1.0 + torch.erf(p * SQRT_HALF))
        h = p * cdf
        if want_div:
            slope = gamma * (cdf + p * torch.exp(-0.5 * p * p) * INV_SQRT_2PI)
            if i == 0:
                tangent = slope.unsqueeze(2) * w[:, :d].unsqueeze(0)        # [B, H, d]
            else:
                tangent = slope.unsqueeze(2) * torch.matmul(w, tangent)    # [B, H, d]
    v = torch.addmm(out[1], h, out[0].t())
    div = torch.einsum("ih,bhi->b", out[0], tangent) if want_div else None
    return v, div


def log_density(rows, layers, out, gamma, beta, steps=64, batch=256):
    d = rows.shape[1]
    result = []
    for start in range(0, rows.shape[0], batch):
        x = rows[start:start + batch].clone()
        integral = torch.zeros(x.shape[0], dtype=torch.float64)
        h = -1.0 / steps
        for s in range(steps):
            t = 1.0 + s * h
            k1, _ = velocity_and_divergence(x, t, layers, out, gamma, beta, False)
            mid = x + 0.5 * h * k1
            k2, div = velocity_and_divergence(mid, t + 0.5 * h, layers, out, gamma, beta, True)
            integral += h * div.double()
            x = x + h * k2
        sq = (x.double() ** 2).sum(dim=1)
        result.append(-0.5 * sq - 0.5 * d * np.log(2 * np.pi) + integral)
    return torch.cat(result)


class Velocity(torch.nn.Module):
    """Velocity MLP with FiLM from a constant (unconditional) condition."""

    def __init__(self, d, hidden=256, layers=3):
        super().__init__()
        self.inp = torch.nn.Linear(d + 1, hidden)
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = torch.nn.Linear(hidden, d)
        self.film = torch.nn.Parameter(torch.cat([torch.ones(hidden), torch.zeros(hidden)]))
        self.act = torch.nn.GELU()

    def forward(self, x, t):
        gamma, beta = self.film.chunk(2)
        h = self.act(gamma * self.inp(torch.cat([x, t], dim=1)) + beta)
        for layer in self.hidden:
            h = self.act(gamma * layer(h) + beta)
        return self.out(h)


def train_speed(d, n=8192, epochs=2, batch=256):
    torch.manual_seed(0)
    data = torch.randn(n, d)
    net = Velocity(d)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.01)
    start = time.process_time()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            x1 = data[perm[i:i + batch]]
            x1 = x1 + 0.05 * torch.randn_like(x1)
            x0 = torch.randn_like(x1)
            t = torch.rand(x1.shape[0], 1)
            xt = (1 - t) * x0 + t * x1
            loss = ((net(xt, t) - (x1 - x0)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    return epochs * n / (time.process_time() - start)


def main():
    d = int(sys.argv[1])
    outdir = sys.argv[2]
    layers, out, gamma, beta = load_weights(f"{outdir}/flow_{d}.onnx")
    rows = torch.from_numpy(np.fromfile(f"{outdir}/rows_{d}.f32", dtype=np.float32).reshape(-1, d))
    with torch.no_grad():
        log_density(rows[:256], layers, out, gamma, beta)      # warm-up
        start = time.process_time()
        logp = log_density(rows, layers, out, gamma, beta)
        secs = time.process_time() - start
    print(f"torch_logdensity_rows_per_s {rows.shape[0] / secs:.1f}")
    c_logp = np.fromfile(f"{outdir}/logp_stage_{d}.f64", dtype=np.float64)
    print(f"torch_vs_c_stage_max_abs_diff {np.max(np.abs(c_logp - logp.numpy())):.2e}")
    print(f"torch_train_samples_per_s {train_speed(d):.1f}")


if __name__ == "__main__":
    main()
