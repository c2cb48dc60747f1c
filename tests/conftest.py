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


REDUCTIONS = ("mean", "sum", "none")


# --- class-axis data (cross_entropy and its relatives) ----------------------------------------


def logits_of(rng, shape, dtype=np.float64, scale=3.0):
    return rng.normal(0.0, scale, size=shape).astype(dtype)


def index_target(rng, shape, axis, ignore_index=None, frac_ignored=0.25):
    """Random class indices for logits of ``shape`` with class ``axis``; a fraction of them
    set to ``ignore_index`` (the first row always, the last row never, when there are two
    rows or more: at least one row is ignored and one counts)."""
    axis = axis % len(shape)
    C = shape[axis]
    row_shape = shape[:axis] + shape[axis + 1 :]
    t = rng.integers(0, C, size=row_shape)
    if ignore_index is not None and t.size > 1:
        flat = t.reshape(-1)
        mask = rng.random(flat.size) < frac_ignored
        mask[0] = True
        mask[-1] = False  # keep at least one row that counts
        flat[mask] = ignore_index
    return t


def prob_target(rng, shape, axis, dtype=np.float64):
    """Random class probabilities (rows of a Dirichlet) with the class axis at ``axis``."""
    axis = axis % len(shape)
    moved = shape[:axis] + shape[axis + 1 :] + (shape[axis],)
    p = rng.dirichlet(np.ones(shape[axis]), size=moved[:-1] or None)
    return np.moveaxis(p.reshape(moved), -1, axis).astype(dtype)


def torch_case_inputs(rng, shape, axis, kind, kw):
    """Logits, target and options of a cross-entropy comparison case: class indices (with
    ``kw``'s ``ignore_index``) for ``kind == "index"``, else probabilities; a ``"w"`` weight
    becomes random class weights."""
    x = logits_of(rng, shape)
    if kind == "index":
        t = index_target(rng, shape, axis, ignore_index=kw.get("ignore_index"))
    else:
        t = prob_target(rng, shape, axis)
    kw = dict(kw)
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, size=shape[axis])
    return x, t, kw


def fd_case_inputs(rng, shape, axis, kind, kw):
    """Logits (scale 1.5) and target of a finite-difference case: class indices (the first
    row set to ``kw``'s ``ignore_index`` when it has one) for ``kind == "index"``, else
    probabilities."""
    x = logits_of(rng, shape, scale=1.5)
    if kind == "index":
        t = index_target(rng, shape, axis)
        if kw.get("ignore_index") is not None:
            t.reshape(-1)[0] = kw["ignore_index"]
    else:
        t = prob_target(rng, shape, axis)
    return x, t


def assert_grad_matches_central_diff(f, x, t, **kw):
    """The gradient of ``f(x, t, return_grad=True, **kw)`` against central differences of
    ``sum(f(x, t, **kw))``; returns the gradient."""

    def total(v):
        return np.sum(f(v, t, **kw))

    _, grad = f(x, t, return_grad=True, **kw)
    np.testing.assert_allclose(grad, central_diff(total, x), rtol=1e-6, atol=1e-8)
    return grad


# --- every instruction set ------------------------------------------------------------------
# The correctness suites (test_softmax.py, test_cross_entropy.py) run once per instruction set
# the machine supports (AVX-512, AVX2, baseline on a recent x86-64), switching the dispatched
# kernels at run time, so every compiled path is checked against the reference.
from fastloss import _core  # noqa: E402

SUPPORTED_ISAS = [i for i in _core.compiled_isas() if _core.isa_supported(i)]
_EVERY_ISA_MODULES = {"test_softmax", "test_cross_entropy"}


def pytest_generate_tests(metafunc):
    # (not for a test that takes the isa fixture below, which picks the ISA itself: it would
    # run each of its cases once more per ISA with the same kernels)
    if (metafunc.module.__name__.rsplit(".", 1)[-1] in _EVERY_ISA_MODULES
            and "isa" not in metafunc.fixturenames):
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


# --- the peers' own suites (test_scipy_suite.py, test_torch_suite.py) -----------------------
#: Counts the peer suites report at the end of a run: {suite: {what: count}}; the torch suite
#: fills it per sample, the scipy suite is counted from the test outcomes.
SUITE_COUNTS: dict = {}


def pytest_configure(config):
    # marks on scipy's test classes, which test_scipy_suite.py collects
    for mark in ("skip_xp_backends(backend, reason=None, np_only=False, cpu_only=False): "
                 "scipy's array-API skip mark",
                 "xfail_xp_backends(backend, reason=None, np_only=False, cpu_only=False): "
                 "scipy's array-API xfail mark",
                 "array_api_backends: scipy's mark of tests over array-API backends"):
        config.addinivalue_line("markers", mark)


def pytest_terminal_summary(terminalreporter):
    outcomes: dict = {}
    for kind in ("passed", "failed", "skipped", "xfailed", "xpassed", "error"):
        for rep in terminalreporter.stats.get(kind, []):
            nodeid = getattr(rep, "nodeid", "")
            if "test_scipy_suite.py::Test" in nodeid and (rep.when == "call" or kind != "passed"):
                outcomes[nodeid] = kind
    lines = []
    if outcomes:
        counts = {k: sum(v == k for v in outcomes.values()) for k in set(outcomes.values())}
        lines.append(f"scipy's test_logsumexp.py against fastloss: {len(outcomes)} cases compared: "
                     + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for suite, counts in SUITE_COUNTS.items():
        lines.append(f"{suite}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if lines:
        terminalreporter.write_sep("-", "peer suites")
        for line in lines:
            terminalreporter.write_line(line)
