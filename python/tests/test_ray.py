"""Batch inference on Ray Data (examples/ray_batch_inference.py): a local
Ray with 2 CPUs, 2 actors of 1 thread each, 512 generated inputs."""

import importlib.util
import os

import numpy as np
import pytest

try:
    import pyarrow.parquet as pq
    import ray
except ImportError:
    # .ci/run sets NETC_REQUIRE_PYTHON: there a missing Ray fails the suite.
    if os.environ.get("NETC_REQUIRE_PYTHON"):
        raise
    pytest.skip("pip install 'ray[data]' for the Ray tests", allow_module_level=True)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "deep_convnet.net")
WEIGHTS = os.path.join(ROOT, "..", "shared", "data", "deep_convnet", "deep_convnet_params.npz")
BATCH = 16


def example():
    spec = importlib.util.spec_from_file_location(
        "ray_batch_inference", os.path.join(ROOT, "examples", "ray_batch_inference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(4):
        p = d / f"shard{i}.npy"
        np.save(p, rng.random((128, 1, 28, 28), dtype=np.float32))
        paths.append(str(p))
    return paths


def single_process(shards):
    """The same predictions from one loop in this process."""
    predict = example().Predictor(MODEL, batch=BATCH, threads=1, weights=WEIGHTS)
    out = {}
    for p in shards:
        a = np.load(p)
        ids = [f"{os.path.basename(p)}:{i}" for i in range(len(a))]
        for s in range(0, len(a), BATCH):
            r = predict({"id": ids[s : s + BATCH], "data": list(a[s : s + BATCH])})
            for k, top, scores in zip(r["id"], r["top5"], r["top5_scores"]):
                out[k] = (list(top), list(scores))
    return out


def run(shards, out_dir, crash_marker=None):
    args = [
        MODEL,
        "--npy",
        *shards,
        "--weights",
        WEIGHTS,
        "--out",
        str(out_dir),
        "--actors",
        "2",
        "--threads-per-actor",
        "1",
        "--batch-size",
        str(BATCH),
    ]
    if crash_marker:
        args += ["--crash-marker", str(crash_marker)]
    assert example().main(args) == 0
    table = pq.read_table(str(out_dir)).to_pydict()
    return table


def check_against_loop(table, expected):
    ids = table["id"]
    assert len(ids) == 512, f"{len(ids)} rows for 512 inputs"
    assert len(set(ids)) == 512, "an input was written twice"
    assert set(ids) == set(expected), "inputs went missing"
    for k, top, scores in zip(ids, table["top5"], table["top5_scores"]):
        want_top, want_scores = expected[k]
        assert list(top) == want_top, k
        assert np.array_equal(np.float32(scores), np.float32(want_scores)), k


def test_predictions_equal_a_single_process_loop(local_ray, shards, tmp_path):
    check_against_loop(run(shards, tmp_path / "out"), single_process(shards))


def test_a_killed_actor_loses_and_duplicates_nothing(local_ray, shards, tmp_path):
    marker = tmp_path / "crashed"
    table = run(shards, tmp_path / "out", crash_marker=marker)
    assert marker.exists(), "no actor was killed: the test tested nothing"
    check_against_loop(table, single_process(shards))
