"""The fuzz harness of fastloss: one input (bytes) -> one checked call of the public API.

``one_input(data)`` reads every decision from ``data`` (which function, shapes, dtypes, memory
layout, values, options, right or wrong types), calls fastloss and checks the result. It needs
only NumPy and fastloss, so the same code serves

- ``tests/fuzz/fuzz_fastloss.py``: the coverage-guided fuzzer (atheris, libFuzzer's engine),
  which mutates ``data`` to reach new code in the argument checks and the kernels, and
- ``tests/test_fuzz.py``: CI replays every stored input of ``tests/fuzz/corpus`` (the crashing
  inputs found so far, kept as regression tests) and a fixed batch of random inputs.

A call passes when it either raises one of the documented exceptions (``ValueError``,
``TypeError``, ``IndexError``; ``FileNotFoundError`` for ``eval_file``) with a message, or
returns, and then

1. its inputs are unchanged (unless they are the ``grad_out`` buffer),
2. the same call on C-contiguous, aligned, writeable copies of every array gives the same
   numbers (within rounding for the dtype): memory layouts are invisible,
3. a second identical call gives bit-identical numbers (no uninitialised reads), and
4. for float64 inputs whose values are finite and moderate, it agrees with
   ``fastloss.reference`` (the textbook NumPy formulas) where that is finite, and is finite
   there too.

Anything else (another exception type, a crash, a sanitizer report, a hang) is a finding:
``one_input`` raises ``Finding`` (or lets the unexpected exception through) and the fuzzer
stores the input.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from typing import Any, Callable

import numpy as np

import fastloss as fl
from fastloss import reference as ref

DOCUMENTED = (ValueError, TypeError, IndexError)


class Finding(AssertionError):
    """A call that broke the contract (see the module docstring)."""


# --- reading decisions from the bytes -----------------------------------------------------
class Reader:
    """Decisions read from the front of ``data``; zeros once it is used up (so every input,
    however short, is a complete test case, and short inputs mean simple cases)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out + bytes(n - len(out))

    def int(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        span = hi - lo + 1
        v = self.byte() if span <= 256 else int.from_bytes(self.take(4), "little")
        return lo + v % span

    def choice(self, options):
        return options[self.int(0, len(options) - 1)]

    def chance(self, k: int) -> bool:
        """True with probability about 1/k."""
        return self.byte() % k == 0

    def seed(self) -> int:
        return int.from_bytes(self.take(4), "little")


SIZES = (0, 1, 1, 2, 2, 3, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 100)
SPECIALS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e30, -1e30, 1e-40, -1e-40, 5e-324, 1e300, -1e300,
            np.inf, -np.inf, np.nan, 88.0, -88.0, 710.0, 3.4e38, 1e-7)
MAX_ELEMS = 40_000


def shape_of(r: Reader, ndim: int | None = None, lo: int = 0) -> tuple:
    if ndim is None:
        ndim = r.choice((1, 1, 2, 2, 2, 3, 0))
    shape = [max(lo, r.choice(SIZES)) for _ in range(ndim)]
    while math.prod(shape) > MAX_ELEMS:
        shape[shape.index(max(shape))] //= 2
    return tuple(shape)


def _bf16():
    try:
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover
        return np.dtype(np.float32)


FLOAT_DTYPES = ("float32", "float64", "float32", "float64", "float16", "bfloat16")
ODD_DTYPES = ("int64", "int32", "bool", "complex128", "uint8", ">f8", "<f4", "object")


def values(r: Reader, shape: tuple, lo: float = -10.0, hi: float = 10.0) -> np.ndarray:
    """float64 values of ``shape``: uniform, sprinkled with special values, extreme, or raw
    bit patterns."""
    n = math.prod(shape)
    g = np.random.default_rng(r.seed())
    mode = r.int(0, 9)
    if mode <= 4:
        a = g.uniform(lo, hi, n)
    elif mode <= 6:
        a = g.uniform(lo, hi, n)
        k = r.int(1, 8)
        for _ in range(k):
            if n:
                a[r.int(0, 255) % n] = r.choice(SPECIALS)
    elif mode == 7:
        a = g.choice(np.array(SPECIALS), n)
    elif mode == 8:
        a = g.uniform(-1, 1, n) * 10.0 ** r.int(-40, 38)
    else:  # raw float64 bit patterns (NaN payloads, subnormals, huge)
        a = np.frombuffer(g.bytes(8 * n), dtype=np.float64).copy()
    return a.reshape(shape)


