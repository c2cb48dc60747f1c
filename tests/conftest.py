"""Shared fixtures and helpers of the fastloss test suite.

Every test compares fastloss against an independent computation: ``fastloss.reference``
(plain NumPy float64), ``scipy.special``, PyTorch when it is installed, central finite
differences, or values worked out by hand.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest

SEED = 20240502


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, fresh for every test (tests are reproducible and
    independent of their order)."""
    return np.random.default_rng(SEED)


def central_diff(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Gradient of the scalar function ``f`` at ``x`` by central differences in float64.

    ``(f(x + h e_i) - f(x - h e_i)) / 2h`` for every element i; the truncation error is
    O(h^2 f''') and the rounding error O(eps |f| / h), about 1e-9 for h = 1e-6 and O(1) losses.
    """
    x = np.array(x, dtype=np.float64)  # a private C-order copy that we perturb
    g = np.empty_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = float(f(x))
        flat[i] = old - h
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def _strided(a: np.ndarray) -> np.ndarray:
    """A view equal to ``a`` whose every axis has a step of 2 in a larger buffer."""
    big = np.zeros(tuple(2 * n + 1 for n in a.shape), dtype=a.dtype)
    view = big[tuple(slice(1, 2 * n + 1, 2) for n in a.shape)]
    view[...] = a
    return view


def _reversed(a: np.ndarray, axis: int) -> np.ndarray:
    """A view equal to ``a`` with a negative stride on ``axis``."""
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(None, None, -1)
    idx = tuple(idx)
    return np.ascontiguousarray(a[idx])[idx]


def non_c_layouts(a: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Views with the values of ``a`` but other memory layouts.

    Yields ``(name, view)``: Fortran order, a strided slice of a larger array (step 2 on every
    axis), negative strides on the first and on the last axis, and a transposed copy seen
    through ``.T`` (C order reversed). Each view is checked to really not be C-contiguous
    (unless ``a`` is too small for that to be possible) and to equal ``a``.
    """
    a = np.asarray(a)
    views = [
        ("fortran", np.asfortranarray(a)),
        ("strided", _strided(a)),
        ("neg_first", _reversed(a, 0)),
        ("neg_last", _reversed(a, -1)),
        ("transposed", np.ascontiguousarray(a.T).T),
    ]
    for name, v in views:
        assert v.shape == a.shape and v.dtype == a.dtype
        np.testing.assert_array_equal(v, a)
        if name == "strided" or (a.ndim >= 2 and min(a.shape) > 1 and name != "neg_last"):
            assert not v.flags.c_contiguous, name
        yield name, v


def layout(a: np.ndarray, name: str) -> np.ndarray:
    """The view of ``a`` named ``name`` by :func:`non_c_layouts` (or ``"c"``: a C copy)."""
    if name == "c":
        return np.ascontiguousarray(a)
    return dict(non_c_layouts(a))[name]


LAYOUTS = ("c", "fortran", "strided", "neg_first", "neg_last", "transposed")


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a``."""
    a = np.array(a)
    a.flags.writeable = False
    return a


# --- every instruction set ------------------------------------------------------------------
# The correctness suites (test_softmax.py, test_cross_entropy.py) run once per instruction set
# the machine supports (AVX-512, AVX2, baseline on a recent x86-64), switching the dispatched
# kernels at run time, so every compiled path is checked against the reference.
from fastloss import _core  # noqa: E402

SUPPORTED_ISAS = [i for i in _core.compiled_isas() if _core.isa_supported(i)]
_EVERY_ISA_MODULES = {"test_softmax", "test_cross_entropy"}


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__.rsplit(".", 1)[-1] in _EVERY_ISA_MODULES:
        metafunc.fixturenames.append("every_isa")
        metafunc.parametrize("every_isa", SUPPORTED_ISAS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def every_isa(request):
    before = _core.active_isa()
    assert _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Run a test once with every instruction set the machine supports."""
    before = _core.active_isa()
    assert _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.fixture
def restore_threads():
    """Put the thread count back as it was, whatever the test did."""
    import fastloss as fl

    before = fl.get_num_threads()
    yield before
    fl.set_num_threads(before)
    assert fl.get_num_threads() == before
