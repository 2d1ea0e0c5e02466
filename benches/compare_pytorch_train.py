#!/usr/bin/env python3
"""A training step in netc against PyTorch on the CPU, side by side.

For each model and batch: images per second of one training step (forward
with training semantics, softmax cross-entropy, backward, Adam's update)
on a fixed random batch, both engines on the same thread count, each in its
own process (so each one's peak resident memory is its own), alternated
over rounds; the medians of the rounds' medians are compared.

netc is timed by `netc bench MODEL --train --format json`; PyTorch by this
script's worker mode, which builds the same network (torchvision's
ResNet-18, or the book's deep ConvNet with its dropout variant: mask
without rescaling in training) and steps it the same way.

usage: benches/compare_pytorch_train.py [--threads 2] [--iters 10]
         [--rounds 2] [--out FILE.md] MODEL:BATCH ...
  e.g. benches/compare_pytorch_train.py deep_convnet:100 resnet18:32

Needs a release build and `pip install torch torchvision` (not part of the
test requirements: several GB).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETC = os.path.join(ROOT, "target", "release", "netc")


def measured(cmd):
    """Run `cmd`; return (stdout, its peak resident memory in MiB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed (status {status})")
    return out.decode(), usage.ru_maxrss / 1024.0


def cpu_model():
    """The model name with its family and model numbers ("AMD EPYC" alone
    does not say which Zen)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def netc_step(model, batch, threads, iters):
    out, rss = measured([
        NETC, "bench", os.path.join(ROOT, "models", f"{model}.net"), "--train",
        "--batch", str(batch), "--threads", str(threads), "--iters", str(iters),
        "--warmup", "2", "--format", "json",
    ])
    report = json.loads(out)
    return report["step_ms"], rss


def torch_step(model, batch, threads, iters):
    out, rss = measured([
        sys.executable, __file__, "--worker", f"{model}:{batch}",
        "--threads", str(threads), "--iters", str(iters),
    ])
    return json.loads(out)["step_ms"], rss


def build_torch(model):
    import torch
    from torch import nn

    if model == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=1000), (3, 224, 224)
    if model == "deep_convnet":

        class BookDropout(nn.Module):
            """The book's variant: mask in training, scale at inference."""

            def __init__(self, p):
                super().__init__()
                self.p = p

            def forward(self, x):
                if self.training:
                    return x * (torch.rand_like(x) >= self.p)
                return x * (1 - self.p)

        def conv(i, o, pad=1):
            return [nn.Conv2d(i, o, 3, padding=pad), nn.ReLU()]

        layers = (conv(1, 16) + conv(16, 16) + [nn.MaxPool2d(2)]
                  + conv(16, 32) + conv(32, 32, pad=2) + [nn.MaxPool2d(2)]
                  + conv(32, 64) + conv(64, 64) + [nn.MaxPool2d(2)]
                  + [nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), BookDropout(0.5),
                     nn.Linear(50, 10), BookDropout(0.5)])
        return nn.Sequential(*layers), (1, 28, 28)
    sys.exit(f"no PyTorch definition for {model}")


def worker(spec, threads, iters):
    import torch

    torch.set_num_threads(threads)
    model, batch = spec.split(":")
    batch = int(batch)
    net, item = build_torch(model)
    net.train()
    x = torch.rand(batch, *item)
    labels = torch.arange(batch) % 10
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(iters + 2):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), labels)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"step_ms": statistics.median(times)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", metavar="MODEL:BATCH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.threads, a.iters)
    if not a.models:
        ap.error("name at least one MODEL:BATCH")
    # PyTorch is not imported here: a child forked from a process holding
    # it would count the parent's pages in its peak RSS before exec.
    rows = []
    for spec in a.models:
        model, batch = spec.split(":")
        batch = int(batch)
        netc_ms, torch_ms, netc_rss, torch_rss = [], [], [], []
        for r in range(a.rounds):
            order = [("netc", netc_step), ("torch", torch_step)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                ms, rss = fn(model, batch, a.threads, a.iters)
                (netc_ms if name == "netc" else torch_ms).append(ms)
                (netc_rss if name == "netc" else torch_rss).append(rss)
                print(f"  {model} b{batch} round {r + 1}: {name} {ms:.1f} ms, {rss:.0f} MiB", file=sys.stderr)
        n, t = statistics.median(netc_ms), statistics.median(torch_ms)
        rows.append((model, batch, n, t, max(netc_rss), max(torch_rss)))
    version = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True,
    ).stdout.strip()
    lines = [
        f"CPU: {cpu_model()}; {a.threads} threads; PyTorch {version}; "
        f"{a.iters} steps per round, {a.rounds} rounds alternated; Adam, softmax cross-entropy",
        "",
        "| model | batch | netc img/s | PyTorch img/s | netc / PyTorch | netc peak RSS | PyTorch peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, batch, n, t, nr, tr in rows:
        lines.append(
            f"| {model} | {batch} | {batch / n * 1e3:.0f} | {batch / t * 1e3:.0f} | "
            f"{t / n:.2f}× | {nr:.0f} MiB | {tr:.0f} MiB |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
