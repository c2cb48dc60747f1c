# Type stub of the private C++ core. Arrays reaching it are float32/float64 (int64 targets,
# float64 per-row losses); 3-d arrays are (n0, classes, n2) views with the class axis in the middle.
from typing import Optional

import numpy as np

compiler: str
threading: str  # "openmp" or "threadpool"

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
    lse: Optional[np.ndarray] = ...,
    correct: Optional[np.ndarray] = ...,
    grad_fresh: bool = ...,
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
# Small-call fast paths: what the public function returns, or None (its general path applies).
def class_rows_small(kind: int, logits: object, target: object, ignore_index: object,
                     reduction: object, return_grad: object, p0: float,
                     grad_out: object = None) -> object: ...
def distill_small(kind: int, student: object, teacher: object, axis: object,
                  temperature: object, beta: object, reduction: object, return_grad: object,
                  grad_out: object = None) -> object: ...
def multilabel_margin_small(input: object, target: object, reduction: object,
                            return_grad: object, grad_out: object = None) -> object: ...
def pointwise_fast(kind: int, x: object, y: object, p0: float, p1: float, reduction: object,
                   return_grad: object, grad_out: object = None) -> object: ...
def softmax_small(op: int, x: object, axis: object) -> object: ...
def check_class_targets(target: np.ndarray, n_classes: int, ignore_index: int) -> tuple[int, int]: ...
def sum_f64(a: np.ndarray) -> float: ...  # np.sum of contiguous 1-d float64, bit for bit
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def stream_read(x: np.ndarray) -> float: ...
def stream_copy(x: np.ndarray, y: np.ndarray, nt: bool) -> None: ...
def compiled_isas() -> list[str]: ...
def isa_supported(name: str) -> bool: ...
def active_isa() -> str: ...
def set_isa(name: str) -> bool: ...
# Distribution losses: 3-d (n0, classes, n2) views, per-row float64 losses written to `loss`.
def kl_div_with_logits(
    student: np.ndarray,
    teacher: np.ndarray,
    temperature: float,
    grad_scale: float,
    loss: np.ndarray,
    grad: Optional[np.ndarray],
) -> None: ...
def gaussian_kl(
    mu: np.ndarray,
    logvar: np.ndarray,
    grad_scale: float,
    loss: np.ndarray,
    grad_mu: Optional[np.ndarray],
    grad_logvar: Optional[np.ndarray],
) -> None: ...
def multi_margin_loss(
    input: np.ndarray,
    target: np.ndarray,
    weight: Optional[np.ndarray],
    p: int,
    margin: float,
    grad_scale: float,
    loss: np.ndarray,
    grad: Optional[np.ndarray],
) -> None: ...
# CTC loss: log_probs (T, N, C); the labels of sample n are
# targets[target_offset[n] : target_offset[n] + target_lengths[n]]; per-sample float64 losses.
def ctc_loss(
    log_probs: np.ndarray,
    targets: np.ndarray,
    target_offset: np.ndarray,
    input_lengths: np.ndarray,
    target_lengths: np.ndarray,
    blank: int,
    zero_infinity: bool,
    loss: np.ndarray,
    grad_scale: Optional[np.ndarray],
    grad: Optional[np.ndarray],
) -> None: ...
# Sharded cross-entropy (fastloss.scale): logits (n0, shard classes, n2), int64 global targets;
# per-row float64 statistics and uint8 has_target written in place; the gradient kernel takes
# per-row float64 ref / p_coef / t_value (see src/cpp/scale.hpp) and may write grad = logits.
def ce_shard_stats(
    logits: np.ndarray,
    target: np.ndarray,
    class_offset: int,
    ignore_index: int,
    softcap: float,
    max: np.ndarray,
    sumexp: np.ndarray,
    target_logit: np.ndarray,
    sum_logits: np.ndarray,
    has_target: np.ndarray,
) -> None: ...
def ce_shard_grad(
    logits: np.ndarray,
    target: np.ndarray,
    class_offset: int,
    ignore_index: int,
    softcap: float,
    ref: np.ndarray,
    p_coef: np.ndarray,
    t_value: np.ndarray,
    u: float,
    grad: np.ndarray,
) -> None: ...

# Issue 16: overlap losses and the cosine similarity (bind_overlap.cpp).
def overlap_stats(
    input: np.ndarray,
    target: Optional[np.ndarray],
    index: Optional[np.ndarray],
    act: int,
    chunk: int,
    partial: np.ndarray,
) -> None: ...
def overlap_grad(
    input: np.ndarray,
    target: Optional[np.ndarray],
    index: Optional[np.ndarray],
    act: int,
    coef_a: np.ndarray,
    coef_b: np.ndarray,
    grad: np.ndarray,
) -> None: ...
def cosine_similarity(
    x1: np.ndarray,
    x2: np.ndarray,
    eps: float,
    grad_scale: float,
    cos: np.ndarray,
    grad1: Optional[np.ndarray],
    grad2: Optional[np.ndarray],
) -> None: ...


# issue 16: the PyTorch-catalogue pair losses (bind_pairs.cpp)
def pairwise(
    kind: int,
    x: np.ndarray,
    x2: np.ndarray | None,
    y: np.ndarray,
    w: np.ndarray | None,
    p0: float,
    log_input: bool,
    full: bool,
    grad_scale: float,
    loss: np.ndarray | None,
    grad: np.ndarray | None,
    grad2: np.ndarray | None,
    count_only: bool = False,
) -> tuple[float, int]: ...
def pairwise_fast(kind: int, x: object, x2: object, y: object, p0: float, log_input: bool,
                  full: bool, reduction: object, return_grad: object, rows_mean: bool,
                  grad_out: object = None) -> object: ...
def multilabel_margin(
    input: np.ndarray,
    target: np.ndarray,
    grad_scale: float,
    loss: np.ndarray,
    grad: np.ndarray | None,
) -> None: ...
