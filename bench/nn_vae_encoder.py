"""Conv VAE encoder for the runtime benchmark: build, export, time in PyTorch.

The encoder takes a 1x64x64 image through four 3x3 stride-2 convolutions
(32, 64, 128, 256 channels, each followed by BatchNorm and LeakyReLU), then
two linear heads give mu and logvar (latent 32).  That is 29.4 MFLOP per
image (multiply-adds counted as 2 FLOP).

    /usr/bin/python3 bench/nn_vae_encoder.py --export OUT.onnx
        builds the model from a fixed seed and exports it with a symbolic
        batch dimension and wdc metadata (done once; the file is committed);
    /usr/bin/python3 bench/nn_vae_encoder.py --time MODEL.onnx REFDIR [SECONDS]
        rebuilds the same model from the seed, times PyTorch eager and
        frozen TorchScript at batch 1 and 64 on one thread, and writes a
        reference input and mu output under REFDIR; the C benchmark compares
        the ONNX file's output against it, which also checks that the
        committed file matches the seed.
Run through bench/nn_bench.sh, which sets OPENBLAS_NUM_THREADS=1 first.
"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)
torch.set_flush_denormal(True)

LATENT = 32
CHANNELS = (32, 64, 128, 256)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layers = []
        cin = 1
        for cout in CHANNELS:
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.mu = nn.Linear(256 * 4 * 4, LATENT)
        self.logvar = nn.Linear(256 * 4 * 4, LATENT)

    def forward(self, x):
        h = self.features(x)
        # view(size(0), -1) exports the Shape/Gather/Concat/Reshape chain
        h = h.view(h.size(0), -1)
        return self.mu(h), self.logvar(h)


def flops_per_image():
    total = 0
    size, cin = 64, 1
    for cout in CHANNELS:
        size //= 2
        total += 2 * size * size * cout * cin * 9
        cin = cout
    return total + 2 * 2 * 256 * 16 * LATENT


def build():
    torch.manual_seed(20261204)
    model = Encoder().eval()
    # non-trivial BatchNorm statistics, as after training
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model


def export(path):
    import onnx
    model = build()
    x = torch.randn(1, 1, 64, 64)
    torch.onnx.export(model, x, path, input_names=["image"],
                      output_names=["mu", "logvar"],
                      dynamic_axes={"image": {0: "batch"}, "mu": {0: "batch"},
                                    "logvar": {0: "batch"}},
                      opset_version=13, do_constant_folding=True)
    proto = onnx.load(path)
    for key, value in (("wdc kind", "encoder"), ("wdc output", "mu"),
                       ("wdc preprocessing", "asinh"),
                       ("wdc input size", "64")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def timed(fn, x, seconds):
    fn(x)
    n = 0
    start = time.perf_counter()
    while True:
        fn(x)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n * x.shape[0] / elapsed


def time_torch(model_path, refdir, seconds):
    model = build()
    os.makedirs(refdir, exist_ok=True)
    rng = np.random.default_rng(7)
    x64 = torch.from_numpy(rng.standard_normal((64, 1, 64, 64), dtype=np.float32))
    with torch.no_grad():
        mu, _ = model(x64)
    x64.numpy().tofile(os.path.join(refdir, "input.f32"))
    mu.numpy().tofile(os.path.join(refdir, "mu.f32"))

    with torch.no_grad():
        jit = torch.jit.freeze(torch.jit.trace(model, x64[:1]))
        results = {}
        for batch in (1, 64):
            x = x64[:batch].contiguous()
            results[("eager", batch)] = timed(model, x, seconds)
            results[("jit", batch)] = timed(jit, x, seconds)
    flop = flops_per_image()
    for (kind, batch), ips in sorted(results.items()):
        print(f"torch-{kind} batch {batch}: {ips:.0f} images/s, "
              f"{ips * flop / 1e9:.1f} GFLOP/s")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--export":
        export(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "--time":
        seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
        time_torch(sys.argv[2], sys.argv[3], seconds)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
