"""SciPy's own tests of the softmax family, run against fastloss.

The installed ``scipy/special/tests/test_logsumexp.py`` is loaded as a private module (scipy's
own copy stays untouched) and its ``logsumexp``, ``softmax`` and ``log_softmax`` are replaced
by fastloss's before its test classes are collected here. Its tests take an ``xp`` fixture
(scipy's array-API backend); it is defined below with NumPy as the only namespace, as scipy's
own conftest does when ``SCIPY_ARRAY_API`` is not set, and honours scipy's
``skip_xp_backends`` / ``xfail_xp_backends`` marks for NumPy as scipy's fixture does.

Nothing is skipped silently: every test function of scipy's module is either collected here
or listed in ``LEFT_OUT`` with its reason (``test_every_scipy_test_is_run_or_listed`` checks
that), and a case fastloss deliberately treats differently would be listed in ``DIFFERENT``
(expected to fail, strictly). The terminal summary reports the number of cases compared.
"""

from __future__ import annotations

import importlib.util
import inspect

import numpy as np
import pytest

import fastloss as fl

scipy = pytest.importorskip("scipy")
if tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 17):
    pytest.skip(f"written for scipy 1.17's test_logsumexp.py (its xp fixtures and array-API "
                f"marks); scipy {scipy.__version__} is installed", allow_module_level=True)

_SPEC = importlib.util.find_spec("scipy.special.tests.test_logsumexp")
if _SPEC is None or _SPEC.origin is None:
    pytest.skip("scipy's test modules are not installed with this scipy", allow_module_level=True)


def _load_scipy_suite():
    """A private copy of scipy's test module whose softmax family is fastloss's."""
    spec = importlib.util.spec_from_file_location("_fastloss_scipy_test_logsumexp", _SPEC.origin)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:  # an older scipy whose tests need its own test helpers
        pytest.skip(f"scipy {scipy.__version__}'s test_logsumexp.py cannot be loaded: {exc}",
                    allow_module_level=True)
    for name in ("logsumexp", "softmax", "log_softmax"):
        assert callable(getattr(module, name)), name
        setattr(module, name, getattr(fl, name))
    return module


SCIPY_SUITE = _load_scipy_suite()

#: scipy's tests that are not run, by name, with the reason.
LEFT_OUT = {
    "test_wrap_radians": "tests scipy's private helper scipy.special._logsumexp._wrap_radians, "
                         "not the public functions",
}

#: scipy's test cases fastloss deliberately answers differently (node names without the
#: module), with the reason; each is expected to fail (strict xfail), so a change shows.
DIFFERENT: dict[str, str] = {}

# scipy's test classes, collected as if they were written here
TestLogSumExp = SCIPY_SUITE.TestLogSumExp
TestSoftmax = SCIPY_SUITE.TestSoftmax
TestLogSoftmax = SCIPY_SUITE.TestLogSoftmax
_EXPORTED = ("TestLogSumExp", "TestSoftmax", "TestLogSoftmax")


@pytest.fixture(params=[pytest.param(np, id="numpy")])
def xp(request):
    """scipy's ``xp`` fixture for the NumPy backend: scipy's array-API wrapper of NumPy."""
    from scipy._lib._array_api import array_namespace

    for kind in ("skip", "xfail"):
        for mark in request.node.iter_markers(f"{kind}_xp_backends"):
            if mark.args == ("numpy",):  # scipy does the same on its NumPy run
                getattr(pytest, kind)(reason=mark.kwargs.get("reason") or
                                      f"scipy marks this test {kind} for NumPy")
    return array_namespace(np.empty(0))


@pytest.fixture
def devices(xp):
    """scipy's ``devices`` fixture for NumPy: every device of the namespace, and None."""
    return list(xp.__array_namespace_info__().devices()) + [None]


@pytest.fixture(autouse=True)
def _deliberate_difference(request):
    name = request.node.nodeid.split("::", 1)[-1]
    if name in DIFFERENT:
        request.applymarker(pytest.mark.xfail(strict=True, reason=DIFFERENT[name]))


def _scipy_test_names() -> set[str]:
    """Module-level test functions and test classes of scipy's module."""
    return {n for n, obj in vars(SCIPY_SUITE).items()
            if n.startswith("test_") and inspect.isfunction(obj)
            or n.startswith("Test") and inspect.isclass(obj)}


def test_every_scipy_test_is_run_or_listed():
    names = _scipy_test_names()
    assert names == set(_EXPORTED) | set(LEFT_OUT), (
        f"not run and not listed: {sorted(names - set(_EXPORTED) - set(LEFT_OUT))}; "
        f"listed but absent: {sorted(set(_EXPORTED) | set(LEFT_OUT) - names)}")
    for cls in _EXPORTED:
        assert getattr(SCIPY_SUITE, cls) is globals()[cls]


def test_the_suite_calls_fastloss():
    # the swapped names are what scipy's tests call (a test that would pass on scipy's own
    # functions proves nothing about fastloss's)
    for name in ("logsumexp", "softmax", "log_softmax"):
        assert getattr(SCIPY_SUITE, name) is getattr(fl, name)
        assert TestLogSumExp.test_logsumexp.__globals__[name] is getattr(fl, name)
    import scipy.special as sp

    assert sp.logsumexp is not fl.logsumexp
