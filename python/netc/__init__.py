"""netc from Python: load a ``.net`` model, compile it to native code, run it
on NumPy arrays, benchmark it, and send it to other processes.

>>> import numpy as np, netc
>>> model = netc.load("models/resnet18.net", random_weights=0)
>>> x = np.random.rand(*model.inputs[0][1]).astype(np.float32)
>>> model(x).shape
(1, 1000)

Models are compiled by the same pipeline as the ``netc`` command line
(check, optimise, memory plan, Cranelift JIT), so ``model(x)`` computes what
``netc run`` does, with the same weights, to the last bit.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _netc

__all__ = ["NetError", "Model", "load", "check", "export_onnx", "__version__"]
__version__: str = _netc.__version__

PathLike = Union[str, "os.PathLike[str]"]


class NetError(Exception):
    """A model that does not check or compile, or weights that do not fit.

    ``str(err)`` is exactly what the ``netc`` command prints (with the
    source line and a caret when the error has a place in a file).

    Attributes:
        message: the one-line message, without location.
        file, line, column: where the error is (1-based), or ``None`` when
            it has no place in a model file (a missing weights file, say).
    """

    def __init__(
        self,
        rendered: str,
        file: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        message: Optional[str] = None,
    ) -> None:
        super().__init__(rendered)
        self.file = file
        self.line = line
        self.column = column
        self.message = message if message is not None else rendered

    def __reduce__(self):
        return (
            NetError,
            (str(self), self.file, self.line, self.column, self.message),
        )


def _path(p: PathLike) -> str:
    return os.fspath(p)


def _size(size: Optional[Union[Tuple[int, int], Sequence[int], str]]) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size must be (height, width) or 'HxW', found {size!r}")
        return int(parts[0]), int(parts[1])
    h, w = size
    return int(h), int(w)


class Model:
    """A compiled model. Call it on arrays; see :func:`load`.

    Attributes:
        name: the model's name (from its ``model`` line).
        inputs: ``[(name, shape), ...]`` in order.
        outputs: ``[(name, shape), ...]`` in order.
    """

    def __init__(self, recipe: Dict[str, Any]) -> None:
        self._recipe = recipe
        self._compiled = _compile(recipe, profile=False)
        self._profiled = None

    @property
    def name(self) -> str:
        return self._compiled.name

    @property
    def inputs(self) -> List[Tuple[str, Tuple[int, ...]]]:
        return [(n, tuple(s)) for n, s in self._compiled.inputs]

    @property
    def outputs(self) -> List[Tuple[str, Tuple[int, ...]]]:
        return [(n, tuple(s)) for n, s in self._compiled.outputs]

    def _arrays(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> List[np.ndarray]:
        names = [n for n, _ in self.inputs]
        if kwargs:
            if args:
                raise TypeError("pass inputs either by position or by name, not both")
            unknown = set(kwargs) - set(names)
            if unknown:
                raise TypeError(f"unknown input(s) {sorted(unknown)}; the model's inputs are {names}")
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise TypeError(f"missing input(s) {missing}")
            args = [kwargs[n] for n in names]
        if len(args) != len(names):
            raise TypeError(f"{self.name} takes {len(names)} input(s) ({', '.join(names)}), {len(args)} given")
        arrays = []
        for (name, shape), x in zip(self.inputs, args):
            # C-contiguous float32 arrays are used in place; anything else is
            # converted once here.
            a = np.ascontiguousarray(x, dtype=np.float32)
            if a.shape != shape:
                raise ValueError(f"input `{name}` must have shape {shape}, found {a.shape}")
            arrays.append(a)
        return arrays

    def __call__(self, *args: Any, **kwargs: Any) -> Union[np.ndarray, Dict[str, np.ndarray]]:
        """Run the model. Inputs by position or by name; returns the output
        array, or a dict of arrays by output name when there are several.

        C-contiguous float32 arrays are read in place; any other array (or
        list) is converted, which copies it once per call. The GIL is
        released while the model runs; calls from several threads take turns.

        Raises:
            ValueError: an input's shape differs from the compiled one.
            TypeError: the wrong number or names of inputs.
        """
        outs = self._compiled.run(self._arrays(args, kwargs))
        if len(outs) == 1:
            return outs[0]
        return {name: out for (name, _), out in zip(self.outputs, outs)}

    def bench(self, iters: int = 20, warmup: int = 3) -> Dict[str, Any]:
        """Time the model as ``netc bench --format json`` does (a profiling
        build of the same code, compiled on first use) and return that
        report as a dict."""
        if self._profiled is None:
            self._profiled = _compile(self._recipe, profile=True)
        return json.loads(self._profiled.bench(int(iters), int(warmup)))

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {list(s)}" for n, s in self.inputs)
        outs = ", ".join(f"{n}: {list(s)}" for n, s in self.outputs)
        return f"<netc.Model {self.name}({ins}) -> ({outs})>"

    # A pickled model carries its sources, its weights (path or bytes) and
    # options, and compiles again where it is unpickled.
    def __reduce__(self):
        return (_restore, (self._recipe,))


def _restore(recipe: Dict[str, Any]) -> Model:
    return Model(recipe)


def _reads(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _materialise(recipe: Dict[str, Any]) -> Tuple[str, Optional[str], Optional[tempfile.TemporaryDirectory]]:
    """The model file and weights file to compile from: the original paths
    when they still hold what was loaded, else copies in a temporary
    directory (sources laid out as they were relative to each other)."""
    files: List[Tuple[str, str]] = recipe["sources"]
    root = files[0][0]
    intact = all(_reads(p) == text for p, text in files)
    tmp = None
    weights = recipe.get("weights_path")
    if not intact or recipe.get("weights_bytes") is not None:
        tmp = tempfile.TemporaryDirectory(prefix="netc-")
    if not intact:
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in files])
        for p, text in files:
            dest = os.path.join(tmp.name, "src", os.path.relpath(os.path.abspath(p), base))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w", encoding="utf-8") as f:
                f.write(text)
        root = os.path.join(tmp.name, "src", os.path.relpath(os.path.abspath(files[0][0]), base))
    if recipe.get("weights_bytes") is not None:
        weights = os.path.join(tmp.name, "weights" + recipe["weights_suffix"])
        with open(weights, "wb") as f:
            f.write(recipe["weights_bytes"])
    return root, weights, tmp


def _compile(recipe: Dict[str, Any], profile: bool):
    root, weights, tmp = _materialise(recipe)
    try:
        return _netc.compile(
            root,
            weights=weights,
            random_weights=recipe["random_weights"],
            size=recipe["size"],
            batch=recipe["batch"],
            threads=recipe["threads"],
            target=recipe["target"],
            profile=profile,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


def load(
    path: PathLike,
    weights: Optional[Union[PathLike, bytes]] = None,
    random_weights: Optional[int] = None,
    size: Optional[Union[Tuple[int, int], str]] = None,
    batch: int = 1,
    threads: Optional[int] = None,
    target: str = "native",
    weights_format: str = ".safetensors",
) -> Model:
    """Compile the model in ``path`` (a ``.net`` file) and return it.

    Args:
        path: the model file; files it imports are read too.
        weights: a weights file (``.safetensors``, ``.npz``, ``.npy``
            directory layouts as the CLI reads them), or its bytes; with
            bytes, ``weights_format`` names the format by its suffix.
        random_weights: a seed for random weights when ``weights`` is
            ``None`` (seed 0, with a warning, when both are ``None``).
        size: ``(height, width)`` or ``"HxW"`` binding the inputs' open
            spatial sizes (``x: [N, 3, H: 520, W: 520]``).
        batch: the batch size the model is compiled for.
        threads: worker threads (default: one per core).
        target: ``"native"``, ``"x86-64-v3"`` or ``"x86-64-v4"``.

    Raises:
        NetError: the model does not check or compile, or the weights do
            not fit it (with ``file``, ``line``, ``column`` when located).
    """
    path = _path(path)
    if weights is None and random_weights is None:
        warnings.warn("no weights given; using random weights (seed 0)", stacklevel=2)
        random_weights = 0
    recipe: Dict[str, Any] = {
        "sources": _netc.sources(path),
        "weights_path": None,
        "weights_bytes": None,
        "weights_suffix": weights_format,
        "random_weights": random_weights,
        "size": _size(size),
        "batch": int(batch),
        "threads": 0 if threads is None else int(threads),
        "target": target,
    }
    if isinstance(weights, (bytes, bytearray, memoryview)):
        recipe["weights_bytes"] = bytes(weights)
    elif weights is not None:
        recipe["weights_path"] = os.path.abspath(_path(weights))
    return Model(recipe)


def check(path: PathLike, batch: int = 1, size: Optional[Union[Tuple[int, int], str]] = None) -> Dict[str, Any]:
    """Check a model and return what ``netc check --format json`` prints:
    parameters, MACs, and per layer the op, output shape, parameters, MACs,
    receptive field and call site.

    Raises:
        NetError: the model does not check.
    """
    return json.loads(_netc.check(_path(path), batch=int(batch), size=_size(size)))


def export_onnx(
    path: PathLike,
    out: PathLike,
    weights: Optional[PathLike] = None,
    random_weights: Optional[int] = None,
    batch: Optional[int] = None,
    size: Optional[Union[Tuple[int, int], str]] = None,
) -> None:
    """Write the model and its weights as ONNX (``netc export``): the batch
    is a symbolic ``N`` unless ``batch`` is given.

    Raises:
        NetError: the model does not check or the weights do not fit.
    """
    if weights is None and random_weights is None:
        random_weights = 0
    _netc.export_onnx(
        _path(path),
        _path(out),
        weights=None if weights is None else _path(weights),
        random_weights=random_weights,
        batch=batch,
        size=_size(size),
    )