def in_layout(r: Reader, a: np.ndarray, keep_values: bool = False) -> Any:
    """``a`` in one of many memory layouts, or as a list. The zero-stride layouts repeat the
    first slice (and change ``a`` to match) unless ``keep_values``."""
    kind = r.int(0, 11)
    if keep_values and kind in (7, 8):
        kind = 0
    if a.ndim == 0 or a.size == 0:
        return a if kind != 11 else a.tolist()
    if kind == 1:
        return np.asfortranarray(a)
    if kind == 2:  # negative strides
        idx = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[idx])[idx]
    if kind == 3:  # transposed view
        return np.ascontiguousarray(a.T).T
    if kind == 4:  # every axis strided by 2
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        v = big[tuple(slice(None, None, 2) for _ in a.shape)]
        v[...] = a
        return v
    if kind == 5 and a.dtype.kind != "O":  # unaligned
        raw = np.zeros(a.nbytes + a.itemsize + 1, np.uint8)
        v = raw[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
        v[...] = a
        return v
    if kind == 6:  # read-only
        v = a.copy()
        v.flags.writeable = False
        return v
    if kind == 7:  # zero stride along the first axis (the first slice repeated)
        a[...] = a[:1]
        return np.broadcast_to(a[:1], a.shape)
    if kind == 8 and a.ndim >= 2:  # zero stride along the last axis
        a[...] = a[..., :1]
        return np.broadcast_to(a[..., :1], a.shape)
    if kind == 9 and a.dtype.kind == "f" and a.dtype.isnative:  # byte-swapped
        return a.astype(a.dtype.newbyteorder())
    if kind == 11:
        return a.tolist()
    return a


def cast(a: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "bfloat16":
            dtype = _bf16()
        return np.asarray(a).astype(dtype)


def float_array(r: Reader, shape: tuple, lo=-10.0, hi=10.0, dtype=None) -> Any:
    if dtype is None:
        dtype = r.choice(FLOAT_DTYPES) if not r.chance(24) else r.choice(ODD_DTYPES)
    return in_layout(r, cast(values(r, shape, lo, hi), dtype))


def index_array(r: Reader, shape: tuple, n_classes: int, ignore_index: int = -100) -> Any:
    g = np.random.default_rng(r.seed())
    a = g.integers(0, max(n_classes, 1), size=shape)
    if r.chance(3) and a.size and -2**63 <= ignore_index < 2**63:
        a.reshape(-1)[r.int(0, 255) % a.size] = ignore_index
    if r.chance(12) and a.size:  # out of range
        a.reshape(-1)[r.int(0, 255) % a.size] = r.choice((-1, n_classes, -101, 2**40))
    dtype = r.choice(("int64", "int64", "int32", "int8", "uint8", "int16", "float64", "bool"))
    with np.errstate(all="ignore"):
        a = a.astype(dtype)
    return in_layout(r, a)


def option(r: Reader, valid, invalid=()):
    """A valid option value mostly, sometimes an invalid one (a wrong value or type)."""
    if invalid and r.chance(16):
        return r.choice(tuple(invalid))
    return r.choice(tuple(valid))


REDUCTIONS = ("mean", "sum", "none")
BAD_REDUCTIONS = ("avg", None, 3, "MEAN", "")
BAD_FLOATS = (float("nan"), float("inf"), -1.0, "1", None, 1e308, [1.0], -0.0, True)


def shrink_shape(shape, axis):
    ax = axis % len(shape) if shape else 0
    return tuple(s for i, s in enumerate(shape) if i != ax)


def pick_axis(r: Reader, ndim: int) -> Any:
    if r.chance(20):
        return r.choice((ndim, -ndim - 1, 1.0, "0", None, (0,)))
    return r.int(-ndim, ndim - 1) if ndim else -1


# --- one builder per public function: returns (name, args, kwargs) ---------------------------
def _grad_out(r: Reader, x, kwargs):
    """Sometimes a grad_out: a fresh buffer, the input itself (in place) or a wrong one."""
    if not kwargs.get("return_grad") or not r.chance(3) or not isinstance(x, np.ndarray):
        return
    k = r.int(0, 4)
    if k == 0 and x.flags.writeable:
        kwargs["grad_out"] = x
    elif k == 1:
        kwargs["grad_out"] = np.full(x.shape, 7.0, x.dtype if x.dtype.kind == "f" else float)
    elif k == 2:
        kwargs["grad_out"] = np.zeros(x.shape[::-1] + (1,), np.float32)
    elif k == 3:
        kwargs["grad_out"] = np.zeros(x.shape, np.float64 if x.dtype != np.float64 else np.float32)
    else:
        kwargs["grad_out"] = np.zeros(x.shape, x.dtype)[::-1] if x.ndim else None


def b_softmax_family(r: Reader, name):
    shape = shape_of(r)
    x = float_array(r, shape)
    kw = {}
    if r.chance(2):
        kw["axis"] = r.choice((None, -1, 0, 1, (0, 1), (-1, 0), 2, -3, (0, 0), 1.5))
    if name == "logsumexp":
        if r.chance(3):
            kw["keepdims"] = True
        if r.chance(4):
            kw["b"] = float_array(r, shape if not r.chance(3) else shape[-1:], lo=-2, hi=2)
        if r.chance(4):
            kw["return_sign"] = True
    return name, (x,), kw


def _ce_common(r: Reader, name):
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 2, 3)), lo=0)
    lo, hi = (-30.0, 0.0) if name == "nll_loss" else (-10.0, 10.0)
    x = float_array(r, shape, lo, hi)
    kw: dict = {}
    axis = -1
    if len(shape) >= 2 and r.chance(4):
        axis = pick_axis(r, len(shape))
        kw["axis"] = axis
    try:
        tshape = shrink_shape(shape, axis if isinstance(axis, int) else -1)
        n_classes = shape[axis % len(shape)] if isinstance(axis, int) and shape else 1
    except (ZeroDivisionError, TypeError):
        tshape, n_classes = shape[:-1], 1
    if r.chance(24):
        tshape = tshape + (1,) if not r.chance(2) else tshape[1:]
    ignore = -100
    if r.chance(4):
        ignore = option(r, (-100, 0, 1, -1, 5), (1.5, None, 2**70, "x"))
        kw["ignore_index"] = ignore
    return shape, x, kw, tshape, n_classes, ignore


def b_cross_entropy(r: Reader, name="cross_entropy"):
    shape, x, kw, tshape, c, ignore = _ce_common(r, name)
    ign = ignore if isinstance(ignore, int) else -100
    if name == "cross_entropy" and r.chance(4):  # probability targets
        p = values(r, shape, 0.0, 1.0)
        t = in_layout(r, cast(p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300),
                              r.choice(("float32", "float64"))))
    else:
        t = index_array(r, tshape, c, ign)
    kw["reduction"] = option(r, REDUCTIONS, BAD_REDUCTIONS)
    if r.chance(3):
        kw["weight"] = float_array(r, (c,) if not r.chance(16) else (c + 1,), 0.0, 3.0)
    if name == "cross_entropy":
        if r.chance(3):
            kw["label_smoothing"] = option(r, (0.0, 0.1, 0.5, 1.0), BAD_FLOATS + (1.5,))
        if r.chance(3):
            kw["z_loss"] = option(r, (0.0, 1e-4, 0.5), BAD_FLOATS)
        if r.chance(3):
            kw["softcap"] = option(r, (None, 30.0, 2.5, 1e-3), BAD_FLOATS + (0.0,))
    kw["return_grad"] = r.chance(2)
    _grad_out(r, x, kw)
    return name, (x, t), kw


def b_focal(r: Reader):
    shape, x, kw, tshape, c, ignore = _ce_common(r, "softmax_focal_loss")
    t = index_array(r, tshape, c, ignore if isinstance(ignore, int) else -100)
    kw["reduction"] = option(r, REDUCTIONS, BAD_REDUCTIONS)
    if r.chance(2):
        kw["gamma"] = option(r, (0.0, 0.5, 1.0, 2.0, 5.0), BAD_FLOATS)
    if r.chance(3):
        kw["alpha"] = (option(r, (None, 0.25, 1.0), BAD_FLOATS) if r.chance(2)
                       else float_array(r, (c,), 0.0, 1.0))
    kw["return_grad"] = r.chance(2)
    _grad_out(r, x, kw)
    return "softmax_focal_loss", (x, t), kw


def b_perplexity(r: Reader, name):
    shape, x, kw, tshape, c, ignore = _ce_common(r, "cross_entropy")
    t = index_array(r, tshape, c, ignore if isinstance(ignore, int) else -100)
    if r.chance(3):
        kw["label_smoothing"] = option(r, (0.0, 0.1), BAD_FLOATS)
    if r.chance(16):
        kw["reduction"] = "sum"
    args = (x, t)
    if name == "bits_per_byte":
        args = (x, t, option(r, (1, 3.5, 1000, 10**12), (0, -1, float("nan"), "7", None)))
    return name, args, kw


