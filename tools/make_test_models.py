#!/usr/bin/python3
"""Build the tiny ONNX models the registry tests load, with reference outputs.

Writes test/fixtures/models/tiny_encoder.onnx (1x16x16 image -> mean and
logvar of 4 dimensions, with wdc metadata), tiny_decoder.onnx (4 -> 1x16x16)
and tiny_graph.onnx (8 -> 3, no metadata), plus tiny_reference.json with
inputs and PyTorch outputs for the parity checks.  Deterministic for the
seed.  Run with Debian's python3 (torch 1.13, onnx).
"""
import json
import os

import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)
torch.manual_seed(20261204)

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "models")


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 8)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.nn.functional.gelu(self.conv2(h))
        h = self.fc(h.flatten(1))
        return h[:, :4], h[:, 4:]


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 8 * 4 * 4)
        self.up = torch.nn.ConvTranspose2d(8, 1, 4, stride=4)

    def forward(self, z):
        return torch.sigmoid(self.up(self.fc(z).view(-1, 8, 4, 4)))


def export(model, example, path, inputs, outputs, metadata):
    import onnx
    model.eval()
    torch.onnx.export(model, example, path, input_names=inputs, output_names=outputs,
                      dynamic_axes={inputs[0]: {0: "batch"}}, opset_version=13)
    m = onnx.load(path)
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, path)


def main():
    os.makedirs(OUT, exist_ok=True)
    enc, dec = Encoder(), Decoder()
    # give batch norm non-trivial statistics so folding it is tested
    with torch.no_grad():
        enc.bn1.running_mean.uniform_(-0.2, 0.2)
        enc.bn1.running_var.uniform_(0.5, 2.0)
    graph = torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.Tanh())
    export(enc, torch.zeros(1, 1, 16, 16), os.path.join(OUT, "tiny_encoder.onnx"),
           ["image"], ["mean", "logvar"],
           {"wdc.kind": "encoder",
            "wdc.preprocessing": json.dumps({"nan_fill": "median", "normalize": "minmax"})})
    export(dec, torch.zeros(1, 4), os.path.join(OUT, "tiny_decoder.onnx"),
           ["z"], ["image"], {"wdc.kind": "decoder"})
    export(graph.eval(), torch.zeros(1, 8), os.path.join(OUT, "tiny_graph.onnx"),
           ["x"], ["y"], {})

    # reference: a 16x16 image with a NaN pixel, preprocessed as the metadata
    # says (median fill, then min-max), then both networks
    img = torch.arange(256, dtype=torch.float32).view(16, 16).sin() * 100.0
    img[3, 5] = float("nan")
    filled = img.clone()
    # numpy's median averages the two middle values; torch's picks the lower
    finite = img[~img.isnan()].sort().values
    n = finite.numel()
    med = finite[n // 2] if n % 2 else (finite[n // 2 - 1] + finite[n // 2]) / 2
    filled[3, 5] = med
    pre = (filled - filled.min()) / (filled.max() - filled.min())
    with torch.no_grad():
        mean, logvar = enc.eval()(pre.view(1, 1, 16, 16))
        recon = dec.eval()(mean)
        y = graph(torch.linspace(-1, 1, 8).view(1, 8))
    ref = {
        "image": [[None if v != v else float(v) for v in row] for row in img.tolist()],
        "mean": mean[0].tolist(),
        "logvar": logvar[0].tolist(),
        "decoded_center": float(recon[0, 0, 8, 8]),
        "decoded_sum": float(recon.sum()),
        "graph_input": torch.linspace(-1, 1, 8).tolist(),
        "graph_output": y[0].tolist(),
    }
    with open(os.path.join(OUT, "tiny_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
