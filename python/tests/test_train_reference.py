"""`netc train` against an independent NumPy implementation.

Two SGD steps (momentum, weight decay) and two Adam steps of a small model
(conv without bias, batch norm, ReLU, max pool, dense; no dropout — a
bias before batch norm has a zero gradient that Adam would turn into
lr-sized steps of rounding noise) from the same
weights and batches: every updated weight and running statistic must agree
within 1e-4 of the tensor's largest magnitude. The reference is written
from the textbook formulas and PyTorch's documented update rules, in
float64, with no code shared with netc.
"""

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
NETC = ROOT / "target" / "release" / "netc"

MODEL = """model tiny(x: [N, 2, 8, 8]) {
    c = x -> conv(4, 3, pad: 1, bias: false)
    b = c -> batchnorm
    p = b -> [relu, maxpool(2), flatten]
    y = p -> dense(5)
    return y
}
"""


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        assert info["dtype"] == "F32"
        data = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype="<f4")
        out[key] = data.reshape(info["shape"]).astype(np.float64)
    return out


def conv_forward(x, w):
    n, c, h, wd = x.shape
    o = w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack(
        [xp[:, :, i : i + h, j : j + wd] for i in range(3) for j in range(3)], axis=2
    )  # n, c, 9, h, w
    y = np.einsum("nckhw,ock->nohw", cols, w.reshape(o, c, 9))
    return y, cols


def conv_backward(cols, w, dy):
    n, c, _, h, wd = cols.shape
    o = w.shape[0]
    return np.einsum("nohw,nckhw->ock", dy, cols).reshape(w.shape)


def step_reference(p, x, labels):
    """Loss gradients of every learnable tensor and the new running stats."""
    y1, cols = conv_forward(x, p["c.weight"])
    mean = y1.mean(axis=(0, 2, 3))
    var = y1.var(axis=(0, 2, 3))
    count = y1.shape[0] * y1.shape[2] * y1.shape[3]
    inv = 1.0 / np.sqrt(var + 1e-5)
    xhat = (y1 - mean[None, :, None, None]) * inv[None, :, None, None]
    g, bt = p["b.weight"], p["b.bias"]
    y2 = xhat * g[None, :, None, None] + bt[None, :, None, None]
    y3 = np.maximum(y2, 0.0)
    n, c, h, w = y3.shape
    win = y3.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    y4 = win.max(axis=-1)
    flat = y4.reshape(n, -1)
    logits = flat @ p["y.weight"].T + p["y.bias"]

    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    dlogits = prob.copy()
    dlogits[np.arange(n), labels] -= 1.0
    dlogits /= n

    grads = {
        "y.weight": dlogits.T @ flat,
        "y.bias": dlogits.sum(axis=0),
    }
    dflat = dlogits @ p["y.weight"]
    dy4 = dflat.reshape(y4.shape)
    dwin = np.zeros_like(win)
    np.put_along_axis(dwin, arg[..., None], dy4[..., None], axis=-1)
    dy3 = dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)
    dy2 = dy3 * (y2 > 0)
    grads["b.weight"] = (dy2 * xhat).sum(axis=(0, 2, 3))
    grads["b.bias"] = dy2.sum(axis=(0, 2, 3))
    dxhat = dy2 * g[None, :, None, None]
    dy1 = (
        inv[None, :, None, None]
        / count
        * (
            count * dxhat
            - dxhat.sum(axis=(0, 2, 3))[None, :, None, None]
            - xhat * (dxhat * xhat).sum(axis=(0, 2, 3))[None, :, None, None]
        )
    )
    grads["c.weight"] = conv_backward(cols, p["c.weight"], dy1)
    running = {
        "b.running_mean": 0.9 * p["b.running_mean"] + 0.1 * mean,
        "b.running_var": 0.9 * p["b.running_var"] + 0.1 * var * count / (count - 1),
    }
    return grads, running


def sgd(params, grads, state, lr, momentum, wd):
    for k, gr in grads.items():
        d = gr + wd * params[k]
        buf = d if k not in state else momentum * state[k] + d
        state[k] = buf
        params[k] = params[k] - lr * buf


def adam(params, grads, state, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    for k, gr in grads.items():
        m, v = state.get(k, (0.0, 0.0))
        m = b1 * m + (1 - b1) * gr
        v = b2 * v + (1 - b2) * gr * gr
        state[k] = (m, v)
        mhat = m / (1 - b1**t)
        vhat = v / (1 - b2**t)
        params[k] = params[k] - lr * mhat / (np.sqrt(vhat) + eps)


def initial(rng):
    return {
        "c.weight": rng.normal(0, 0.4, (4, 2, 3, 3)),
        "b.weight": rng.uniform(0.5, 1.5, 4),
        "b.bias": rng.normal(0, 0.1, 4),
        "b.running_mean": rng.normal(0, 0.1, 4),
        "b.running_var": rng.uniform(0.5, 1.5, 4),
        "y.weight": rng.normal(0, 0.3, (5, 64)),
        "y.bias": rng.normal(0, 0.1, 5),
    }


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_steps_match_numpy(tmp_path, optimizer):
    assert NETC.exists(), f"build netc first: cargo build --release ({NETC})"
    rng = np.random.default_rng(4)
    params = initial(rng)
    x = rng.uniform(0, 1, (16, 2, 8, 8))
    labels = rng.integers(0, 5, 16)
    (tmp_path / "tiny.net").write_text(MODEL)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    np.savez(tmp_path / "init.npz", **{k: v.astype(np.float32) for k, v in params.items()})
    flags = {
        "sgd": ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "0.01"],
        "adam": ["--optimizer", "adam", "--lr", "0.01"],
    }[optimizer]
    subprocess.run(
        [str(NETC), "train", str(tmp_path / "tiny.net"),
         "--train-images", str(tmp_path / "x.npy"), "--train-labels", str(tmp_path / "labels.npy"),
         "--weights", str(tmp_path / "init.npz"), "--batch", "8", "--epochs", "1",
         "--no-shuffle", "--out", str(tmp_path / "out.safetensors"), *flags],
        check=True, capture_output=True,
    )
    got = read_safetensors(tmp_path / "out.safetensors")

    # The reference starts from the f32 values netc read.
    params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    x = x.astype(np.float32).astype(np.float64)
    state = {}
    for t, batch in enumerate([slice(0, 8), slice(8, 16)], start=1):
        grads, running = step_reference(params, x[batch], labels[batch])
        params.update(running)
        if optimizer == "sgd":
            sgd(params, grads, state, lr=0.1, momentum=0.9, wd=0.01)
        else:
            adam(params, grads, state, t, lr=0.01)
    before = initial(np.random.default_rng(4))
    for k, want in params.items():
        scale = np.abs(want).max()
        err = np.abs(got[k] - want).max()
        assert err <= 1e-4 * scale, f"{k}: max |Δ| {err:.3g} of {scale:.3g}"
        # Every tensor moved: a test that passes on unchanged weights
        # would prove nothing.
        assert np.abs(got[k] - before[k]).max() > 1e-3 * scale, f"{k} did not change"
