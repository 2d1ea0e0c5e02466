#!/usr/bin/env python3
"""Batch inference with netc on Ray Data: images (or .npy shards) in,
predictions as Parquet out, on one machine or a cluster.

    python3 examples/ray_batch_inference.py models/resnet18.net \\
        --images photos/ --random-weights 0 --out predictions/
    python3 examples/ray_batch_inference.py models/deep_convnet.net \\
        --npy shard0.npy shard1.npy --weights params.npz --out predictions/ \\
        --actors 2 --threads-per-actor 1
    python3 examples/ray_batch_inference.py ... --address auto   # join a running cluster

Each actor compiles the model once (netc.load in its constructor) for the
batch size given and runs every batch Ray Data hands it; the last, partial
batch is padded and cut back. A classification model writes the top-5
classes and their scores per image, a segmentation model (its output has
spatial dimensions) each class's share of the pixels. Actors that die are
restarted and their batches retried (Ray's max_restarts and
max_task_retries), so no image is lost or written twice.

docs/distributed.md explains how to size actors and batches, and what
changes on a multi-machine cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class Predictor:
    """A netc model held by one Ray actor (or called in-process).

    Batches are dicts with "id" (one string per item) and either "image"
    (uint8, N×H×W×3, normalised with ImageNet's statistics here) or "data"
    (float32 already in the model's N×C×H×W layout).
    """

    def __init__(
        self,
        model: str,
        batch: int,
        threads: int,
        weights: Optional[str] = None,
        random_weights: Optional[int] = None,
        size: Optional[str] = None,
        crash_marker: Optional[str] = None,
    ) -> None:
        import netc

        self.model = netc.load(
            model,
            weights=weights,
            random_weights=random_weights if weights is None else None,
            size=size,
            batch=batch,
            threads=threads,
        )
        self.batch = batch
        self.shape = self.model.inputs[0][1]
        # For the fault-tolerance test: the first actor to create the marker
        # file dies on its second batch.
        self.crash_marker = crash_marker
        self.calls = 0

    def _inputs(self, batch: Dict[str, Any]) -> np.ndarray:
        if "data" in batch:
            x = np.stack([np.asarray(v, np.float32) for v in batch["data"]])
        else:
            images = np.asarray(batch["image"], np.float32) / 255.0
            x = ((images - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x.reshape((len(x),) + tuple(self.shape[1:])), np.float32)

    def _maybe_crash(self) -> None:
        self.calls += 1
        if self.crash_marker and self.calls == 2:
            try:
                fd = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        self._maybe_crash()
        x = self._inputs(batch)
        n = len(x)
        outputs = []
        for start in range(0, n, self.batch):
            chunk = x[start : start + self.batch]
            real = len(chunk)
            if real < self.batch:
                pad = np.zeros((self.batch - real,) + chunk.shape[1:], np.float32)
                chunk = np.concatenate([chunk, pad])
            y = self.model(chunk)
            if isinstance(y, dict):
                y = next(iter(y.values()))
            outputs.append(y[:real])
        y = np.concatenate(outputs)
        out: Dict[str, Any] = {"id": np.asarray(batch["id"])}
        if y.ndim == 4:
            # Segmentation: each class's share of the pixels.
            classes = y.argmax(axis=1).reshape(n, -1)
            shares = np.stack([np.bincount(c, minlength=y.shape[1]) / c.size for c in classes])
            out["class_shares"] = list(shares.astype(np.float32))
        else:
            top = np.argsort(-y, axis=1, kind="stable")[:, :5]
            out["top5"] = list(top.astype(np.int32))
            out["top5_scores"] = list(np.take_along_axis(y, top, axis=1).astype(np.float32))
        return out


def dataset(args):
    import ray

    if args.images:
        ds = ray.data.read_images(args.images, mode="RGB", include_paths=True, size=args.image_size)
        return ds.map(lambda r: {"id": os.path.basename(r["path"]), "image": r["image"]})
    shards = [(p, np.load(p)) for p in args.npy]
    items = [
        {"id": f"{os.path.basename(p)}:{i}", "data": a[i]} for p, a in shards for i in range(len(a))
    ]
    return ray.data.from_items(items)


def pq_rows(directory: str):
    import pyarrow.parquet as pq

    for row in pq.read_table(directory, columns=["id"]).column("id"):
        yield row


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the .net model file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a directory of images (PNG/JPEG), resized to the model's input")
    src.add_argument("--npy", nargs="+", help=".npy shards of N×C×H×W float32 inputs")
    p.add_argument("--out", required=True, help="output directory for the Parquet files")
    p.add_argument("--weights", help="weights file (.safetensors/.npz); default random weights")
    p.add_argument("--random-weights", type=int, default=0, help="seed for random weights (default 0)")
    p.add_argument("--size", help="bind the model's open spatial size, HxW")
    p.add_argument("--actors", type=int, default=2, help="model replicas (actors); default 2")
    p.add_argument("--threads-per-actor", type=int, default=1, help="netc threads (and CPUs) per actor")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call; default 16")
    p.add_argument("--address", help="a Ray cluster to join (e.g. auto); default: start a local one")
    p.add_argument(
        "--num-cpus",
        type=int,
        help="logical CPUs of a local Ray instance (default: actors × threads + 1)",
    )
    # The fault-tolerance test's hook: one actor dies on its second batch.
    p.add_argument("--crash-marker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import ray
    import netc

    shape = netc.check(args.model, size=args.size)["inputs"][0][1]
    h, w = (int(d) for d in shape.split("x")[2:4])
    args.image_size = (h, w)
    if ray.is_initialized():
        pass  # the caller's Ray (tests, notebooks)
    elif args.address:
        ray.init(address=args.address)
    else:
        # The actors take actors × threads CPUs; reading, decoding and
        # writing need one more, or they wait for an actor's CPU forever.
        cpus = args.num_cpus or args.actors * args.threads_per_actor + 1
        ray.init(num_cpus=cpus, include_dashboard=False)
    ds = dataset(args)
    predictions = ds.map_batches(
        Predictor,
        fn_constructor_kwargs=dict(
            model=os.path.abspath(args.model),
            batch=args.batch_size,
            threads=args.threads_per_actor,
            weights=os.path.abspath(args.weights) if args.weights else None,
            random_weights=args.random_weights,
            size=args.size,
            crash_marker=args.crash_marker,
        ),
        batch_size=args.batch_size,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=args.threads_per_actor,
        # Ray Data restarts dead actors and retries their batches by default
        # (max_restarts=-1, max_task_retries=-1); tests/test_ray.py checks it.
    )
    start = time.perf_counter()
    predictions.write_parquet(args.out)
    seconds = time.perf_counter() - start
    rows = sum(1 for _ in pq_rows(args.out))
    print(
        f"wrote {rows} predictions to {args.out} in {seconds:.2f} s "
        f"({rows / seconds:.1f} inputs/s, {args.actors} actor(s) x {args.threads_per_actor} thread(s))",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
