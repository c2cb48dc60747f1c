"""examples/gradient_shapes.py runs and its numbers are right (checked independently)."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastloss as fl

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "gradient_shapes.py"


@pytest.fixture(scope="module")
def gs():
    spec = importlib.util.spec_from_file_location("gradient_shapes", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Y = np.array([1.0, 0.0, 0.0])
P = np.array([0.2, 0.5, 0.3])
PCS = [0.5, 0.1, 0.01, 0.001, 1e-4]


def test_ce_grad_is_p_minus_y(gs):
    g = gs.ce_grad(P, Y)
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, [-0.8, 0.5, 0.3], rtol=0, atol=1e-12)


def test_mse_grad_by_hand(gs):
    # g_i = 2 p_i (e_i - sum_j p_j e_j) with e = p - y: J (2e) written out, J = diag(p) - p p^T
    e = P - Y
    expected = 2.0 * P * (e - np.dot(P, e))
    np.testing.assert_allclose(expected, [-0.392, 0.32, 0.072], rtol=0, atol=1e-15)
    np.testing.assert_allclose(gs.mse_softmax_grad(P, Y), expected, rtol=0, atol=1e-12)


def test_mse_grad_by_finite_differences(gs):
    z0 = np.log(P)
    f = lambda z: float(np.sum((fl.softmax(z) - Y) ** 2))  # noqa: E731
    h = 1e-6
    fd = np.array([(f(z0 + h * d) - f(z0 - h * d)) / (2 * h) for d in np.eye(3)])
    np.testing.assert_allclose(gs.mse_softmax_grad(P, Y), fd, rtol=0, atol=1e-8)
    # the diagonal of J alone would give 2 p (1 - p) e, which is a different (wrong) answer
    assert not np.allclose(2 * P * (1 - P) * (P - Y), fd, atol=1e-3)


def test_sweep_mse_vanishes_ce_tends_to_minus_one(gs):
    rows = gs.sweep(PCS)
    assert [r[0] for r in rows] == PCS
    ce = np.array([r[1] for r in rows])
    mse = np.array([r[2] for r in rows])
    np.testing.assert_allclose(ce, np.array(PCS) - 1.0, rtol=0, atol=1e-12)
    assert abs(ce[-1] + 1.0) < 1e-3
    assert np.all(mse < 0)
    assert np.all(np.diff(np.abs(mse)) < 0)  # monotone shrinking
    assert abs(mse[-1]) < 1e-3
    # closed form for 3 classes, other mass split evenly: q = (1 - p_c) / 2
    pc = np.array(PCS)
    q = (1 - pc) / 2
    expected = 2 * pc * ((pc - 1) - (pc * (pc - 1) + 2 * q * q))
    np.testing.assert_allclose(mse, expected, rtol=1e-12, atol=0)


def test_main_prints_key_numbers(gs, capsys):
    gs.main()
    out = capsys.readouterr().out
    assert "SUM of squared errors" in out
    for s in ["-0.8000", "+0.5000", "+0.3000", "-0.3920", "+0.3200", "+0.0720"]:
        assert s in out
    for s in ["-0.999900", "-0.00029994", "-0.375", "-0.243"]:
        assert s in out


def test_runs_as_script():
    res = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "-0.8000" in res.stdout
