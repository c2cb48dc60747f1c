"""The pointwise losses of `fastloss bench --pointwise` on 50M float32 elements: loss and
loss+grad (pytest-benchmark). Bytes moved: loss reads every operand; loss+grad also writes the
gradients (two for the two-input losses, into preallocated arrays)."""

import numpy as np
import pytest

import fastloss as fl
from fastloss.benchmark import POINTWISE

N = 50_000_000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N, dtype=np.float32)
    return {
        "x": x,
        "probs": (1 / (1 + np.exp(-x))).astype(np.float32),
        "real": rng.standard_normal(N, dtype=np.float32),
        "binary": (rng.random(N, dtype=np.float32) > 0.5).astype(np.float32),
        "grad": np.zeros_like(x),
        "grad2": np.zeros_like(x),
    }


def _operands(data, name, kind):
    """The arguments of a POINTWISE case (the target kinds of fastloss.benchmark.POINTWISE)
    and the number of gradients it returns."""
    pred = data["probs"] if name == "binary_cross_entropy" else data["x"]
    if kind in ("real", "binary"):
        return (pred, data[kind]), 1
    if "signs" not in data:
        data["signs"] = data["binary"] * np.float32(2) - np.float32(1)
    if kind == "signs":
        return (pred, data["signs"]), 1
    if kind == "real+var":
        if "var" not in data:
            data["var"] = np.abs(data["real"]) + np.float32(0.1)
        return (pred, data["real"], data["var"]), 2
    return (pred, data["real"], data["signs"]), 2  # "pair+signs"


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
@pytest.mark.parametrize("name", list(POINTWISE))
def bench_pointwise(benchmark, record, data, name, grad):
    fname, kw, kind = POINTWISE[name]
    args, n_grads = _operands(data, name, kind)
    if grad:
        out = data["grad"] if n_grads == 1 else (data["grad"], data["grad2"])
        kw = dict(kw, return_grad=True, grad_out=out)
    benchmark(getattr(fl, fname), *args, **kw)
    record(sum(a.nbytes for a in args), n_grads * args[0].nbytes if grad else 0)