POINTWISE = ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
             "binary_cross_entropy_with_logits", "sigmoid_focal_loss", "hinge_loss", "kl_div",
             "gaussian_kl")


def b_pointwise(r: Reader, name):
    shape = shape_of(r)
    lo, hi = (0.0, 1.0) if name == "binary_cross_entropy" else (-10.0, 10.0)
    if name == "kl_div":
        lo, hi = -20.0, 0.0
    x = float_array(r, shape, lo, hi)
    tshape = shape if not r.chance(6) else (shape[-1:] if r.chance(2) else shape + (2,))
    if name in ("binary_cross_entropy", "binary_cross_entropy_with_logits",
                "sigmoid_focal_loss"):
        y = values(r, tshape, 0.0, 1.0)
        if r.chance(2):
            y = np.round(y)
        t = in_layout(r, cast(y, r.choice(FLOAT_DTYPES)))
    elif name == "hinge_loss":
        y = np.sign(values(r, tshape)) if r.chance(2) else np.round(values(r, tshape, 0, 1))
        if r.chance(10) and y.size:
            y.reshape(-1)[0] = 0.5
        t = in_layout(r, cast(y, r.choice(("float32", "float64", "int64", "int8"))))
    elif name == "kl_div":
        t = float_array(r, tshape, 0.0, 1.0)
    else:
        t = float_array(r, tshape)
    kw: dict = {"reduction": option(r, REDUCTIONS + (("batchmean",) if name == "kl_div" else ()),
                                    BAD_REDUCTIONS)}
    if name in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
                "binary_cross_entropy_with_logits") and r.chance(4):
        kw["weight"] = float_array(r, shape if r.chance(2) else shape[-1:], 0.0, 2.0)
    if name == "binary_cross_entropy_with_logits" and r.chance(4):
        kw["pos_weight"] = float_array(r, shape[-1:], 0.0, 3.0)
    if name == "huber_loss" and r.chance(2):
        kw["delta"] = option(r, (1.0, 0.1, 5.0, 1e-30), BAD_FLOATS + (0.0,))
    if name == "smooth_l1_loss" and r.chance(2):
        kw["beta"] = option(r, (1.0, 0.0, 0.1, 5.0), BAD_FLOATS)
    if name == "sigmoid_focal_loss":
        if r.chance(2):
            kw["alpha"] = option(r, (0.25, -1.0, 0.0, 1.0), BAD_FLOATS)
        if r.chance(2):
            kw["gamma"] = option(r, (0.0, 1.0, 2.0, 0.5), BAD_FLOATS)
    if name == "hinge_loss":
        if r.chance(2):
            kw["margin"] = option(r, (1.0, 0.0, 2.5), BAD_FLOATS)
        if r.chance(2):
            kw["squared"] = r.chance(2)
    if name == "kl_div" and r.chance(2):
        kw["log_target"] = True
        t = float_array(r, tshape, -20.0, 0.0)
    kw["return_grad"] = r.chance(2)
    if name == "gaussian_kl":
        return name, (x, t), kw
    _grad_out(r, x, kw)
    return name, (x, t), kw


def b_kl_logits(r: Reader):
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)))
    s = float_array(r, shape)
    t = float_array(r, shape if not r.chance(12) else shape[::-1])
    kw: dict = {"reduction": option(r, REDUCTIONS + ("batchmean",), BAD_REDUCTIONS)}
    if r.chance(3):
        kw["temperature"] = option(r, (1.0, 2.0, 0.5, 1e-3), BAD_FLOATS + (0.0,))
    if len(shape) >= 2 and r.chance(4):
        kw["axis"] = pick_axis(r, len(shape))
    kw["return_grad"] = r.chance(2)
    _grad_out(r, s, kw)
    return "kl_div_with_logits", (s, t), kw


def b_multi_margin(r: Reader):
    shape = shape_of(r, ndim=r.choice((1, 2, 2)))
    x = float_array(r, shape)
    c = shape[-1] if shape else 1
    t = index_array(r, shape[:-1], c, -100)
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS)}
    if r.chance(3):
        kw["p"] = option(r, (1, 2), (3, 0, 1.5, "1"))
    if r.chance(3):
        kw["margin"] = option(r, (1.0, 0.0, 2.0), BAD_FLOATS)
    if r.chance(4):
        kw["weight"] = float_array(r, (c,), 0.0, 2.0)
    kw["return_grad"] = r.chance(2)
    return "multi_margin_loss", (x, t), kw


def b_embeddings(r: Reader, name):
    n, d = r.choice(SIZES[:14]), r.choice(SIZES[:14])
    shape = (n, d) if not r.chance(10) else r.choice(((d,), (n, d, 2), ()))
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS), "return_grad": r.chance(2)}
    a = float_array(r, shape, -3, 3)
    b = float_array(r, shape if not r.chance(16) else (n, d + 1), -3, 3)
    if name == "contrastive_loss":
        lab = np.round(values(r, (n,), 0, 1))
        if r.chance(10) and n:
            lab[0] = 0.5
        if r.chance(2):
            kw["margin"] = option(r, (1.0, 0.0, 3.0), BAD_FLOATS)
        return name, (a, b, in_layout(r, cast(lab, r.choice(("float64", "int64", "bool"))))), kw
    if name == "triplet_margin_loss":
        c = float_array(r, shape, -3, 3)
        if r.chance(2):
            kw["p"] = option(r, (2.0, 1.0, np.inf, 3.0, 0.5), (0.0, -1.0, float("nan"), "2"))
        if r.chance(3):
            kw["swap"] = True
        if r.chance(3):
            kw["eps"] = option(r, (1e-6, 0.0, 1.0), BAD_FLOATS)
        if r.chance(3):
            kw["margin"] = option(r, (1.0, 0.0, -1.0), BAD_FLOATS)
        return name, (a, b, c), kw
    if r.chance(2):
        kw["temperature"] = option(r, (0.07, 1.0, 1e-3), BAD_FLOATS + (0.0,))
    if r.chance(3):
        kw["normalize"] = False
    return name, (a, b), kw


