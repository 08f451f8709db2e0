#!/usr/bin/python3
"""Evaluate a wdc flow ONNX graph in PyTorch and write parity reference values.

The graph's nodes (Gemm, Concat, Mul, Add, Div, Erf) are run one by one with
torch in float64, so the reference is the exported graph itself, not a
re-implementation of the network.  The divergence is the exact trace of the
Jacobian dv/dx from torch.autograd.  onnx 1.12 has no reference evaluator,
which is why the graph is interpreted here.

Usage: /usr/bin/python3 tools/flow_parity.py [MODEL.onnx [OUT.txt]]
Defaults: test/fixtures/flow/parity.onnx -> test/fixtures/flow/parity.txt.
Output format (read by test/c/test_flow_onnx.c): a line "n d n_numeric", then
one line per point: t class numeric... x... v... div.  class -1 selects the
null condition.
"""
import json
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)


def load(path):
    model = onnx.load(path)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("wdc.kind") != "flow":
        raise SystemExit(f"{path}: not a wdc flow (metadata wdc.kind is missing)")
    inits = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).astype(np.float64))
             for t in model.graph.initializer}
    return model, meta, inits


def run_graph(model, inits, feeds):
    """Evaluate the graph's nodes in order on float64 torch tensors."""
    env = dict(inits)
    env.update(feeds)
    for node in model.graph.node:
        args = [env[name] for name in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Gemm":
            a, b = args[0], args[1]
            if attrs.get("transA", 0):
                a = a.T
            if attrs.get("transB", 0):
                b = b.T
            out = attrs.get("alpha", 1.0) * (a @ b)
            if len(args) > 2:
                out = out + attrs.get("beta", 1.0) * args[2]
        elif op == "Concat":
            out = torch.cat(args, dim=attrs["axis"])
        elif op == "Mul":
            out = args[0] * args[1]
        elif op == "Add":
            out = args[0] + args[1]
        elif op == "Div":
            out = args[0] / args[1]
        elif op == "Erf":
            out = torch.erf(args[0])
        else:
            raise SystemExit(f"unexpected operator {op}")
        env[node.output[0]] = out
    return env[model.graph.output[0].name]


def encode_condition(meta, inits, numeric, cls):
    """Encoded condition c as the flow metadata describes it."""
    if cls < 0:
        return inits["null_condition"]
    mean = [float(v) for v in meta["wdc.flow.cond_mean"].split(",")]
    std = [float(v) for v in meta["wdc.flow.cond_std"].split(",")]
    z = [(float(np.float32(x)) - m) / s for x, m, s in zip(numeric, mean, std)]
    return torch.cat([torch.tensor(z, dtype=torch.float64), inits["class_embedding"][cls]])


def main():
    model_path = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/flow/parity.onnx"
    out_path = sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/flow/parity.txt"
    model, meta, inits = load(model_path)
    d = int(meta["wdc.flow.d"])
    n_numeric = int(meta["wdc.flow.n_numeric"])
    n_classes = int(meta["wdc.flow.n_classes"])
    labels = json.loads(meta.get("wdc.flow.class_labels", "[]"))
    assert len(labels) == n_classes

    rng = np.random.default_rng(12345)
    rows = []
    for i in range(24):
        t = float(np.float32(rng.uniform()))
        cls = -1 if i % 6 == 5 else int(rng.integers(n_classes))
        numeric = rng.normal([10.0, 0.3], [4.0, 0.1])[:n_numeric].astype(np.float32)
        x = rng.normal(size=d).astype(np.float32)
        xt = torch.tensor(x, dtype=torch.float64)
        c = encode_condition(meta, inits, numeric, cls)

        def velocity(xin):
            feeds = {"x": xin.reshape(1, d), "t": torch.tensor([[t]], dtype=torch.float64)}
            if n_numeric + n_classes > 0:
                feeds["c"] = c.reshape(1, -1)
            return run_graph(model, inits, feeds).reshape(d)

        v = velocity(xt)
        jac = torch.autograd.functional.jacobian(velocity, xt)
        rows.append((t, cls, numeric, x, v.detach().numpy(), float(torch.trace(jac))))

    with open(out_path, "w") as f:
        f.write(f"{len(rows)} {d} {n_numeric}\n")
        for t, cls, numeric, x, v, div in rows:
            parts = [repr(t), str(cls)]
            parts += [repr(float(a)) for a in numeric]
            parts += [repr(float(a)) for a in x]
            parts += [repr(float(a)) for a in v]
            parts.append(repr(div))
            f.write(" ".join(parts) + "\n")
    print(f"wrote {len(rows)} reference points to {out_path}")


if __name__ == "__main__":
    main()
