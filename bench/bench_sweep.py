"""The class-count sweep of ``fastloss bench --sweep`` under pytest-benchmark: cross-entropy loss
and loss+grad (class-index targets, float32) at 2 to 128,256 classes with the same number of
logits per point, for fastloss, NumPy, PyTorch and JAX (the last two when installed).

2^24 logits per point (64 MB, beyond the last-level cache) keep a run to a few minutes where
the CLI's 200M take longer; FASTLOSS_SWEEP_ELEMENTS sets another size. Run:
``pytest bench/bench_sweep.py [-k fastloss] [--benchmark-json out.json]``."""

import os

import numpy as np
import pytest

import fastloss as fl
from fastloss.benchmark_sweep import CLASSES, sweep_impls, sweep_inputs

ELEMENTS = int(os.environ.get("FASTLOSS_SWEEP_ELEMENTS", 1 << 24))


@pytest.fixture(scope="module")
def sweep_points():
    return {c: (x, t) for c, x, t in sweep_inputs(ELEMENTS, CLASSES)}


@pytest.mark.parametrize("case", ["loss", "loss+grad"], ids=["loss", "loss_grad"])
@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("library", ["fastloss", "numpy", "torch", "jax"])
def bench_sweep(benchmark, record, sweep_points, library, classes, case):
    if library in ("torch", "jax"):
        pytest.importorskip(library)
    x, t = sweep_points[classes]
    grad = np.zeros_like(x) if library == "fastloss" and case == "loss+grad" else None
    impls, label = sweep_impls(library, x, t, fl.get_num_threads(), grad_out=grad)
    fn = impls[case]
    fn()  # untimed: JAX compiles here, PyTorch and NumPy warm their allocators
    benchmark.group = f"sweep {case}, {classes} classes"
    benchmark.extra_info.update(implementation=label, classes=classes, rows=x.shape[0])
    if library == "fastloss":
        benchmark(fn)
    else:  # (up to seconds a call on narrow rows: a few rounds are enough)
        benchmark.pedantic(fn, rounds=3)
    record(x.nbytes + t.nbytes, x.nbytes if case == "loss+grad" else 0)
