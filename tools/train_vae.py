#!/usr/bin/python3
"""Train wdc's reference VAE on real survey cutouts and export it to ONNX.

Input: the directory tools/make_cutouts.sh writes (default data/vae):
input.f32 holds [n][32][32] float32 cutouts already preprocessed by wdc's
core, index.tsv says where each came from, preprocessing.json the options
that produced them.  Output:
  models/wdc_vae32_encoder.onnx   image [batch,1,32,32] -> mean, logvar [batch,16]
  models/wdc_vae32_decoder.onnx   z [batch,16] -> image [batch,1,32,32]
  models/training.json            data counts, losses, timings
  test/fixtures/vae/              parity fixtures (with --fixtures)

The encoder carries the ONNX metadata wdc.kind, wdc.output and
wdc.preprocessing, so wdc.load_model(name, bytes, '{}') needs no options.

Reproducible: fixed seed, one thread, denormals flushed.  Run with Debian's
python3 (torch 1.13, onnx 1.12):
  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tools/train_vae.py --fixtures
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(1)
torch.set_flush_denormal(True)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SIZE = 32
LATENT = 16


class Encoder(nn.Module):
    """Three stride-2 convolutions (32 -> 16 -> 8 -> 4 pixels), then two
    linear heads: posterior mean and log-variance of a diagonal Gaussian."""

    def __init__(self):
        super().__init__()
        layers = []
        for cin, cout in [(1, 16), (16, 32), (32, 64)]:
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.mean = nn.Linear(64 * 4 * 4, LATENT)
        self.logvar = nn.Linear(64 * 4 * 4, LATENT)

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
    """Mirror of the encoder with transposed convolutions; a sigmoid keeps
    pixels in [0, 1] like the min-max normalised inputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(LATENT, 64 * 4 * 4), nn.LeakyReLU(0.1))
        layers = []
        for cin, cout in [(64, 32), (32, 16)]:
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
        layers += [nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(self.fc(z).view(-1, 64, 4, 4))


def vae_loss(x, recon, mean, logvar):
    """Per-image binary cross-entropy (summed over pixels) and KL divergence
    of N(mean, exp(logvar)) from N(0, I) (Kingma and Welling, "Auto-Encoding
    Variational Bayes", 2014, appendix B), both averaged over the batch."""
    bce = nn.functional.binary_cross_entropy(recon, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp()) / x.shape[0]
    return bce, kl


def augment(x, gen):
    """Apply one random element of the square's symmetry group (flips and
    quarter turns) per batch.  Clipping and min-max scaling commute with
    these, so the result is what preprocessing gives the turned cutout."""
    k = int(torch.randint(4, (1,), generator=gen))
    x = torch.rot90(x, k, (2, 3))
    if int(torch.randint(2, (1,), generator=gen)):
        x = torch.flip(x, (3,))
    return x


def evaluate(enc, dec, x):
    enc.eval()
    dec.eval()
    with torch.no_grad():
        mean, logvar = enc(x)
        recon = dec(mean)
        bce, kl = vae_loss(x, recon, mean, logvar)
        mse = torch.mean((recon - x) ** 2)
    return float(bce), float(kl), float(mse)


def export(model, example, path, inputs, outputs, metadata):
    import onnx
    model.eval()
    torch.onnx.export(model, example, path, input_names=inputs, output_names=outputs,
                      dynamic_axes={inputs[0]: {0: "batch"},
                                    **{o: {0: "batch"} for o in outputs}},
                      opset_version=13, do_constant_folding=True)
    m = onnx.load(path)
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, path)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pick_fixtures(index, n):
    """Choose n cutouts spread over the frames: round-robin over frames in
    name order, taking cutouts with NaN pixels first where a frame has them."""
    by_frame = {}
    for i, row in enumerate(index):
        by_frame.setdefault(row[0], []).append(i)
    for rows in by_frame.values():
        rows.sort(key=lambda i: (-int(index[i][5]), i))
    chosen = []
    while len(chosen) < n:
        for frame in sorted(by_frame):
            if by_frame[frame] and len(chosen) < n:
                chosen.append(by_frame[frame].pop(0))
    return chosen


