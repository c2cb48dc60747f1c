"""Regression and binary losses on 50M float32 elements: loss and loss+grad (pytest-benchmark).
Bytes moved: loss reads predictions and targets; loss+grad also writes the gradient."""

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
    }


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
@pytest.mark.parametrize("name", list(POINTWISE))
def bench_pointwise(benchmark, record, data, name, grad):
    fname, kw, kind = POINTWISE[name]
    pred = data["probs"] if name == "binary_cross_entropy" else data["x"]
    tgt = data[kind]
    if grad:
        kw = dict(kw, return_grad=True, grad_out=data["grad"])
    benchmark(getattr(fl, fname), pred, tgt, **kw)
    record(pred.nbytes + tgt.nbytes, pred.nbytes if grad else 0)
