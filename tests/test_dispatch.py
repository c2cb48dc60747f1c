"""Run-time ISA dispatch: every kernel under every instruction set the machine supports agrees
with the float64 reference; FASTLOSS_ISA caps the choice; show_config reports it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss as fl
from fastloss import _core, reference

from conftest import SUPPORTED_ISAS as SUPPORTED  # noqa: E402  (the isa fixture: conftest.py)


def _dtypes():
    out = [np.float32, np.float64, np.float16]
    try:
        import ml_dtypes

        out.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return out


# Tolerances against the float64 reference computed on the same (rounded) input values:
# loss relative, gradient absolute per unit of upstream weight. (float64 losses also get an
# absolute 1e-15: for a small loss the reference's log(sum) is less exact than the kernel's
# log1p.)
TOL = {"float64": (1e-13, 1e-14), "float32": (3e-7, 3e-7)}


@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("V", [1, 3, 17, 2049, 50257])
def test_cross_entropy_every_isa(isa, dtype, V):
    rng = np.random.default_rng(V)
    x = rng.normal(0, 3, (6, V)).astype(dtype)
    t = rng.integers(0, V, 6)
    t[1] = -100
    w = rng.random(V) + 0.5
    x64 = x.astype(np.float64)
    name = np.dtype(dtype).name
    for kw in ({}, {"label_smoothing": 0.1}, {"weight": w, "label_smoothing": 0.2}):
        loss, grad = fl.cross_entropy(x, t, reduction="none", return_grad=True, **kw)
        ref_loss, ref_grad = reference.cross_entropy(x64, t, reduction="none", return_grad=True,
                                                     **kw)
        assert grad.dtype == np.dtype(dtype)
        assert loss.dtype == (np.float64 if name == "float64" else np.float32)
        if name in TOL:
            rtol, atol = TOL[name]
            np.testing.assert_allclose(loss, ref_loss, rtol=rtol,
                                       atol=1e-15 if name == "float64" else 1e-30)
            np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=atol * max(1.0, w.max()))
        else:  # 16-bit: the loss is float32-accurate, the gradient is the rounded reference
            np.testing.assert_allclose(loss, ref_loss, rtol=3e-7, atol=1e-30)
            rounded = ref_grad.astype(dtype).astype(np.float64)
            spacing = np.abs(rounded) * (2.0**-7 if name == "bfloat16" else 2.0**-10) + 1e-7
            assert np.all(np.abs(grad.astype(np.float64) - rounded) <= spacing)


@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
def test_probability_targets_every_isa(isa, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (5, 3001)).astype(dtype)
    y = rng.random((5, 3001))
    y /= y.sum(axis=1, keepdims=True)
    loss, grad = fl.cross_entropy(x, y, label_smoothing=0.05, return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), y, label_smoothing=0.05,
                                                 return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6 if np.dtype(dtype).itemsize <= 4
                               else 1e-13)
    tol = 1e-14 if np.dtype(dtype).itemsize == 8 else (1e-7 if np.dtype(dtype).itemsize == 4
                                                       else 1e-3)
    np.testing.assert_allclose(grad.astype(np.float64), ref_grad, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
def test_softmax_family_every_isa(isa, dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 4, (7, 4099)).astype(dtype)
    x64 = x.astype(np.float64)
    wide = np.dtype(dtype).itemsize >= 4
    # float32 softmax values carry two roundings (exp, then the scale): 1e-6 relative.
    rtol = {8: 1e-14, 4: 1e-6, 2: 8e-3}[np.dtype(dtype).itemsize]
    lse = fl.logsumexp(x, axis=1)
    assert lse.dtype == np.dtype(dtype)
    np.testing.assert_allclose(lse.astype(np.float64), reference.logsumexp(x64, axis=1), rtol=rtol)
    sm = fl.softmax(x, axis=1).astype(np.float64)
    np.testing.assert_allclose(sm, reference.softmax(x64, axis=1), rtol=rtol if wide else 8e-3,
                               atol=1e-12 if wide else 1e-6)
    ls = fl.log_softmax(x, axis=1).astype(np.float64)
    np.testing.assert_allclose(ls, reference.log_softmax(x64, axis=1), rtol=rtol,
                               atol=1e-5 if wide else 3e-2)


def test_stability_every_isa(isa):
    V = 50257
    rng = np.random.default_rng(3)
    rows = [np.linspace(-1e4, 1e4, V), np.linspace(1e4, -1e4, V), np.linspace(0, 300, V),
            rng.normal(0, 30, V)]
    masked = rng.normal(0, 3, V)
    masked[::3] = -np.inf
    rows.append(masked)
    x = np.array(rows)
    t = np.array([V - 1, 0, 17, 5, 1])
    for dtype in (np.float64, np.float32):
        xx = x.astype(dtype)
        loss, grad = fl.cross_entropy(xx, t, reduction="none", return_grad=True)
        ref_loss, ref_grad = reference.cross_entropy(xx.astype(np.float64), t, reduction="none",
                                                     return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(loss, ref_loss, rtol=3e-7 if dtype == np.float32 else 1e-13)
        np.testing.assert_allclose(grad, ref_grad, atol=3e-7 if dtype == np.float32 else 1e-14)
        assert np.all(grad[4, ::3] == 0)  # masked classes get exactly zero gradient
    confident = np.array([[0.0, -20.0, -20.0, -20.0]], dtype=np.float32)
    np.testing.assert_allclose(fl.cross_entropy(confident, [0]), 3 * np.exp(-20.0), rtol=1e-6)


@pytest.mark.parametrize("C", [64, 4099])
def test_exp_accuracy_every_isa(isa, C):
    """float32 softmax of rows (0, x_1, ...) with the x_j on a dense grid over [-87, 0]: each
    value is exp(x_j) / s, s the row's float64 sum. The float32 exp of every ISA (polynomial
    or table forms) is within about 1 ulp over the whole normal range; the row sum's float32
    partials (four terms a lane before each float64 flush), the float32 factor 1 / s and the
    product add up to about 1.3 ulp more, so the softmax values are checked to 3e-7 relative
    (2.5 ulp at the bottom of a binade; AVX-512's table exp reached 2.74e-7 here)."""
    x = np.linspace(-87.0, 0.0, 300_000).astype(np.float32)
    rows = x[: x.size // (C - 1) * (C - 1)].reshape(-1, C - 1)
    xx = np.concatenate([np.zeros((rows.shape[0], 1), np.float32), rows], axis=1)
    got = fl.softmax(xx, axis=1).astype(np.float64)
    np.testing.assert_allclose(got, reference.softmax(xx.astype(np.float64), axis=1),
                               rtol=3e-7, atol=0)


def test_isas_agree_with_each_other():
    """Different instruction sets may round differently, but only at the last few bits."""
    rng = np.random.default_rng(4)
    x = rng.normal(0, 3, (16, 50257)).astype(np.float32)
    t = rng.integers(0, 50257, 16)
    before = _core.active_isa()
    results = []
    try:
        for name in SUPPORTED:
            _core.set_isa(name)
            results.append(fl.cross_entropy(x, t, reduction="none", return_grad=True))
    finally:
        _core.set_isa(before)
    for loss, grad in results[1:]:
        np.testing.assert_allclose(loss, results[0][0], rtol=2e-7)
        np.testing.assert_allclose(grad, results[0][1], atol=2e-8)


def test_set_isa_rejects_unknown():
    assert _core.set_isa("no-such-isa") is False
    assert _core.active_isa() in SUPPORTED


def _config_in_subprocess(env_isa):
    env = dict(os.environ)
    env.pop("FASTLOSS_ISA", None)
    if env_isa is not None:
        env["FASTLOSS_ISA"] = env_isa
    code = "import json, fastloss; print(json.dumps(fastloss.__config__))"
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], env=env,
                         capture_output=True, text=True)
    return out


@pytest.mark.parametrize("name", SUPPORTED)
def test_environment_caps_the_isa(name):
    out = _config_in_subprocess(name)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["isa"] == name


def test_default_is_the_best_supported():
    out = _config_in_subprocess(None)
    assert json.loads(out.stdout)["isa"] == SUPPORTED[0]


def test_unknown_environment_value_warns():
    out = _config_in_subprocess("pentium3")
    assert out.returncode != 0 and "FASTLOSS_ISA='pentium3'" in out.stderr


def test_show_config(capsys):
    fl.show_config()
    text = capsys.readouterr().out
    assert f"isa: {_core.active_isa()}" in text
    assert f"threads: {fl.get_num_threads()}" in text
    cfg = fl.__config__
    assert cfg["isa"] == _core.active_isa() and cfg["isas_supported"] == SUPPORTED