def write_fixtures(enc, dec, raw, inputs, index, preprocessing):
    """Write 20 raw cutouts as FITS files and PyTorch's outputs for them."""
    from astropy.io import fits
    out = os.path.join(ROOT, "test", "fixtures", "vae")
    os.makedirs(out, exist_ok=True)
    chosen = pick_fixtures(index, 20)
    enc.eval()
    dec.eval()
    with torch.no_grad():
        x = torch.from_numpy(inputs[chosen])
        mean, logvar = enc(x)
        decoded = dec(mean[:1])[0, 0]
    cutouts = []
    for k, i in enumerate(chosen):
        name = "cutout_%02d.fits" % (k + 1)
        hdu = fits.PrimaryHDU(raw[i, 0])
        path, hdunum, plane, x0, y0, nans = index[i]
        hdu.header["ORIGIN"] = "wdc tools/train_vae.py"
        hdu.header["SRCFILE"] = os.path.basename(path)
        hdu.header["SRCHDU"] = int(hdunum)
        hdu.header["SRCPLANE"] = int(plane)
        hdu.header["SRCX"] = (float(x0), "FITS 1-based pixel centre in SRCFILE")
        hdu.header["SRCY"] = (float(y0), "FITS 1-based pixel centre in SRCFILE")
        hdu.writeto(os.path.join(out, name), overwrite=True)
        cutouts.append({"file": name, "frame": os.path.basename(path), "hdu": int(hdunum),
                        "plane": int(plane), "x": float(x0), "y": float(y0),
                        "nan_pixels": int(nans),
                        "mean": [float(v) for v in mean[k]],
                        "logvar": [float(v) for v in logvar[k]]})
    ref = {"preprocessing": preprocessing, "cutouts": cutouts,
           "decoded_from": "cutout_01.fits mean",
           "decoded": [[float(v) for v in row] for row in decoded]}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "vae"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--fixtures", action="store_true",
                    help="also write test/fixtures/vae from the trained model")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    # 1. data: wdc-preprocessed cutouts, 10% held out
    meta = json.load(open(os.path.join(args.data, "preprocessing.json")))
    assert meta["size"] == SIZE
    inputs = np.fromfile(os.path.join(args.data, "input.f32"), dtype=np.float32)
    inputs = inputs.reshape(-1, 1, SIZE, SIZE)
    raw = np.fromfile(os.path.join(args.data, "raw.f32"), dtype=np.float32)
    raw = raw.reshape(-1, 1, SIZE, SIZE)
    index = [line.rstrip("\n").split("\t") for line in open(os.path.join(args.data, "index.tsv"))]
    n = inputs.shape[0]
    perm = np.random.permutation(n)
    n_val = n // 10
    val, train = torch.from_numpy(inputs[perm[:n_val]]), torch.from_numpy(inputs[perm[n_val:]])
    frames = {}
    for row in index:
        frames[os.path.basename(row[0])] = frames.get(os.path.basename(row[0]), 0) + 1

    # 2. training: Adam, full KL weight, cosine learning-rate decay
    enc, dec = Encoder(), Decoder()
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    steps = args.epochs * ((train.shape[0] + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    history = []
    for epoch in range(args.epochs):
        enc.train()
        dec.train()
        order = torch.randperm(train.shape[0], generator=gen)
        tot = [0.0, 0.0]
        for b in range(0, train.shape[0], args.batch):
            x = augment(train[order[b:b + args.batch]], gen)
            mean, logvar = enc(x)
            z = mean + torch.randn(mean.shape, generator=gen) * torch.exp(0.5 * logvar)
            bce, kl = vae_loss(x, dec(z), mean, logvar)
            opt.zero_grad()
            (bce + kl).backward()
            opt.step()
            sched.step()
            tot[0] += float(bce) * x.shape[0]
            tot[1] += float(kl) * x.shape[0]
        vb, vk, vm = evaluate(enc, dec, val)
        history.append({"epoch": epoch + 1, "train_bce": tot[0] / train.shape[0],
                        "train_kl": tot[1] / train.shape[0], "val_bce": vb, "val_kl": vk,
                        "val_mse": vm, "seconds": round(time.time() - t0, 1)})
        print("epoch %2d  train bce %.2f kl %.2f  val bce %.2f kl %.2f mse %.5f  %.0fs" % (
            epoch + 1, history[-1]["train_bce"], history[-1]["train_kl"], vb, vk, vm,
            time.time() - t0), flush=True)

    # 3. export with the metadata wdc reads
    models = os.path.join(ROOT, "models")
    os.makedirs(models, exist_ok=True)
    enc_path = os.path.join(models, "wdc_vae32_encoder.onnx")
    dec_path = os.path.join(models, "wdc_vae32_decoder.onnx")
    pre = json.dumps(meta["preprocessing"], sort_keys=True)
    export(enc, torch.zeros(1, 1, SIZE, SIZE), enc_path, ["image"], ["mean", "logvar"],
           {"wdc.kind": "encoder", "wdc.output": "mean", "wdc.preprocessing": pre})
    export(dec, torch.zeros(1, LATENT), dec_path, ["z"], ["image"], {"wdc.kind": "decoder"})

    report = {"seed": args.seed, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
              "cutouts": n, "train": int(train.shape[0]), "validation": n_val,
              "frames": frames, "preprocessing": meta["preprocessing"],
              "final": history[-1], "history": history,
              "encoder": {"bytes": os.path.getsize(enc_path), "sha256": sha256(enc_path)},
              "decoder": {"bytes": os.path.getsize(dec_path), "sha256": sha256(dec_path)},
              "torch": torch.__version__}
    with open(os.path.join(models, "training.json"), "w") as f:
        json.dump(report, f, indent=1)
    if args.fixtures:
        write_fixtures(enc, dec, raw, inputs, index, meta["preprocessing"])
    print(json.dumps({k: report[k] for k in ("cutouts", "final", "encoder", "decoder")}, indent=1))


if __name__ == "__main__":
    main()
