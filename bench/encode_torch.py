#!/usr/bin/python3
"""Time PyTorch inference of the reference encoder, batch 1 and batch 64.

  encode_torch.py ENCODER.onnx INPUT.f32 N REPEAT [RAW.f32 PREPROCESSING.json]

The PyTorch module is rebuilt from the ONNX file's own graph and weights:
Conv, LeakyRelu, Flatten, then the two Gemm heads.  The exporter already
folded batch norm into the convolutions, so the module computes exactly
the graph wdc runs.  INPUT.f32 holds [m][32][32] preprocessed cutouts
(tools/make_cutouts.c); N images are taken from it, cycling.  Each mode
runs REPEAT times and the fastest run counts.  One thread, no autograd.
Prints "mode images/s seconds" lines and a checksum of the means,
comparable with bench/encode_bench.c's.

With RAW.f32 (the same cutouts before preprocessing) and the model's
preprocessing options, a third mode, torch_batch64_numpy_prep, also
preprocesses each batch of 64 raw cutouts with numpy (median fill of
non-finite pixels, clip to two percentiles by numpy's linear method,
min-max) before running the model: the whole pipeline a Python user would
run, against which wdc's figures include preprocessing too.
"""
import json
import sys
import time

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn

torch.set_num_threads(1)
torch.set_flush_denormal(True)


class OnnxEncoder(nn.Module):
    """The encoder graph as PyTorch modules: a body, then mean and logvar."""

    def __init__(self, path):
        super().__init__()
        m = onnx.load(path)
        w = {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy())
             for i in m.graph.initializer}
        body, heads = [], {}
        for node in m.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Conv":
                weight = w[node.input[1]]
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:],
                                 stride=tuple(attrs["strides"]),
                                 padding=tuple(attrs["pads"][:2]))
                conv.weight.data, conv.bias.data = weight, w[node.input[2]]
                body.append(conv)
            elif node.op_type == "LeakyRelu":
                body.append(nn.LeakyReLU(attrs.get("alpha", 0.01)))
            elif node.op_type == "Flatten":
                body.append(nn.Flatten())
            elif node.op_type == "Gemm":
                weight = w[node.input[1]]
                lin = nn.Linear(weight.shape[1], weight.shape[0])
                lin.weight.data, lin.bias.data = weight, w[node.input[2]]
                heads[node.output[0]] = lin
            else:
                raise SystemExit("encode_torch.py: unexpected operator " + node.op_type)
        self.body = nn.Sequential(*body)
        self.mean = heads["mean"]
        self.logvar = heads["logvar"]

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.logvar(h)


def numpy_preprocess(raw, low, high):
    """Preprocess a batch [b, 32, 32] of raw cutouts as the model declares."""
    x = raw.copy()
    bad = ~np.isfinite(x)
    for i in np.nonzero(bad.any(axis=(1, 2)))[0]:
        finite = x[i][~bad[i]]
        x[i][bad[i]] = np.median(finite) if finite.size else 0.0
    flat = x.reshape(len(x), -1)
    lo, hi = np.percentile(flat.astype(np.float64), [low, high], axis=1)
    x = np.clip(x, lo.astype(np.float32)[:, None, None], hi.astype(np.float32)[:, None, None])
    mn = x.min(axis=(1, 2), keepdims=True).astype(np.float64)
    mx = x.max(axis=(1, 2), keepdims=True).astype(np.float64)
    span = np.where(mx > mn, mx - mn, 1.0)
    return ((x - mn) / span).astype(np.float32).reshape(len(x), 1, 32, 32)


def main():
    path, data, n, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    enc = OnnxEncoder(path).eval()
    x = np.fromfile(data, dtype=np.float32).reshape(-1, 1, 32, 32)
    x = torch.from_numpy(x[np.arange(n) % x.shape[0]].copy())
    means = torch.empty(n, 16)
    with torch.inference_mode():
        enc(x[:64])     # warm-up: first-call allocations
        for batch in (1, 64):
            t = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                for i in range(0, n, batch):
                    means[i:i + batch] = enc(x[i:i + batch])[0]
                t = min(t, time.perf_counter() - t0)
            print("torch_batch%d %.0f %.3f" % (batch, n / t, t))
            print("checksum torch_batch%d %.6f" % (batch, float(means.double().sum())))
        if len(sys.argv) > 6:
            prep = json.load(open(sys.argv[6]))["preprocessing"]
            expected = {"nan_fill": "median", "normalize": "minmax"}
            if any(prep.get(k) != v for k, v in expected.items()) or \
                    prep.get("stretch", "none") != "none" or \
                    (prep.get("width", 32), prep.get("height", 32)) != (32, 32):
                raise SystemExit("encode_torch.py: the numpy baseline implements only "
                                 "median fill, percentile clip and min-max at 32 x 32")
            low, high = float(prep.get("clip_low", 0)), float(prep.get("clip_high", 100))
            raw = np.fromfile(sys.argv[5], dtype=np.float32).reshape(-1, 32, 32)
            raw = raw[np.arange(n) % raw.shape[0]].copy()
            t = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                for i in range(0, n, 64):
                    xb = torch.from_numpy(numpy_preprocess(raw[i:i + 64], low, high))
                    means[i:i + 64] = enc(xb)[0]
                t = min(t, time.perf_counter() - t0)
            print("torch_batch64_numpy_prep %.0f %.3f" % (n / t, t))
            print("checksum torch_batch64_numpy_prep %.6f" % float(means.double().sum()))


if __name__ == "__main__":
    main()
