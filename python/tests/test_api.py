"""The netc package: loading, running, errors, pickling, and agreement with
the `netc` command line on the same weights and input."""

import os
import pickle
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import netc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.path.join(ROOT, "..", "shared", "data")
WEIGHTS = os.path.join(SHARED, "deep_convnet", "deep_convnet_params.npz")


def model_path(name):
    return os.path.join(ROOT, "models", name + ".net")


def netc_binary():
    path = os.environ.get("NETC_BIN", os.path.join(ROOT, "target", "release", "netc"))
    if not os.path.exists(path):
        pytest.fail(f"{path} missing: run `cargo build --release` first (or set NETC_BIN)")
    return path


@pytest.fixture(scope="module")
def convnet():
    return netc.load(model_path("deep_convnet"), weights=WEIGHTS, threads=2)


def test_load_and_call_resnet18():
    m = netc.load(model_path("resnet18"), random_weights=0)
    assert m.name == "resnet18"
    assert m.inputs == [("x", (1, 3, 224, 224))]
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    y = m(x)
    assert y.shape == (1, 1000) and y.dtype == np.float32
    assert np.isfinite(y).all()
    # Deterministic: the same input gives the same output, bit for bit.
    assert np.array_equal(m(x), y)


def test_outputs_equal_netc_run(tmp_path, convnet):
    x = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [
            netc_binary(),
            "run",
            model_path("deep_convnet"),
            "--weights",
            WEIGHTS,
            "--input",
            str(tmp_path / "x.npy"),
            "--output",
            str(tmp_path / "y.npy"),
            "--top-k",
            "0",
            "--threads",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    expected = np.load(tmp_path / "y.npy")
    assert np.array_equal(convnet(x), expected)


def test_the_book_accuracy_on_mnist_digits(convnet):
    """The book's weights classify MNIST digits: the first 100 test images,
    one by one, through the package."""
    import gzip

    images = os.path.join(SHARED, "mnist", "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(SHARED, "mnist", "t10k-labels-idx1-ubyte.gz")
    if not os.path.exists(images):
        pytest.skip("no MNIST test split in ../shared/data/mnist")
    with gzip.open(images) as f:
        x = np.frombuffer(f.read()[16:], dtype=np.uint8)[: 100 * 784]
    with gzip.open(labels) as f:
        t = np.frombuffer(f.read()[8:], dtype=np.uint8)[:100]
    x = (x.reshape(100, 1, 28, 28) / 255.0).astype(np.float32)
    right = sum(int(convnet(x[i : i + 1]).argmax() == t[i]) for i in range(100))
    assert right >= 98


def test_inputs_are_checked_and_converted(convnet):
    with pytest.raises(ValueError, match=r"input `x` must have shape \(1, 1, 28, 28\), found \(1, 28, 28\)"):
        convnet(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(TypeError, match="takes 1 input"):
        convnet()
    # float64, non-contiguous and nested lists are converted once.
    x = np.random.default_rng(2).random((1, 1, 28, 56))[:, :, :, ::2]
    assert np.array_equal(convnet(x), convnet(np.ascontiguousarray(x, dtype=np.float32)))
    assert np.array_equal(convnet(x=x.astype(np.float32)), convnet(x.astype(np.float32)))


def test_several_outputs_come_back_by_name(tmp_path):
    path = tmp_path / "two.net"
    path.write_text(
        "model two(x: [N, 2, 8, 8]) {\n"
        "    a = x -> conv(3, 3, pad: 1) as left\n"
        "    b = x -> conv(4, 1) as right\n"
        "    return a, b\n"
        "}\n"
    )
    m = netc.load(path, random_weights=3)
    assert [n for n, _ in m.outputs] == ["left", "right"]
    y = m(np.ones((1, 2, 8, 8), np.float32))
    assert set(y) == {"left", "right"}
    assert y["left"].shape == (1, 3, 8, 8) and y["right"].shape == (1, 4, 8, 8)


def test_errors_are_net_errors_with_a_location(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("model m(x: [N, 3, 8, 8]) {\n    x -> convv(8, 3)\n}\n")
    with pytest.raises(netc.NetError) as info:
        netc.load(bad, random_weights=0)
    e = info.value
    assert (e.file, e.line, e.column) == (str(bad), 2, 10)
    assert e.message == "unknown op or block `convv`"
    # str() is what the CLI prints: location, message, source line, caret.
    assert str(e).startswith(f"{bad}:2:10: unknown op or block `convv`")
    assert "^" in str(e)
    # Errors without a place in a model file have no location.
    with pytest.raises(netc.NetError) as info:
        netc.load(model_path("deep_convnet"), weights="no/such/weights.npz")
    assert info.value.line is None and "no/such/weights.npz" in str(info.value)
    with pytest.raises(netc.NetError):
        netc.check(bad)
    # They pickle (to travel back from worker processes).
    again = pickle.loads(pickle.dumps(e))
    assert (again.file, again.line, again.column, again.message) == (e.file, e.line, e.column, e.message)


def test_errors_inside_blocks_name_their_instantiation(tmp_path):
    bad = tmp_path / "nested.net"
    bad.write_text(
        "block basic(out)(x) {\n    x -> conv(out, 30)\n}\n"
        "model m(x: [1, 3, 8, 8]) {\n    x -> basic(4)\n}\n"
    )
    with pytest.raises(netc.NetError) as info:
        netc.check(bad)
    assert info.value.line == 2
    assert f"in block `basic` instantiated at {bad}:5:10" in str(info.value)


def test_check_returns_the_cli_json():
    s = netc.check(model_path("googlenet"))
    assert s["params"] == 6_624_904
    layer = next(l for l in s["layers"] if l["name"] == "inception3a.branch2.1.conv")
    assert [f["name"] for f in layer["call_site"]] == ["inception3a", "branch2.1", "conv"]
    assert netc.check(model_path("fcn_resnet50"), size="64x64")["layers"][0]["shape"] == "1x64x32x32"


def test_no_weights_warns_and_uses_seed_zero():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = netc.load(model_path("deep_convnet"))
    assert any("random weights" in str(w.message) for w in caught)
    b = netc.load(model_path("deep_convnet"), random_weights=0)
    x = np.ones((1, 1, 28, 28), np.float32)
    assert np.array_equal(a(x), b(x))


def test_pickled_models_compile_again_and_agree(tmp_path, convnet):
    x = np.random.default_rng(3).random((1, 1, 28, 28), dtype=np.float32)
    again = pickle.loads(pickle.dumps(convnet))
    assert np.array_equal(again(x), convnet(x))
    # Sources travel with the model: it compiles where the files are gone.
    src = tmp_path / "copy"
    src.mkdir()
    for name in ["resnet18", "resnet_blocks"]:
        (src / f"{name}.net").write_text(open(model_path(name)).read())
    m = netc.load(src / "resnet18.net", random_weights=5)
    blob = pickle.dumps(m)
    for f in src.iterdir():
        f.unlink()
    restored = pickle.loads(blob)
    y = np.random.default_rng(4).random((1, 3, 224, 224), dtype=np.float32)
    assert np.array_equal(restored(y), m(y))
    # Weights given as bytes travel as bytes.
    with open(WEIGHTS, "rb") as f:
        in_memory = netc.load(model_path("deep_convnet"), weights=f.read(), weights_format=".npz")
    assert np.array_equal(pickle.loads(pickle.dumps(in_memory))(x), convnet(x))


def test_calls_from_threads_are_serialised_and_correct(convnet):
    xs = [np.random.default_rng(i).random((1, 1, 28, 28), dtype=np.float32) for i in range(16)]
    expected = [convnet(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(convnet, xs))
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_bench_gives_the_cli_report(convnet):
    r = convnet.bench(iters=3, warmup=1)
    assert r["model"] == "deep_convnet"
    assert r["latency_ms"]["median"] > 0
    assert abs(sum(t["share"] for t in r["by_type"].values()) - 1) < 1e-6
    assert all(l["call_site"] for l in r["layers"])


def test_export_onnx(tmp_path):
    out = tmp_path / "m.onnx"
    netc.export_onnx(model_path("deep_convnet"), out, weights=WEIGHTS)
    assert out.stat().st_size > 400_000
    if os.environ.get("NETC_REQUIRE_PYTHON"):
        import onnx
    else:
        onnx = pytest.importorskip("onnx")
    model = onnx.load(str(out))
    assert model.graph.input[0].name == "x"
