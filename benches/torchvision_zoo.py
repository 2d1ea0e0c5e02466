#!/usr/bin/env python3
"""torchvision's models through PyTorch's ONNX exporter, `netc import` and
`netc run`, against PyTorch's own output.

For each model: build it with seeded random weights (batch-norm running
statistics drawn too, so folding is exercised), export it with
`torch.onnx.export` (the TorchScript exporter by default, `--dynamo` for the
dynamo one, which needs `pip install onnxscript`), import the file with
`netc import`, run the .net model with `netc run` on the same input and print
max |netc - torch| / max |torch| — or the importer's error, which names the
node and op netc lacks.

The segmentation models (`fcn_resnet50`, `deeplabv3_resnet50` with their
aux heads, `lraspp_mobilenet_v3_large`) are compared output by output;
`--size` sets their input (default 520x520).

usage: benches/torchvision_zoo.py [--dynamo] [--size HxW] [MODEL ...]
  (default: every CNN family in torchvision.models; --segmentation: the
  three segmentation models; needs torch, torchvision and a release build,
  target/release/netc)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = [
    "alexnet", "vgg11_bn", "vgg16", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "googlenet", "inception_v3", "densenet121", "squeezenet1_0", "shufflenet_v2_x1_0",
    "mobilenet_v2", "mobilenet_v3_large", "mnasnet1_0", "efficientnet_b0", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny",
]
SEGMENTATION = ["fcn_resnet50", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"]
TOLERANCE = 1e-4


def build(torchvision, name):
    """torchvision's model `name` with random weights (aux heads on)."""
    if name in SEGMENTATION:
        seg = torchvision.models.segmentation
        aux = {} if name.startswith("lraspp") else {"aux_loss": True}
        return getattr(seg, name)(weights=None, weights_backbone=None, **aux)
    return getattr(torchvision.models, name)(weights=None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--segmentation", action="store_true", help="the segmentation models")
    p.add_argument("--size", default="520x520", help="segmentation input size, HxW")
    p.add_argument("--dynamo", action="store_true", help="use PyTorch's dynamo exporter")
    p.add_argument("--netc", default=os.path.join(ROOT, "target", "release", "netc"))
    args = p.parse_args()
    import torch
    import torchvision

    warnings.filterwarnings("ignore")
    models = args.models or (SEGMENTATION if args.segmentation else FAMILIES)
    failed = 0
    for name in models:
        torch.manual_seed(0)
        model = build(torchvision, name).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        if name in SEGMENTATION:
            h, w = (int(v) for v in args.size.lower().split("x"))
        else:
            h = w = 299 if name.startswith("inception") else 224
        x = torch.rand(1, 3, h, w)
        with tempfile.TemporaryDirectory(prefix=f"netc-zoo-{name}-") as d:
            onnx_path = os.path.join(d, "m.onnx")
            with torch.no_grad():
                out = model(x)
                # Segmentation models return a dict of outputs by name.
                names = list(out) if isinstance(out, dict) else ["output"]
                expected = [out[k].numpy() for k in names] if isinstance(out, dict) else [out.numpy()]
                kwargs = {"output_names": names}
                if args.dynamo:
                    torch.onnx.export(model, (x,), onnx_path, opset_version=18, dynamo=True, **kwargs)
                else:
                    torch.onnx.export(model, (x,), onnx_path, opset_version=17, dynamo=False, **kwargs)
            np.save(os.path.join(d, "x.npy"), x.numpy())
            net, weights, y = (os.path.join(d, f) for f in ("m.net", "m.safetensors", "y.npz"))
            steps = [
                [args.netc, "import", onnx_path, "-o", net, "--weights-out", weights],
                [args.netc, "run", net, "--weights", weights, "--input", os.path.join(d, "x.npy"),
                 "--output", y, "--top-k", "0"],
            ]
            error = None
            for cmd in steps:
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    error = f"{cmd[1]} failed: {r.stderr.strip().splitlines()[0]}"
                    break
            if error:
                failed += 1
                print(f"{name}: {error}")
                continue
            got = np.load(y)
            scale = max(float(np.abs(e).max()) for e in expected)
            for key, e in zip(names, expected):
                # netc writes outputs in the model's order, named by statement.
                g = got[got.files[names.index(key)]]
                rel = float(np.abs(g - e).max() / scale)
                ok = rel <= TOLERANCE
                failed += not ok
                label = name if len(names) == 1 else f"{name} {key}"
                print(f"{label}: max |netc - torch| / max |torch| = {rel:.2e}{'' if ok else '  ABOVE 1e-4'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