def b_ctc(r: Reader):
    t_len, n, c = r.int(0, 12), r.int(0, 5), r.int(1, 9)
    blank = r.int(0, c - 1) if not r.chance(20) else r.choice((c, -1))
    x = values(r, (t_len, n, c), -8, 0)
    with np.errstate(all="ignore"):
        x = x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))  # log-probabilities
    if r.chance(3) and x.size:
        x.reshape(-1)[r.int(0, 255) % x.size] = r.choice((-np.inf, np.nan, 0.0, 5.0))
    lp = in_layout(r, cast(x, r.choice(("float32", "float64", "float16"))))
    g = np.random.default_rng(r.seed())
    tl = g.integers(0, 6, n)
    il = g.integers(0, t_len + 1, n) if not r.chance(4) else np.full(n, t_len)
    labels = [c for c in range(c) if c != blank] or [0]
    if r.chance(2):  # padded (N, S)
        s = int(tl.max(initial=0)) + r.int(0, 2)
        tg = g.choice(labels, size=(n, s))
    else:  # concatenated
        tg = g.choice(labels, size=int(tl.sum()))
    if r.chance(10) and tg.size:
        tg.reshape(-1)[0] = r.choice((blank, c, -1))
    if r.chance(10) and n:
        (tl if r.chance(2) else il)[0] = r.choice((-1, 99, t_len + 1))
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS), "blank": blank,
                "return_grad": r.chance(2)}
    if r.chance(3):
        kw["zero_infinity"] = True
    conv = r.choice((lambda a: a, lambda a: a.astype(np.int32), lambda a: a.tolist()))
    return "ctc_loss", (lp, conv(tg), conv(il), conv(tl)), kw


def b_linear_ce(r: Reader):
    n, d, v = r.choice(SIZES[:14]), r.choice(SIZES[:12]), r.choice(SIZES[1:])
    dt = r.choice(("float32", "float64"))
    h = float_array(r, (n, d), -2, 2, dtype=dt)
    w = float_array(r, (v, d) if not r.chance(16) else (d, v), -2, 2, dtype=dt)
    t = index_array(r, (n,), v)
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS), "return_grad": r.chance(2)}
    if r.chance(3):
        kw["bias"] = float_array(r, (v,), -1, 1, dtype=dt)
    if r.chance(2):
        kw["chunk_size"] = option(r, (1, 3, 7, 64, 8192), (0, -1, 2.5, None))
    if r.chance(3):
        kw["row_chunk_size"] = option(r, (None, 1, 2, 5), (0, -3, 1.5))
    if r.chance(3):
        kw["label_smoothing"] = option(r, (0.0, 0.1), BAD_FLOATS)
    if r.chance(3):
        kw["z_loss"] = option(r, (0.0, 1e-3), BAD_FLOATS)
    if r.chance(4):
        kw["softcap"] = option(r, (None, 5.0), BAD_FLOATS)
    return "linear_cross_entropy", (h, w, t), kw


BUILDERS: list[tuple[str, Callable[[Reader], tuple]]] = [
    ("cross_entropy", b_cross_entropy),
    ("cross_entropy", b_cross_entropy),
    ("nll_loss", lambda r: b_cross_entropy(r, "nll_loss")),
    ("softmax_focal_loss", b_focal),
    ("perplexity", lambda r: b_perplexity(r, "perplexity")),
    ("bits_per_byte", lambda r: b_perplexity(r, "bits_per_byte")),
    ("logsumexp", lambda r: b_softmax_family(r, "logsumexp")),
    ("softmax", lambda r: b_softmax_family(r, "softmax")),
    ("log_softmax", lambda r: b_softmax_family(r, "log_softmax")),
    *[(p, (lambda name: lambda r: b_pointwise(r, name))(p)) for p in POINTWISE],
    ("kl_div_with_logits", b_kl_logits),
    ("multi_margin_loss", b_multi_margin),
    ("contrastive_loss", lambda r: b_embeddings(r, "contrastive_loss")),
    ("triplet_margin_loss", lambda r: b_embeddings(r, "triplet_margin_loss")),
    ("clip_loss", lambda r: b_embeddings(r, "clip_loss")),
    ("ctc_loss", b_ctc),
    ("linear_cross_entropy", b_linear_ce),
    ("sharded_cross_entropy", None),  # the stats functions, composed; see check_sharded
    ("eval_file", None),  # the .npy reader; see check_eval_file
]


# Issue 16: sparsemax, sparsemax_loss, the multi-class hinge / perceptron, the generalized JSD
# and the ranking softmax loss.
def b_sparsemax(r: Reader):
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)))
    kw: dict = {}
    if shape and r.chance(3):
        kw["axis"] = pick_axis(r, len(shape))
    return "sparsemax", (float_array(r, shape),), kw


def b_class_rows(r: Reader, name):
    """sparsemax_loss, multiclass_hinge_loss, multiclass_perceptron_loss: scores and class
    indices (or, for sparsemax_loss, sometimes a distribution of the scores' shape)."""
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)))
    x = float_array(r, shape)
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS)}
    axis = pick_axis(r, len(shape)) if len(shape) >= 2 and r.chance(3) else -1
    if axis != -1:
        kw["axis"] = axis
    c = shape[axis % len(shape)] if shape and isinstance(axis, int) and -len(shape) <= axis < len(shape) else 1
    if name == "sparsemax_loss" and r.chance(3):
        g = np.random.default_rng(r.seed())
        p = g.random(shape) * (g.random(shape) < 0.7)
        with np.errstate(all="ignore"):
            p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300) if p.size else p
        t = in_layout(r, p)
    else:
        t = index_array(r, shrink_shape(shape, axis if isinstance(axis, int) else -1), c)
    if name == "multiclass_hinge_loss" and r.chance(3):
        kw["margin"] = option(r, (1.0, 0.0, 2.0, -0.5), BAD_FLOATS)
    kw["return_grad"] = r.chance(2)
    _grad_out(r, x, kw)
    return name, (x, t), kw


def b_jsd(r: Reader):
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)))
    s = float_array(r, shape)
    t = float_array(r, shape if not r.chance(12) else shape[::-1])
    kw: dict = {"reduction": option(r, REDUCTIONS + ("batchmean",), BAD_REDUCTIONS)}
    if r.chance(2):
        kw["beta"] = option(r, (0.0, 0.5, 1.0, 0.1, 0.9), BAD_FLOATS + (1.5,))
    if r.chance(3):
        kw["temperature"] = option(r, (1.0, 2.0, 0.5, 1e-3), BAD_FLOATS + (0.0,))
    if len(shape) >= 2 and r.chance(4):
        kw["axis"] = pick_axis(r, len(shape))
    kw["return_grad"] = r.chance(2)
    _grad_out(r, s, kw)
    return "jensen_shannon_with_logits", (s, t), kw


def b_ranking(r: Reader):
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)))
    x = float_array(r, shape)
    g = np.random.default_rng(r.seed())
    yshape = shape if not r.chance(8) else shape[-1:]
    y = in_layout(r, (g.integers(0, 4, size=yshape) * (g.random(yshape) < 0.5)).astype(
        r.choice(("float64", "float32", "int64"))))
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS)}
    if r.chance(2):
        w = g.random(shape) < 0.7
        if r.chance(12):
            w = w.astype(r.choice(("float64", "int8")))
        kw["where"] = in_layout(r, w)
    kw["return_grad"] = r.chance(2)
    _grad_out(r, x, kw)
    return "ranking_softmax_loss", (x, y), kw


