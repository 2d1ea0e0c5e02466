"""Type stubs of the compiled extension behind `netc` (see netc/__init__.py)."""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

class Compiled:
    """A JIT-compiled model; `netc.Model` wraps it."""

    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> List[Tuple[str, List[int]]]: ...
    @property
    def outputs(self) -> List[Tuple[str, List[int]]]: ...
    def run(self, inputs: Sequence[npt.NDArray[np.float32]]) -> List[npt.NDArray[np.float32]]: ...
    def bench(self, iters: int, warmup: int) -> str: ...

def compile(
    path: str,
    weights: Optional[str] = None,
    random_weights: Optional[int] = None,
    size: Optional[Tuple[int, int]] = None,
    batch: int = 1,
    threads: int = 0,
    target: str = "native",
    profile: bool = False,
) -> Compiled: ...
def check(path: str, batch: int = 1, size: Optional[Tuple[int, int]] = None) -> str: ...
def sources(path: str) -> List[Tuple[str, str]]: ...
def export_onnx(
    path: str,
    out: str,
    weights: Optional[str] = None,
    random_weights: Optional[int] = None,
    batch: Optional[int] = None,
    size: Optional[Tuple[int, int]] = None,
) -> None: ...
