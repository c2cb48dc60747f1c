# Type stub of the private C++ core. Arrays reaching it are float32/float64 (int64 targets,
# float64 per-row losses); 3-d arrays are (n0, classes, n2) views with the class axis in the middle.
from typing import Optional

import numpy as np

compiler: str

def logsumexp(x: np.ndarray, out: np.ndarray) -> None: ...
def softmax(x: np.ndarray, out: np.ndarray, log: bool) -> None: ...
def cross_entropy(
    logits: np.ndarray,
    target: Optional[np.ndarray],
    probs: Optional[np.ndarray],
    weight: Optional[np.ndarray],
    ignore_index: int,
    label_smoothing: float,
    grad_scale: float,
    loss: np.ndarray,
    grad: Optional[np.ndarray],
    z_loss: float = ...,
    softcap: float = ...,
    focal: bool = ...,
    focal_gamma: float = ...,
) -> None: ...
def nll_loss(
    log_probs: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray],
    ignore_index: int,
    grad_scale: float,
    loss: np.ndarray,
    grad: Optional[np.ndarray],
) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def stream_read(x: np.ndarray) -> float: ...
def stream_copy(x: np.ndarray, y: np.ndarray, nt: bool) -> None: ...
def compiled_isas() -> list[str]: ...
def isa_supported(name: str) -> bool: ...
def active_isa() -> str: ...
def set_isa(name: str) -> bool: ...
