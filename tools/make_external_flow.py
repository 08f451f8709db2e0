#!/usr/bin/python3
"""Build test/fixtures/models/gauss_flow.onnx: a flow exported from PyTorch.

The graph is the exact flow-matching velocity of a Gaussian data
distribution N(c, s^2 I) on the path x_t = (1 - t) x0 + t x1 (noise at
t = 0, data at t = 1), where the condition c is the mean:

    V(t) = (1 - t)^2 + t^2 s^2,  A(t) = (t s^2 - (1 - t)) / V(t)
    v(x, t, c) = c + A(t) (x - t c)

so the exact answers are known: log p1(z | c) = log N(z; c, s^2 I) and the
residual (the point reached at t = 0) is (z - c) / s.  It has inputs x
[N, 2], t [N, 1], c [N, 2], output v [N, 2], and no wdc metadata, like a
flow trained by another tool.
"""
import os

import torch

S = 0.5
OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "models",
                   "gauss_flow.onnx")


class GaussFlow(torch.nn.Module):
    def forward(self, x, t, c):
        one_minus = 1.0 - t
        var = one_minus * one_minus + t * t * (S * S)
        a = (t * (S * S) - one_minus) / var
        return c + a * (x - t * c)


def main():
    torch.set_num_threads(1)
    example = (torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 2))
    torch.onnx.export(GaussFlow(), example, OUT, input_names=["x", "t", "c"],
                      output_names=["v"], opset_version=13,
                      dynamic_axes={"x": {0: "n"}, "t": {0: "n"}, "c": {0: "n"}, "v": {0: "n"}})
    print("wrote", OUT)


if __name__ == "__main__":
    main()