BUILDERS += [
    ("sparsemax", b_sparsemax),
    ("sparsemax_loss", lambda r: b_class_rows(r, "sparsemax_loss")),
    ("multiclass_hinge_loss", lambda r: b_class_rows(r, "multiclass_hinge_loss")),
    ("multiclass_perceptron_loss", lambda r: b_class_rows(r, "multiclass_perceptron_loss")),
    ("jensen_shannon_with_logits", b_jsd),
    ("ranking_softmax_loss", b_ranking),
]

# --- issue 16: PyTorch's missing losses, log-cosh, generalized KL (fastloss/pairs.py,
# fastloss/multilabel.py) -------------------------------------------------------------------
PAIRS_ELEMENTWISE = ("poisson_nll_loss", "gaussian_nll_loss", "margin_ranking_loss",
                     "hinge_embedding_loss", "soft_margin_loss", "log_cosh_loss",
                     "generalized_kl_div", "multilabel_soft_margin_loss")


def b_pairs(r: Reader, name):
    shape = shape_of(r)
    lo, hi = (0.0, 5.0) if name == "poisson_nll_loss" and r.chance(2) else (-10.0, 10.0)
    x = float_array(r, shape, lo, hi)
    tshape = shape if not r.chance(6) else (shape[-1:] if r.chance(2) else shape + (2,))
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS),
                "return_grad": r.chance(2)}
    if name in ("hinge_embedding_loss", "margin_ranking_loss", "soft_margin_loss"):
        y = np.sign(values(r, tshape))
        if r.chance(10) and y.size:
            y.reshape(-1)[0] = 0.5
        t = in_layout(r, cast(y, r.choice(("float32", "float64", "int64", "int8"))))
    elif name in ("generalized_kl_div", "multilabel_soft_margin_loss", "poisson_nll_loss"):
        t = float_array(r, tshape, 0.0 if not r.chance(10) else -1.0, 3.0)
    else:
        t = float_array(r, tshape)
    args: tuple = (x, t)
    if name == "poisson_nll_loss":
        if lo == 0.0 or r.chance(8):
            kw["log_input"] = option(r, (False,), ("no", 1))
        if r.chance(3):
            kw["full"] = True
        if r.chance(3):
            kw["eps"] = option(r, (1e-8, 0.0, 0.5), BAD_FLOATS)
    if name == "gaussian_nll_loss":
        vshape = r.choice((shape, shape, shape[:-1], tuple(1 if i == 0 else k for i, k in
                                                          enumerate(shape)), (2,)))
        var = float_array(r, vshape, 0.0 if not r.chance(10) else -1.0, 3.0) \
            if not r.chance(6) else option(r, (0.5, 2.0), (-1.0,))
        args = (x, t, var)
        if r.chance(3):
            kw["full"] = True
        if r.chance(3):
            kw["eps"] = option(r, (1e-6, 0.1), BAD_FLOATS + (0.0,))
    if name == "margin_ranking_loss":
        args = (x, float_array(r, shape if not r.chance(6) else shape[-1:]), t)
        if r.chance(2):
            kw["margin"] = option(r, (0.0, 0.5, -1.0), BAD_FLOATS)
    if name == "hinge_embedding_loss" and r.chance(2):
        kw["margin"] = option(r, (1.0, 0.0, 2.5), BAD_FLOATS)
    if name == "generalized_kl_div" and r.chance(3):
        kw["axis"] = pick_axis(r, len(np.shape(x)))
    if name == "multilabel_soft_margin_loss" and r.chance(4):
        kw["weight"] = float_array(r, shape[-1:], 0.0, 2.0)
    if name not in ("gaussian_nll_loss", "margin_ranking_loss"):
        _grad_out(r, x, kw)
    return name, args, kw


def b_pair_rows(r: Reader, name):
    n, d = r.choice(SIZES[:14]), r.choice(SIZES[:14])
    shape = (n, d) if not r.chance(10) else r.choice(((d,), (n, d, 2), ()))
    kw: dict = {"reduction": option(r, REDUCTIONS, BAD_REDUCTIONS), "return_grad": r.chance(2)}
    a = float_array(r, shape, -3, 3)
    if name == "multilabel_margin_loss":
        g = np.random.default_rng(r.seed())
        t = g.integers(-1, max(d, 1) + (1 if r.chance(16) else 0), size=shape)
        t = in_layout(r, t.astype(r.choice(("int64", "int32", "int8")))) if r.chance(4) else t
        return name, (a, t), kw
    b = float_array(r, shape if not r.chance(16) else (n, d + 1), -3, 3)
    if name == "cosine_embedding_loss":
        y = np.sign(values(r, shape[:-1]))
        y = np.where(y == 0, 1.0, y)
        if r.chance(10) and y.size:
            y.reshape(-1)[0] = 0.0
        if r.chance(2):
            kw["margin"] = option(r, (0.0, 0.5, -0.5), BAD_FLOATS)
        return name, (a, b, in_layout(r, cast(y, r.choice(("float64", "int64", "float32"))))), kw
    c = float_array(r, shape, -3, 3)
    if r.chance(3):
        kw["swap"] = True
    if r.chance(3):
        kw["margin"] = option(r, (1.0, 0.5), BAD_FLOATS + (0.0,))
    if r.chance(3):
        kw["distance_function"] = option(
            r, (lambda u, v: np.abs(np.asarray(u, float) - np.asarray(v, float)).sum(axis=-1),),
            (3, "l1"))
    return name, (a, b, c), kw


BUILDERS += [
    *[(p, (lambda name: lambda r: b_pairs(r, name))(p)) for p in PAIRS_ELEMENTWISE],
    *[(p, (lambda name: lambda r: b_pair_rows(r, name))(p))
      for p in ("multilabel_margin_loss", "cosine_embedding_loss",
                "triplet_margin_with_distance_loss")],
]


