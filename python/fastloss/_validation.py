"""Argument checking and array normalisation shared by every public function.

Everything that a user can get wrong is checked here, before any call into ``_core``; the
core then only sees float32/float64 arrays with known shapes, strides and dtypes.
"""

from __future__ import annotations

import math
import operator
import threading
from typing import Any, NamedTuple, Optional

import numpy as np

from . import _core

REDUCTIONS = ("mean", "sum", "none")


class FloatInput(NamedTuple):
    """A prediction input prepared for the core."""

    array: np.ndarray  # float16/bfloat16/float32/float64, native byte order, aligned
    orig_dtype: np.dtype  # the caller's dtype (what a gradient is returned in)
    loss_dtype: np.dtype  # what losses are returned in (float32 for 16-bit inputs)
    compute_dtype: np.dtype  # what the core computes in, and weights/probabilities are given in


def is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16"


def _type_name(x: Any) -> str:
    return type(x).__name__


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def float_input(x: Any, name: str) -> FloatInput:
    """Return ``x`` as an array the core takes.

    float16, ``ml_dtypes.bfloat16``, float32 and float64 are used as they are (no copy unless
    unaligned or byte-swapped); 16-bit inputs are computed in float32 by the core. Integers and
    bools become float64 (as ``np.exp`` does). Complex, object and other dtypes: TypeError.
    """
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be converted to a numeric array ({exc})") from None
    dt = a.dtype
    if dt.kind == "c":
        raise TypeError(f"{name}: complex input ({dt}) is not supported; pass real numbers")
    if dt.kind == "f" and dt.itemsize in (2, 4, 8) or is_bfloat16(dt):
        native = np.dtype(dt.newbyteorder("=")) if dt.kind == "f" else dt
        if not dt.isnative or not a.flags.aligned:
            a = a.astype(native)
        wide = native.itemsize > 2
        return FloatInput(a, native, native if wide else _F32, native if wide else _F32)
    if dt.kind in "iub":
        return FloatInput(a.astype(np.float64), _F64, _F64, _F64)
    raise TypeError(
        f"{name}: unsupported dtype {dt}; use float16, bfloat16, float32, float64 or integers"
    )


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {_type_name(axis)}") from None
    if not -ndim <= ax < ndim:
        # AxisError is both a ValueError and an IndexError, as in NumPy.
        raise np.exceptions.AxisError(ax, ndim, name)
    return ax % ndim


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """axis None / int / tuple of ints -> sorted tuple of distinct non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(normalize_axis(a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"axis {tuple(axis)} repeats an axis")
        return tuple(sorted(axes))
    return (normalize_axis(axis, ndim),)


def as3d(a: np.ndarray, axis: int) -> np.ndarray:
    """View ``a`` as (prod(shape[:axis]), shape[axis], prod(shape[axis+1:])) (a copy only when
    the strides cannot express that shape)."""
    s = a.shape
    return a.reshape(math.prod(s[:axis]), s[axis], math.prod(s[axis + 1 :]))


def rows_last(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Move ``axes`` to the end and view the result as (rows, prod(axes sizes), 1)."""
    if len(axes) == 1:
        return as3d(a, axes[0])
    rest = [i for i in range(a.ndim) if i not in axes]
    t = a.transpose(rest + list(axes))
    n = math.prod(a.shape[i] for i in axes)
    return t.reshape(-1 if n else math.prod(a.shape[i] for i in rest), n, 1)


def is_view_of(view: np.ndarray, base: np.ndarray) -> bool:
    """True if ``view`` (a reshape of ``base``) shares base's memory instead of being a copy."""
    return view.size == 0 or np.may_share_memory(view, base)


def same_memory_layout(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def check_reduction(reduction: Any, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"reduction must be one of {', '.join(repr(r) for r in allowed)}; got {reduction!r}"
        )
    return reduction


def check_real(value: Any, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite real option in [lo, hi]."""
    if type(value) is float and lo <= value <= hi:  # (the common case, checked at once)
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a real number, got {_type_name(value)}")
    if isinstance(value, np.complexfloating):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not (lo <= v <= hi):  # also rejects NaN
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def check_temperature(value: Any) -> float:
    """A softmax temperature: a positive finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"temperature must be a real number, got {_type_name(value)}")
    if isinstance(value, np.complexfloating):
        raise TypeError(f"temperature must be a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"temperature must be a positive finite number, got {value!r}")
    return v


def mean_scale(reduction: str, count: int, mean_like: tuple[str, ...] = ("mean",)) -> float:
    """The factor a reduction puts on every term's gradient: ``1 / count`` for a mean-like
    one (0 when there is nothing to average), 1 for the others."""
    return (1.0 / count if count else 0.0) if reduction in mean_like else 1.0


def check_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {_type_name(value)}") from None


def class_weight(weight: Any, n_classes: int, dtype: np.dtype) -> Optional[np.ndarray]:
    """Per-class weights as a contiguous 1-d array of the compute dtype, or None."""
    if weight is None:
        return None
    w = float_input(weight, "weight").array
    if w.shape != (n_classes,):
        raise ValueError(
            f"weight must have shape ({n_classes},) (one weight per class), got {w.shape}"
        )
    return np.require(w, dtype, ["C", "A"])  # (a copy also when unaligned)


class ClassTargets:
    """Checked class-index targets: ``flat`` (int64, contiguous, one entry per row in C order
    of the target shape), ``shape`` (the logits' shape without the class axis), ``n_valid``
    (rows that are not ``ignore_index``) and ``valid`` (that mask, made when first asked for)."""

    __slots__ = ("flat", "shape", "n_valid", "ignore_index", "_valid")

    def __init__(self, flat: np.ndarray, shape: tuple, n_valid: int, ignore_index: int):
        self.flat, self.shape, self.n_valid, self.ignore_index = flat, shape, n_valid, ignore_index
        self._valid = None

    @property
    def valid(self) -> np.ndarray:
        if self._valid is None:
            self._valid = self.flat != self.ignore_index
        return self._valid


def class_targets(
    target: np.ndarray, logits_shape: tuple[int, ...], axis: int, ignore_index: int, name="target",
    check: bool = True,
) -> ClassTargets:
    """Validate integer class indices against logits of ``logits_shape`` with class ``axis``.
    ``check=False`` (an ``ignore_index`` within int64 only): the shape and dtype only, the
    values left to :func:`check_target_chunk` (``n_valid`` is then None)."""
    expected = logits_shape[:axis] + logits_shape[axis + 1 :]
    n_classes = logits_shape[axis]
    if target.shape != expected:
        raise ValueError(
            f"{name} has shape {target.shape} but class indices must have the logits' shape "
            f"without the class axis (axis={axis}): {expected}"
        )
    if target.dtype.kind == "u" and target.size and target.max() > np.iinfo(np.int64).max:
        big = int(np.flatnonzero(target.ravel() > np.iinfo(np.int64).max)[0])
        raise IndexError(
            f"{name}{np.unravel_index(big, expected)} is out of range for {n_classes} classes"
        )
    flat = np.require(target, np.int64, ["C", "A"]).reshape(-1)  # (unaligned: a copy)
    if not check and _INT64_MIN <= ignore_index <= _INT64_MAX:
        return ClassTargets(flat, expected, None, ignore_index)
    if _INT64_MIN <= ignore_index <= _INT64_MAX:
        from . import _core  # (one pass in the core, no temporaries)

        i, n_valid = _core.check_class_targets(flat, n_classes, ignore_index)
    else:  # (an ignore_index no int64 target can equal)
        n_valid = flat.size
        bad = (flat < 0) | (flat >= n_classes)
        i = int(np.flatnonzero(bad)[0]) if bad.any() else -1
    if i >= 0:
        _bad_class_target(flat, i, expected, n_classes, axis, ignore_index, name)
    return ClassTargets(flat, expected, int(n_valid), ignore_index)


def _bad_class_target(flat, i, expected, n_classes, axis, ignore_index, name):
    pos = tuple(int(k) for k in np.unravel_index(i, expected)) if expected else ()
    raise IndexError(
        f"{name}[{', '.join(map(str, pos))}] = {flat[i]} is out of range: class indices "
        f"must be in [0, {n_classes - 1}] (axis {axis} of the predictions has {n_classes} "
        f"classes) or equal ignore_index={ignore_index}"
    )


def check_target_chunk(ct: ClassTargets, r0: int, r1: int, n_classes: int, axis: int,
                       name: str = "target") -> int:
    """The checks of :func:`class_targets` for rows ``[r0, r1)`` of targets taken with
    ``check=False``, right after the kernel has read them (while they are in cache): raises the
    same IndexError for the first bad entry, else returns the number of rows not ignored."""
    from . import _core

    i, n_valid = _core.check_class_targets(ct.flat[r0:r1], n_classes, ct.ignore_index)
    if i >= 0:
        _bad_class_target(ct.flat, r0 + i, ct.shape, n_classes, axis, ct.ignore_index, name)
    return int(n_valid)


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def grad_buffer(
    grad_out: Any, shape: tuple[int, ...], dtype: np.dtype, name: str = "grad_out"
) -> np.ndarray:
    """Check a caller's preallocated gradient array."""
    if not isinstance(grad_out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {_type_name(grad_out)}")
    if grad_out.shape != shape:
        raise ValueError(f"{name} has shape {grad_out.shape}, expected {shape}")
    if grad_out.dtype != dtype:
        raise TypeError(f"{name} has dtype {grad_out.dtype}, expected {dtype}")
    if not grad_out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return grad_out


def check_grad_out_given(grad_out: Any, return_grad: Any) -> bool:
    """``bool(return_grad)``; a ``grad_out`` without ``return_grad`` is a ValueError."""
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is given but return_grad is False; pass return_grad=True")
    return bool(return_grad)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.may_share_memory(a, b):
        return False
    try:  # (exact for the layouts met in practice; "too hard" counts as overlapping)
        return bool(np.shares_memory(a, b, max_work=10**6))
    except np.exceptions.TooHardError:
        return True


def grad_buffers(
    grad_out: Any, specs: list[tuple[tuple[int, ...], np.dtype]], inputs: tuple[str, ...],
    name: str = "grad_out",
) -> list[Optional[np.ndarray]]:
    """Check a caller's preallocated gradients of a function whose gradient is a tuple over
    several differentiable inputs: a tuple (or list) with one entry per input (``specs``: the
    gradients' (shape, dtype); ``inputs``: the inputs' names), each an ndarray (checked as
    :func:`grad_buffer`, named ``grad_out[i]``) or None (a fresh array). Two entries that share
    memory are a ValueError. Returns the entries as a list (None where None)."""
    n = len(specs)
    what = f"one array or None per differentiable input ({', '.join(inputs)})"
    if not isinstance(grad_out, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of {n} entries, {what}; got "
                        f"{_type_name(grad_out)}")
    if len(grad_out) != n:
        raise ValueError(f"{name} must have {n} entries, {what}; got {len(grad_out)}")
    bufs = [None if g is None else grad_buffer(g, shape, dtype, f"{name}[{i}]")
            for i, (g, (shape, dtype)) in enumerate(zip(grad_out, specs))]
    for i in range(n):
        for j in range(i + 1, n):
            if bufs[i] is not None and bufs[j] is not None and (
                    bufs[i] is bufs[j] or _overlap(bufs[i], bufs[j])):
                raise ValueError(f"{name}[{i}] and {name}[{j}] share memory; each gradient "
                                 "needs its own array")
    return bufs


def deliver_grads(grads, bufs: Optional[list]) -> tuple:
    """The gradients as returned: each copied into its caller's buffer where ``bufs`` has one
    (that buffer is then returned in its place). Called once everything has been computed and
    checked, so a failing call leaves the caller's buffers untouched. A gradient that is a view
    of its buffer with the buffer's layout (written there directly) is not copied."""
    if bufs is None:
        return tuple(grads)
    out = []
    for g, b in zip(grads, bufs):
        if b is not None and g is not b:
            if not same_memory_layout(g, b):  # (else a view of b the core wrote into)
                np.copyto(b, g)
            g = b
        out.append(g)
    return tuple(out)


# Per-row losses of a reduced call: a float64 buffer per calling thread, reused, so that a call
# of a megabyte or two does not allocate it anew. malloc hands a freed block of that size back
# to the system when it sits at the top of the heap, and the next call's array is then
# page-faulted in again: cross-entropy with the gradient over (128000, 2) float32 logits took
# 830 us with a fresh per-row array (and a fresh gradient) per call, 200 us without.
_ROW_SCRATCH_MAX = 1 << 18  # rows (2 MB); larger calls allocate (their own work dwarfs it)
_row_scratch = threading.local()


def row_losses(n: int, reduction: str) -> np.ndarray:
    """A float64 array for ``n`` per-row losses: a new one for ``reduction="none"`` (it becomes
    the result), else, up to 2**18 rows, a view of the calling thread's reused buffer (summed
    by :func:`reduce_rows` before the function returns; the kernels overwrite every row)."""
    if reduction == "none" or n > _ROW_SCRATCH_MAX:
        return np.empty(n, dtype=np.float64)
    buf = getattr(_row_scratch, "buf", None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 4096), dtype=np.float64)
        _row_scratch.buf = buf
    return buf[:n]


def reduce_rows(
    per_row: np.ndarray, reduction: str, denom: float, shape: tuple[int, ...], dtype: np.dtype
):
    """Apply a reduction to float64 per-row losses: a NumPy scalar, or an array of ``shape``."""
    if reduction == "none":
        return per_row.reshape(shape).astype(dtype, copy=False)
    if per_row.ndim == 1 and per_row.dtype == _F64 and (per_row.size < 2 or
                                                         per_row.strides[0] == 8):
        total = _core.sum_f64(per_row)  # (np.sum's order and bits, without its call overhead)
    else:
        total = float(np.sum(per_row))
    return reduce_total(total, reduction, denom, dtype)


def reduce_total(total: float, reduction: str, denom: float, dtype: np.dtype):
    """The "sum" or "mean" of losses whose float64 sum is ``total``, as a NumPy scalar."""
    if reduction == "sum":
        return dtype.type(total)
    total, denom = float(total), float(denom)
    if denom != 0.0:
        return dtype.type(total / denom)  # (Python's float division is the IEEE one)
    with np.errstate(invalid="ignore", divide="ignore"):  # (x / 0: the machine's inf or NaN)
        return dtype.type(np.float64(total) / np.float64(denom))


class GradTarget:
    """Where the core writes a gradient, and how the caller gets it back.

    The core writes straight into ``grad_out`` (or a fresh array) when it can be viewed in
    the core's 3-d layout and does not partly overlap an input; otherwise it writes into a
    temporary that is copied over at the end. ``grad_out`` may be the logits array itself.
    """

    def __init__(self, grad_out: Any, x: FloatInput, axis: int, inputs3d: tuple = ()):
        shape, dtype = x.array.shape, x.array.dtype
        self.user = None
        if grad_out is not None:
            self.user = grad_buffer(grad_out, shape, x.orig_dtype)
            g3 = as3d(grad_out, axis)
            aliased = any(
                np.may_share_memory(grad_out, a) and not same_memory_layout(g3, a)
                for a in inputs3d
            )
            if is_view_of(g3, grad_out) and not aliased:
                self.core, self.temp = g3, None
                return
        self.temp = np.empty(shape, dtype=dtype)
        self.core = as3d(self.temp, axis)

    def result(self) -> np.ndarray:
        if self.temp is None:
            return self.user
        if self.user is None:
            return self.temp
        np.copyto(self.user, self.temp)
        return self.user