# --- the checks -------------------------------------------------------------------------
def _arrays(obj):
    """Every ndarray inside obj (tuples, lists, dicts, dataclass-like objects)."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _arrays(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _arrays(o)


def _snapshot(args, kwargs):
    items = [a for a in _arrays((args, {k: v for k, v in kwargs.items() if k != "grad_out"}))]
    return [(a, a.copy()) for a in items]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "O":
        return all(x is y or x == y or (x != x and y != y) for x, y in zip(a.flat, b.flat))
    return a.tobytes() == b.tobytes() or bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _numbers(out) -> list[np.ndarray]:
    """The numeric results of a call, flattened to a list of float64 arrays (a complex array
    gives its real and imaginary parts)."""
    if isinstance(out, (np.ndarray, np.generic, float, int)):
        a = np.asarray(out)
        if a.dtype.kind == "c":  # (the softmax family on complex input): both parts
            return [a.real.astype(np.float64), a.imag.astype(np.float64)]
        return [a.astype(np.float64)]
    if isinstance(out, (tuple, list)):
        return [x for o in out for x in _numbers(o)]
    if out is None:
        return []
    if hasattr(out, "__dataclass_fields__"):
        return [x for k in out.__dataclass_fields__ for x in _numbers(getattr(out, k))]
    raise Finding(f"unexpected result type {type(out).__name__}")


def _check_types(name, out):
    def leaf(o):
        if type(o) in (float, int):
            raise Finding(f"{name} returned a Python {type(o).__name__}, not a NumPy value")
        if isinstance(o, (np.ndarray, np.generic)) and o.dtype.kind not in "fcV":
            raise Finding(f"{name} returned dtype {o.dtype}")
    for o in (out if isinstance(out, tuple) else (out,)):
        if isinstance(o, tuple):
            for p in o:
                leaf(p)
        else:
            leaf(o)


def _close(got: list, want: list, tol: float, what: str):
    if len(got) != len(want):
        raise Finding(f"{what}: {len(got)} results against {len(want)}")
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise Finding(f"{what}: shape {g.shape} against {w.shape}")
        if not np.array_equal(np.isnan(g), np.isnan(w)):
            raise Finding(f"{what}: NaN at different places\n{g}\n{w}")
        inf = np.isinf(w) | np.isinf(g)
        if not np.array_equal(np.where(inf, g, 0), np.where(inf, w, 0)):
            raise Finding(f"{what}: inf at different places\n{g}\n{w}")
        fin = np.isfinite(w) & np.isfinite(g)
        scale = max(1.0, float(np.max(np.abs(w[fin]), initial=0.0)))
        err = float(np.max(np.abs(g[fin] - w[fin]), initial=0.0))
        if err > tol * scale:
            raise Finding(f"{what}: differs by {err:.3g} (scale {scale:.3g}, tol {tol:g})\n"
                          f"{g}\n{w}")


def _dtype_tol(args) -> float:
    t = 1e-12
    for a in _arrays(args):
        if a.dtype.kind in "fV":  # (bfloat16 is kind "V")
            t = max(t, {8: 1e-12, 4: 2e-6}.get(a.dtype.itemsize, 4e-3 if a.dtype.kind == "f"
                                                  else 8e-3))
    return t


def _plain(obj):
    """Deep copy with every ndarray C-contiguous, aligned, writeable, native; lists stay."""
    if isinstance(obj, np.ndarray):
        a = np.array(obj, order="C", copy=True)
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        return a
    if isinstance(obj, tuple):
        return tuple(_plain(o) for o in obj)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


#: Functions whose second argument is a target that belongs in [0, 1] but, as in PyTorch, is
#: not checked: outside it the formulas cancel, so only there is the reference compared.
UNIT_TARGETS = ("binary_cross_entropy_with_logits", "sigmoid_focal_loss")


def _reference_applies(args, kwargs, name="") -> bool:
    if name == "clip_loss" and kwargs.get("normalize", True):
        # a row of norm < eps = 1e-12 is divided by eps (torch's normalize): its gradient is
        # the rounding noise of a sum that is 0 in exact arithmetic, times 1e12
        for a in args[:2]:
            if isinstance(a, np.ndarray) and a.ndim == 2 and a.size and np.any(
                    np.linalg.norm(a.astype(np.float64), axis=1) < 1e-6):
                return False
    if name in UNIT_TARGETS and len(args) > 1 and isinstance(args[1], np.ndarray):
        t = args[1].astype(np.float64)
        if t.size and not (np.all(t >= 0) and np.all(t <= 1)):
            return False
    if any(a.dtype.kind in "fcV" and a.dtype != np.float64 for a in _arrays((args, kwargs))):
        return False
    return _moderate(args, kwargs)


def _moderate(args, kwargs=None) -> bool:
    """Every number finite and within [1e-30, 1e6] in magnitude (or 0), and no lists (their
    dtype is unknown). The textbook formulas lose accuracy for huge values (e.g. x / T), tiny
    ones make ill-conditioned gradients (through 1 / ||x|| in clip_loss both sides are
    rounding noise times 1e40), and BLAS sums huge or cancelling products in layout order."""
    for a in _arrays((args, kwargs or {})):
        if a.dtype.kind in "fiuV" and a.size:
            m = np.abs(a.astype(np.float64))
            if not np.all(np.isfinite(m)) or m.max() > 1e6 or np.any((m > 0) & (m < 1e-30)):
                return False
    return not any(isinstance(a, list) for a in args)


def call(name, args, kwargs):
    fn = getattr(fl, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


#: Functions that multiply matrices with BLAS.
BLAS_FUNCS = ("linear_cross_entropy", "clip_loss")


#: What the last check_call did (the tests of the harness use it to pick inputs).
LAST = {"reference": False, "non_contiguous": False}


def check_call(name: str, args: tuple, kwargs: dict) -> str:
    LAST["reference"] = False
    LAST["non_contiguous"] = any(not a.flags.c_contiguous for a in _arrays(args))
    snap = _snapshot(args, kwargs)
    grad_out = kwargs.get("grad_out")
    plain_kw = _plain({k: v for k, v in kwargs.items() if k != "grad_out"})
    plain_args = _plain(args)  # (before the call: grad_out may be an input, written in place)
    try:
        out = call(name, args, kwargs)
    except DOCUMENTED as e:
        if not str(e):
            raise Finding(f"{name}: {type(e).__name__} without a message") from e
        _unchanged(name, snap, grad_out, error=True)
        return "rejected"
    _unchanged(name, snap, grad_out, error=False)
    _check_types(name, out)
    got = _numbers(out)
    tol = _dtype_tol((args, kwargs))
    # 2. layouts are invisible (but to BLAS, whose summation order follows the layout: a
    # product of huge or cancelling values differs by its rounding); 3. deterministic
    if name not in BLAS_FUNCS or _moderate(plain_args):
        again = _numbers(call(name, _plain(plain_args), _plain(plain_kw)))
        _close(got, again, tol * 8, f"{name}: C-contiguous copies")
    if grad_out is None:
        twice = _numbers(call(name, args, kwargs))
        for g, t in zip(got, twice):
            if g.tobytes() != t.tobytes():
                raise Finding(f"{name}: a second identical call differs\n{g}\n{t}")
    # 4. the float64 reference
    rfn = getattr(ref, name, None)
    if rfn is not None and _reference_applies(plain_args, plain_kw, name):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                want = _numbers(rfn(*_plain(plain_args), **_plain(plain_kw)))
            except Exception:  # the reference does no validation of its own
                want = None
        if want is not None and len(want) == len(got):
            LAST["reference"] = True
            for g, w in zip(got, want):
                if g.shape != w.shape:
                    raise Finding(f"{name}: shape {g.shape}, reference {w.shape}")
                fin = np.isfinite(w)
                if not np.all(np.isfinite(g[fin])):
                    raise Finding(f"{name}: non-finite where the reference is finite\n{g}\n{w}")
                scale = max(1.0, float(np.max(np.abs(w[fin]), initial=0.0)))
                err = float(np.max(np.abs(g[fin] - w[fin]), initial=0.0))
                if err > 1e-7 * scale:
                    raise Finding(f"{name}: differs from the reference by {err:.3g} "
                                  f"(scale {scale:.3g})\n{g}\n{w}")
    return "ok"


def _unchanged(name, snap, grad_out, error):
    for a, before in snap:
        if grad_out is not None and isinstance(grad_out, np.ndarray) and \
                np.shares_memory(a, grad_out):
            continue
        if not _same(a, before):
            raise Finding(f"{name}: an input was modified ({'error' if error else 'success'} "
                          "path)")


def check_sharded(r: Reader) -> str:
    """cross_entropy_stats over random class shards, reduced in a random order and merged, must
    equal cross_entropy; the per-shard gradients must equal its gradient."""
    shape = shape_of(r, ndim=r.choice((1, 2, 2)), lo=1)
    c = shape[-1]
    dt = r.choice(("float32", "float64"))
    x = cast(values(r, shape, -10, 10), dt)
    t = np.asarray(index_array(r, shape[:-1], c)).astype(np.int64) if r.chance(8) else \
        np.random.default_rng(r.seed()).integers(0, c, shape[:-1])
    cuts = sorted({r.int(0, c) for _ in range(r.int(0, 4))} | {0, c})
    kw_m = {}
    if r.chance(3):
        kw_m["label_smoothing"] = option(r, (0.0, 0.1), BAD_FLOATS)
    if r.chance(3):
        kw_m["z_loss"] = option(r, (0.0, 1e-3), BAD_FLOATS)
    cap = option(r, (None, None, 5.0), BAD_FLOATS)
    red = option(r, REDUCTIONS, BAD_REDUCTIONS)
    try:
        stats = [fl.cross_entropy_stats(in_layout(r, x[..., a:b].copy(), True), t, class_offset=a,
                                        softcap=cap) for a, b in zip(cuts, cuts[1:])]
        while len(stats) > 1 and r.chance(2):
            i = r.int(0, len(stats) - 2)
            stats[i:i + 2] = [fl.reduce_cross_entropy_stats(stats[i], stats[i + 1])]
        merged = fl.merge_cross_entropy_stats(stats, reduction=red, **kw_m)
        want = fl.cross_entropy(x, t, softcap=cap, reduction=red, return_grad=True, **kw_m)
        grads = [fl.cross_entropy_grad_from_stats(x[..., a:b], t, merged, class_offset=a,
                                                  softcap=cap, reduction=red, **kw_m)
                 for a, b in zip(cuts, cuts[1:])]
    except DOCUMENTED as e:
        if not str(e):
            raise Finding(f"stats: {type(e).__name__} without a message") from e
        return "rejected"
    loss = merged.loss if hasattr(merged, "loss") else merged
    xf = np.abs(x[np.isfinite(x)].astype(np.float64))
    if xf.size and xf.max() > 1e300:  # sums of logits near the float64 maximum overflow: the
        return "ok"  # shards' partial sums (+inf and -inf: NaN) and the full row's differ
    tol = 1e-12 if dt == "float64" else 2e-6
    # (the merge gives float64; cross_entropy the logits' dtype, where a huge loss is inf)
    _close(_numbers(cast(loss, np.asarray(want[0]).dtype)), _numbers(want[0]), tol * 8,
           "stats: merged loss")
    _close([np.concatenate([np.asarray(g, np.float64) for g in grads], axis=-1)],
           _numbers(want[1]), tol * 8, "stats: gradient")
    return "ok"


_TMP = None


def check_eval_file(r: Reader) -> str:
    """A .npy pair, valid or with bytes of its header/body overwritten or cut, through
    eval_file; when it succeeds the result must equal cross_entropy of np.load."""
    global _TMP
    if _TMP is None:
        _TMP = tempfile.mkdtemp(prefix="fastloss-fuzz-", dir="/dev/shm"
                                if os.path.isdir("/dev/shm") else None)
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)), lo=0)
    x = cast(values(r, shape, -10, 10), r.choice(("float32", "float64", "float16", "bfloat16")))
    t = np.random.default_rng(r.seed()).integers(0, max(shape[-1] if shape else 1, 1), shape[:-1])
    t = t.astype(r.choice(("int64", "int32", "uint8", "float32")))
    blobs = []
    for a in (x, t):
        import io
        buf = io.BytesIO()
        np.save(buf, a)
        b = bytearray(buf.getvalue())
        if r.chance(3):  # overwrite some bytes
            for _ in range(r.int(1, 4)):
                pos = r.int(0, max(len(b) - 1, 0)) if len(b) < 256 else r.int(0, 255) * 3 % len(b)
                b[pos:pos + 1] = bytes([r.byte()])
        if r.chance(6):  # cut
            b = b[:r.int(0, len(b))] if len(b) < 256 else b[:len(b) - r.int(1, 200)]
        blobs.append(bytes(b))
    paths = []
    for i, b in enumerate(blobs):
        p = os.path.join(_TMP, f"{'lt'[i]}.npy")
        with open(p, "wb") as f:
            f.write(b)
        paths.append(p)
    kw = {"chunk_rows": option(r, (None, 1, 2, 3, 100), (0, -1, 1.5, True))}
    if r.chance(3):
        kw["softcap"] = option(r, (None, 5.0), BAD_FLOATS)
    if r.chance(3):
        kw["n_bytes"] = option(r, (None, 10, 1e6), (0, -1, "x"))
    try:
        res = fl.eval_file(*paths, **kw, _io=r.choice(("mmap", "read")))
    except (*DOCUMENTED, FileNotFoundError) as e:
        if not str(e):
            raise Finding(f"eval_file: {type(e).__name__} without a message") from e
        return "rejected"
    try:
        lx, lt = np.load(paths[0]), np.load(paths[1])
    except Exception as e:
        raise Finding(f"eval_file accepted files np.load rejects ({e})") from e
    if lx.dtype.kind == "V":
        lx = lx.view(_bf16())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per = fl.cross_entropy(lx, lt, reduction="none", softcap=kw.get("softcap"))
    want = np.sum(per, dtype=np.float64)  # (as eval_file sums: in float64)
    _close([np.float64(res["total_loss"])], [np.float64(want)], 1e-5, "eval_file total")
    return "ok"


def one_input(data: bytes) -> str:
    """Decode one test case from ``data`` and check it (see the module docstring)."""
    r = Reader(data)
    name, build = BUILDERS[r.byte() % len(BUILDERS)]
    if name == "sharded_cross_entropy":
        return check_sharded(r)
    if name == "eval_file":
        return check_eval_file(r)
    fname, args, kwargs = build(r)
    return check_call(fname, args, kwargs)


def describe(data: bytes) -> str:
    """The call that ``data`` decodes to, for reports."""
    r = Reader(data)
    name, build = BUILDERS[r.byte() % len(BUILDERS)]
    if build is None:
        return name
    fname, args, kwargs = build(r)

    def d(o):
        if isinstance(o, np.ndarray):
            return f"array(shape={o.shape}, dtype={o.dtype}, strides={o.strides})"
        return repr(o)
    return f"{fname}({', '.join(map(d, args))}, " + ", ".join(
        f"{k}={d(v)}" for k, v in kwargs.items()) + ")"


# Issue 16: cosine similarity / distance, NT-Xent, Dice / Tversky / generalized Dice.
def b_cosine(r: Reader, name):
    shape = shape_of(r, ndim=r.choice((1, 2, 2, 3)))
    k = r.int(0, 5)
    if k == 0:  # some axes of x2 set to 1 (broadcast)
        shape2 = tuple(1 if r.chance(2) else n for n in shape)
    elif k == 1:  # a trailing suffix
        shape2 = shape[r.int(0, len(shape)):]
    elif k == 2 and shape:  # shapes that do not broadcast
        shape2 = shape[:-1] + (shape[-1] + 2,)
    else:
        shape2 = shape
    kw: dict = {"return_grad": r.chance(2)}
    if len(shape) and r.chance(2):
        kw["axis"] = pick_axis(r, len(shape))
    if r.chance(3):
        kw["eps"] = option(r, (1e-8, 0.0, 1e-3), BAD_FLOATS)
    if name == "cosine_distance":
        kw["reduction"] = option(r, REDUCTIONS, BAD_REDUCTIONS)
    return name, (float_array(r, shape, -3, 3), float_array(r, shape2, -3, 3)), kw


def b_ntxent(r: Reader):
    n, d = r.choice(SIZES[:12]), r.choice(SIZES[:8])
    shape = (n, d) if not r.chance(12) else r.choice(((d,), (n, d, 2)))
    x = float_array(r, shape, -3, 3)
    g = np.random.default_rng(r.seed())
    labels: Any = g.integers(0, r.int(1, 4), size=n if not r.chance(16) else n + 1)
    if r.chance(16):
        labels = labels.astype(np.float64)
    kw: dict = {"return_grad": r.chance(2)}
    if r.chance(2):
        kw["temperature"] = option(r, (0.07, 1.0, 1e-3), BAD_FLOATS + (0.0,))
    return "ntxent_loss", (x, in_layout(r, labels)), kw


def b_overlap(r: Reader, name):
    n, c = r.choice(SIZES[:8]), r.choice((1, 1, 2, 2, 3, 4, 5))
    spatial = tuple(r.choice(SIZES[:16]) for _ in range(r.int(0, 2)))
    last = r.chance(3)
    shape = (n,) + spatial + (c,) if last else (n, c) + spatial
    while math.prod(shape) > MAX_ELEMS:
        shape = shape[:-1]
    axis = len(shape) - 1 if last else 1
    if len(shape) < 2:  # (too small for a class axis: a documented error)
        axis = 1
    kw: dict = {"axis": axis if not r.chance(16) else pick_axis(r, len(shape))}
    from_logits = r.chance(3) or not r.chance(2)
    x = float_array(r, shape, -6, 6) if from_logits else float_array(r, shape, 0, 1)
    kw["from_logits"] = from_logits if not r.chance(24) else r.choice((1, "yes", None))
    no_class = shrink_shape(shape, axis) if len(shape) >= 2 else shape
    k = r.int(0, 3)
    if k == 0:
        t: Any = index_array(r, no_class, c, 2**70)  # (no ignore_index entries)
    elif k == 1:
        t = float_array(r, shape, 0, 1)
    elif k == 2:
        g = np.random.default_rng(r.seed())
        t = in_layout(r, np.moveaxis(np.eye(max(c, 1))[g.integers(0, max(c, 1), no_class)],
                                     -1, axis % max(len(shape), 1)) if len(shape) >= 2 else
                      np.zeros(shape))
    else:  # a wrong shape
        t = np.zeros(shape[::-1] + (2,))
    if r.chance(3):
        kw["smooth"] = option(r, (1.0, 0.5, 0.0), BAD_FLOATS)
    if name == "tversky_loss" and r.chance(2):
        kw["alpha"] = option(r, (0.5, 0.3, 0.0, 1.0), BAD_FLOATS)
        kw["beta"] = option(r, (0.5, 0.7, 2.0), BAD_FLOATS)
    if name == "dice_loss" and r.chance(3):
        kw["class_weight"] = float_array(r, (c if not r.chance(12) else c + 1,), 0, 2)
    kw["reduction"] = option(r, REDUCTIONS, BAD_REDUCTIONS)
    kw["return_grad"] = r.chance(2)
    _grad_out(r, x, kw)
    return name, (x, t), kw


_reference_applies_before_issue16 = _reference_applies


def _reference_applies(args, kwargs, name=""):  # noqa: F811 - extends the rules above
    if name in ("cosine_similarity", "cosine_distance") and kwargs.get("return_grad"):
        # |d cos / d x2| ~ 1 / |x2|, and summed over broadcast axes its terms cancel: for a
        # vector of norm < 1e-3 both sides are rounding noise times 1 / |x2| (found by the
        # fuzzer: a broadcast scalar x2 = 8e-26, whose true gradient is 0)
        try:
            a, b = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in args[:2]))
            ax = kwargs.get("axis", -1)
            for v in (a, b):
                if v.size and np.min(np.sqrt(np.sum(v * v, axis=ax))) < 1e-3:
                    return False
        except Exception:  # (shapes or axis the call rejects: nothing to compare)
            return False
    return _reference_applies_before_issue16(args, kwargs, name)


BUILDERS += [
    ("cosine_similarity", lambda r: b_cosine(r, "cosine_similarity")),
    ("cosine_distance", lambda r: b_cosine(r, "cosine_distance")),
    ("ntxent_loss", b_ntxent),
    ("dice_loss", lambda r: b_overlap(r, "dice_loss")),
    ("tversky_loss", lambda r: b_overlap(r, "tversky_loss")),
    ("generalized_dice_loss", lambda r: b_overlap(r, "generalized_dice_loss")),
]
# (end of issue 16)


__all__ = ["one_input", "describe", "Finding", "BUILDERS", "LAST"]
