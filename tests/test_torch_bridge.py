"""fastloss.torch: values and gradients against torch.nn.functional (and torch expressions
where torch has no such loss), gradcheck in float64, 16-bit and strided inputs without
copies, the in-place option, errors, the modules, torch.compile / torch.export, and training
loops whose losses follow the same loops with torch.nn.functional step for step."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
flt = pytest.importorskip("fastloss.torch")
_torch_ops = pytest.importorskip("fastloss._torch_ops")

# (torch's own warnings from the reference computations)
pytestmark = [pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss"),
              pytest.mark.filterwarnings("ignore:.*torch.jit.script_method. is deprecated")]

GEN_SEED = 1234


def _gen(seed: int = GEN_SEED):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, dtype=torch.float64, seed=0, scale=1.0):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).mul(scale).to(dtype)


def _classes(shape, n, seed=1, ignore_some=False):
    t = torch.randint(0, n, shape, generator=_gen(seed))
    if ignore_some and t.numel() > 2:
        t.view(-1)[1] = -100
    return t


# --- the cases: (fastloss.torch call, independent torch computation, inputs, which inputs
# are differentiated) -------------------------------------------------------------------------

def _torch_softmax_focal(x, t, gamma=2.0, alpha=None, reduction="mean", ignore_index=-100):
    valid = t != ignore_index
    ts = torch.where(valid, t, 0)
    logp_t = F.log_softmax(x, 1).gather(1, ts.unsqueeze(1)).squeeze(1)
    a = 1.0 if alpha is None else (alpha[ts] if isinstance(alpha, torch.Tensor) else alpha)
    loss = torch.where(valid, -a * (1 - logp_t.exp()) ** gamma * logp_t, 0.0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / valid.sum()


def _torch_sigmoid_focal(x, y, alpha=0.25, gamma=2.0, reduction="mean"):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def _torch_z_softcap(x, t, z_loss, softcap, reduction):
    capped = softcap * torch.tanh(x / softcap)
    valid = t != -100
    row = F.cross_entropy(capped, t, reduction="none") + torch.where(
        valid, z_loss * torch.logsumexp(capped, 1) ** 2, 0.0)
    return {"none": row, "sum": row.sum(), "mean": row.sum() / valid.sum()}[reduction]


def _torch_kl_logits(s, t, temperature, reduction):
    T = temperature
    elem = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                    reduction="none") * T**2
    rows = elem.sum(-1)
    return {"none": rows, "sum": rows.sum(), "batchmean": rows.mean(),
            "mean": elem.mean()}[reduction]


def _ctc_inputs(dtype):
    T, N, C, S = 12, 3, 6, 4
    logits = _randn(T, N, C, dtype=dtype, seed=3)
    targets = torch.randint(1, C, (N, S), generator=_gen(4))
    return [logits, targets, torch.tensor([12, 10, 11]), torch.tensor([4, 3, 2])]


def _cases():
    R = ("mean", "sum", "none")
    c = []
    for red in R:
        c.append((f"cross_entropy-{red}",
                  lambda x, t, w, red=red: flt.cross_entropy(x, t, w, reduction=red,
                                                             label_smoothing=0.1),
                  lambda x, t, w, red=red: F.cross_entropy(x, t, w, reduction=red,
                                                           label_smoothing=0.1),
                  lambda d: [_randn(6, 9, dtype=d, scale=2), _classes((6,), 9, ignore_some=True),
                             torch.rand(9, generator=_gen(2), dtype=torch.float64).to(d) + 0.5],
                  (0,)))
        c.append((f"cross_entropy-NCd-{red}",
                  lambda x, t, red=red: flt.cross_entropy(x, t, reduction=red),
                  lambda x, t, red=red: F.cross_entropy(x, t, reduction=red),
                  lambda d: [_randn(3, 5, 4, dtype=d), _classes((3, 4), 5, ignore_some=True)],
                  (0,)))
        c.append((f"cross_entropy-probs-{red}",
                  lambda x, p, red=red: flt.cross_entropy(x, p, reduction=red),
                  lambda x, p, red=red: F.cross_entropy(x, p, reduction=red),
                  lambda d: [_randn(5, 7, dtype=d), _randn(5, 7, dtype=d, seed=5).softmax(1)],
                  (0,)))
        c.append((f"cross_entropy-zloss-softcap-{red}",
                  lambda x, t, red=red: flt.cross_entropy(x, t, reduction=red, z_loss=1e-2,
                                                          softcap=3.0),
                  lambda x, t, red=red: _torch_z_softcap(x, t, 1e-2, 3.0, red),
                  lambda d: [_randn(6, 8, dtype=d, scale=3), _classes((6,), 8, ignore_some=True)],
                  (0,)))
        c.append((f"nll_loss-{red}",
                  lambda x, t, w, red=red: flt.nll_loss(x, t, w, reduction=red),
                  lambda x, t, w, red=red: F.nll_loss(x, t, w, reduction=red),
                  lambda d: [F.log_softmax(_randn(6, 5, dtype=d), 1),
                             _classes((6,), 5, ignore_some=True),
                             torch.rand(5, generator=_gen(2), dtype=torch.float64).to(d) + 0.5],
                  (0,)))
        c.append((f"softmax_focal_loss-{red}",
                  lambda x, t, a, red=red: flt.softmax_focal_loss(x, t, 1.5, a, reduction=red),
                  lambda x, t, a, red=red: _torch_softmax_focal(x, t, 1.5, a, red),
                  lambda d: [_randn(6, 5, dtype=d), _classes((6,), 5, ignore_some=True),
                             torch.rand(5, generator=_gen(2), dtype=torch.float64).to(d)],
                  (0,)))
        c.append((f"multi_margin_loss-p2-{red}",
                  lambda x, t, w, red=red: flt.multi_margin_loss(x, t, 2, 0.7, w, reduction=red),
                  lambda x, t, w, red=red: F.multi_margin_loss(x, t, 2, 0.7, w, reduction=red),
                  lambda d: [_randn(6, 5, dtype=d), _classes((6,), 5),
                             torch.rand(5, generator=_gen(2), dtype=torch.float64).to(d) + 0.5],
                  (0,)))
        for name in ("mse_loss", "l1_loss"):
            c.append((f"{name}-weighted-{red}",
                      lambda x, y, w, name=name, red=red: getattr(flt, name)(
                          x, y, reduction=red, weight=w),
                      lambda x, y, w, name=name, red=red: getattr(F, name)(
                          x, y, reduction=red, weight=w),
                      lambda d: [_randn(4, 6, dtype=d), _randn(4, 6, dtype=d, seed=7),
                                 torch.rand(4, 6, generator=_gen(8), dtype=torch.float64).to(d)],
                      (0,)))
            c.append((f"{name}-broadcast-{red}",
                      lambda x, y, name=name, red=red: getattr(flt, name)(x, y, reduction=red),
                      lambda x, y, name=name, red=red: getattr(F, name)(
                          *torch.broadcast_tensors(x, y), reduction=red),
                      lambda d: [_randn(4, 1, dtype=d), _randn(4, 6, dtype=d, seed=7)],
                      (0,)))
        c.append((f"huber_loss-{red}",
                  lambda x, y, w, red=red: flt.huber_loss(x, y, red, 0.6, w),
                  lambda x, y, w, red=red: F.huber_loss(x, y, red, 0.6, w),
                  lambda d: [_randn(5, 4, dtype=d), _randn(5, 4, dtype=d, seed=7),
                             torch.rand(5, 4, generator=_gen(8), dtype=torch.float64).to(d)],
                  (0,)))
        c.append((f"smooth_l1_loss-{red}",
                  lambda x, y, red=red: flt.smooth_l1_loss(x, y, reduction=red, beta=0.4),
                  lambda x, y, red=red: F.smooth_l1_loss(x, y, reduction=red, beta=0.4),
                  lambda d: [_randn(5, 4, dtype=d), _randn(5, 4, dtype=d, seed=7)],
                  (0,)))
        c.append((f"binary_cross_entropy-{red}",
                  lambda q, y, w, red=red: flt.binary_cross_entropy(q, y, w, reduction=red),
                  lambda q, y, w, red=red: F.binary_cross_entropy(q, y, w, reduction=red),
                  lambda d: [torch.sigmoid(_randn(5, 4, dtype=d)),
                             torch.rand(5, 4, generator=_gen(7), dtype=torch.float64).to(d),
                             torch.rand(4, generator=_gen(8), dtype=torch.float64).to(d)],
                  (0,)))
        c.append((f"binary_cross_entropy_with_logits-{red}",
                  lambda x, y, w, pw, red=red: flt.binary_cross_entropy_with_logits(
                      x, y, w, reduction=red, pos_weight=pw),
                  lambda x, y, w, pw, red=red: F.binary_cross_entropy_with_logits(
                      x, y, w, reduction=red, pos_weight=pw),
                  lambda d: [_randn(5, 4, dtype=d, scale=3),
                             torch.rand(5, 4, generator=_gen(7), dtype=torch.float64).to(d),
                             torch.rand(5, 1, generator=_gen(8), dtype=torch.float64).to(d),
                             torch.rand(4, generator=_gen(9), dtype=torch.float64).to(d) + 0.5],
                  (0,)))
        c.append((f"sigmoid_focal_loss-{red}",
                  lambda x, y, red=red: flt.sigmoid_focal_loss(x, y, 0.3, 1.5, red),
                  lambda x, y, red=red: _torch_sigmoid_focal(x, y, 0.3, 1.5, red),
                  lambda d: [_randn(5, 4, dtype=d, scale=2),
                             (torch.rand(5, 4, generator=_gen(7)) > 0.5).to(d)],
                  (0,)))
        c.append((f"triplet_margin_loss-swap-{red}",
                  lambda a, p, n, red=red: flt.triplet_margin_loss(a, p, n, 1.5, 3.0, swap=True,
                                                                   reduction=red),
                  lambda a, p, n, red=red: F.triplet_margin_loss(a, p, n, 1.5, 3.0, swap=True,
                                                                 reduction=red),
                  lambda d: [_randn(6, 5, dtype=d), _randn(6, 5, dtype=d, seed=7),
                             _randn(6, 5, dtype=d, seed=8)],
                  (0, 1, 2)))
        c.append((f"ctc_loss-{red}",
                  lambda x, t, il, tl, red=red: flt.ctc_loss(F.log_softmax(x, 2), t, il, tl,
                                                             reduction=red),
                  lambda x, t, il, tl, red=red: F.ctc_loss(F.log_softmax(x, 2), t, il, tl,
                                                           reduction=red),
                  _ctc_inputs, (0,)))
        c.append((f"linear_cross_entropy-{red}",
                  lambda h, w, t, b, red=red: flt.linear_cross_entropy(
                      h, w, t, linear_bias=b, reduction=red, label_smoothing=0.05),
                  lambda h, w, t, b, red=red: F.linear_cross_entropy(
                      h, w, t, linear_bias=b, reduction=red, label_smoothing=0.05),
                  lambda d: [_randn(7, 4, dtype=d), _randn(11, 4, dtype=d, seed=7),
                             _classes((7,), 11, ignore_some=True), _randn(11, dtype=d, seed=8)],
                  (0, 1, 3)))
    for red in R + ("batchmean",):
        c.append((f"kl_div-{red}",
                  lambda x, y, red=red: flt.kl_div(x, y, reduction=red),
                  lambda x, y, red=red: F.kl_div(x, y, reduction=red),
                  lambda d: [F.log_softmax(_randn(4, 6, dtype=d), 1),
                             F.softmax(_randn(4, 6, dtype=d, seed=7), 1)],
                  (0,)))
        c.append((f"kl_div-log_target-{red}",
                  lambda x, y, red=red: flt.kl_div(x, y, reduction=red, log_target=True),
                  lambda x, y, red=red: F.kl_div(x, y, reduction=red, log_target=True),
                  lambda d: [F.log_softmax(_randn(4, 6, dtype=d), 1),
                             F.log_softmax(_randn(4, 6, dtype=d, seed=7), 1)],
                  (0,)))
        c.append((f"kl_div_with_logits-{red}",
                  lambda s, t, red=red: flt.kl_div_with_logits(s, t, temperature=2.0,
                                                               reduction=red),
                  lambda s, t, red=red: _torch_kl_logits(s, t, 2.0, red),
                  lambda d: [_randn(3, 4, 7, dtype=d, scale=2), _randn(3, 4, 7, dtype=d, seed=7)],
                  (0,)))
    # the linear_cross_entropy paths that materialise the logits
    c.append(("linear_cross_entropy-class-weight",
              lambda h, w, t, cw: flt.linear_cross_entropy(h, w, t, weight=cw),
              lambda h, w, t, cw: F.linear_cross_entropy(h, w, t, weight=cw),
              lambda d: [_randn(5, 3, dtype=d), _randn(6, 3, dtype=d, seed=7), _classes((5,), 6),
                         torch.rand(6, generator=_gen(8), dtype=torch.float64).to(d) + 0.5],
              (0, 1)))
    c.append(("linear_cross_entropy-probs",
              lambda h, w, p: flt.linear_cross_entropy(h, w, p),
              lambda h, w, p: F.linear_cross_entropy(h, w, p),
              lambda d: [_randn(5, 3, dtype=d), _randn(6, 3, dtype=d, seed=7),
                         _randn(5, 6, dtype=d, seed=8).softmax(1)],
              (0, 1)))
    c.append(("linear_cross_entropy-multidim-weight",
              lambda h, w, t, b: flt.linear_cross_entropy(h, w, t, linear_bias=b),
              lambda h, w, t, b: F.linear_cross_entropy(h, w, t, linear_bias=b),
              lambda d: [_randn(5, 3, dtype=d), _randn(6, 2, 3, dtype=d, seed=7),
                         _classes((5, 2), 6), _randn(6, 2, dtype=d, seed=8)],
              (0, 1, 3)))
    c.append(("linear_cross_entropy-unbatched",
              lambda h, w, t: flt.linear_cross_entropy(h, w, t),
              lambda h, w, t: F.linear_cross_entropy(h, w, t),
              lambda d: [_randn(3, dtype=d), _randn(6, 3, dtype=d, seed=7), torch.tensor(4)],
              (0, 1)))
    c.append(("cross_entropy-unbatched",
              lambda x, t: flt.cross_entropy(x, t),
              lambda x, t: F.cross_entropy(x, t),
              lambda d: [_randn(6, dtype=d), torch.tensor(2)], (0,)))
    c.append(("cross_entropy-normalizer",
              lambda x, t: flt.cross_entropy(x, t, normalizer=13.0),
              lambda x, t: F.cross_entropy(x, t, reduction="sum") / 13.0,
              lambda d: [_randn(6, 8, dtype=d), _classes((6,), 8, ignore_some=True)], (0,)))
    return c


CASES = {case[0]: case[1:] for case in _cases()}


def _run(fn, args, diff, grad_output_seed=11):
    args = [a.detach().clone().requires_grad_(i in diff) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]
    out = fn(*args)
    go = torch.randn(out.shape, generator=_gen(grad_output_seed), dtype=torch.float64)
    out.backward(go.to(out.dtype))
    return out.detach(), [args[i].grad for i in diff]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_equal_torch(name, dtype):
    fn, ref, make, diff = CASES[name]
    args = make(dtype)
    out, grads = _run(fn, args, diff)
    expected, ref_grads = _run(ref, args, diff)
    assert out.shape == expected.shape
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(out, expected.to(out.dtype), **tol)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == dtype
        torch.testing.assert_close(g, r, **tol)


@pytest.mark.parametrize("name", [n for n in CASES if not n.endswith(("-sum", "batchmean"))])
def test_gradcheck_float64(name):
    fn, _, make, diff = CASES[name]
    args = make(torch.float64)
    leaves = [args[i].detach().clone().requires_grad_() for i in diff]

    def f(*xs):
        full = list(args)
        for i, x in zip(diff, xs):
            full[i] = x
        return fn(*full)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_are_viewed_and_computed_in_float32(dtype):
    pytest.importorskip("ml_dtypes")
    x = _randn(16, 40, dtype=dtype, scale=3)
    t = _classes((16,), 40, ignore_some=True)
    view = _torch_ops.to_numpy(x)
    assert view.__array_interface__["data"][0] == x.data_ptr()  # no copy
    assert view.dtype.name == ("bfloat16" if dtype == torch.bfloat16 else "float16")
    xs = x.clone().requires_grad_()
    loss = flt.cross_entropy(xs, t, label_smoothing=0.1)
    loss.backward()
    x32 = x.float().requires_grad_()
    ref = F.cross_entropy(x32, t, label_smoothing=0.1)
    ref.backward()
    assert loss.dtype == torch.float32 and xs.grad.dtype == dtype
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    # the gradient is rounded once, to the 16-bit type
    torch.testing.assert_close(xs.grad, x32.grad.to(dtype), rtol=0.01, atol=1e-4)


def test_strided_inputs_are_not_copied():
    big = _randn(8, 30, dtype=torch.float32)
    x = big[::2, 1::3]  # (4, 10), both strides unusual
    xt = _randn(10, 4, dtype=torch.float32, seed=3).t()  # Fortran order
    for logits in (x, xt):
        view = _torch_ops.to_numpy(logits)
        assert view.__array_interface__["data"][0] == logits.data_ptr()
        assert view.strides == tuple(s * 4 for s in logits.stride())
        t = _classes((4,), 10)
        a = logits.detach().clone().requires_grad_()  # contiguous copy for the reference
        s = logits.detach().requires_grad_()
        loss = flt.cross_entropy(s, t)
        loss.backward()
        ref = F.cross_entropy(a, t)
        ref.backward()
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(s.grad, a.grad)


def test_no_gradient_is_computed_without_grad_mode(monkeypatch):
    x, t = _randn(4, 5, dtype=torch.float32).requires_grad_(), _classes((4,), 5)
    seen = []
    real = _torch_ops._classification.cross_entropy
    monkeypatch.setattr(_torch_ops._classification, "cross_entropy",
                        lambda *a, **k: seen.append(k["return_grad"]) or real(*a, **k))
    with torch.no_grad():
        loss = flt.cross_entropy(x, t)
    flt.cross_entropy(x.detach(), t)
    assert seen == [False, False] and not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(x.detach(), t))


def test_docstring_examples():
    import doctest

    result = doctest.testmod(flt, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_import_fastloss_imports_no_framework():
    code = ("import sys, fastloss, fastloss.cli; "
            "print(sorted(m for m in ('torch', 'jax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"


def test_unit_grad_output_and_backward_twice():
    """loss.backward() hands the stored gradient on without scaling it; it stays intact for a
    second backward (retain_graph) and accumulates as torch's does."""
    x, t = _randn(5, 7, dtype=torch.float32), _classes((5,), 7)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, ref_loss = flt.cross_entropy(ours, t), F.cross_entropy(ref, t)
    for _ in range(2):
        loss.backward(retain_graph=True)
        ref_loss.backward(retain_graph=True)
        torch.testing.assert_close(ours.grad, ref.grad)
    (2.5 * loss).backward()  # a grad_output that is not 1
    (2.5 * ref_loss).backward()
    torch.testing.assert_close(ours.grad, ref.grad)


# --- eager calls without the dispatcher -------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CASES))
def test_eager_path_is_the_operator_bit_for_bit(monkeypatch, name, dtype):
    # In plain eager mode every call skips the dispatcher (the operator's implementation in
    # an autograd.Function); its values and gradients are those of the operator itself
    fn, _, make, diff = CASES[name]
    args = make(dtype)
    seen = []
    eager_ok = _torch_ops._eager_ok
    monkeypatch.setattr(_torch_ops, "_eager_ok", lambda a: seen.append(eager_ok(a)) or seen[-1])
    out, grads = _run(fn, args, diff)
    assert seen and all(seen)
    monkeypatch.setattr(_torch_ops, "_eager_ok", lambda a: False)  # (torch.ops.fastloss)
    out_op, grads_op = _run(fn, args, diff)
    assert out.dtype == out_op.dtype and torch.equal(out, out_op)
    for g, r in zip(grads, grads_op):
        assert g.dtype == r.dtype and torch.equal(g, r)
    with torch.no_grad():  # (no gradient asked for: the loss alone, the same both ways)
        want = fn(*args)
        monkeypatch.setattr(_torch_ops, "_eager_ok", eager_ok)
        assert torch.equal(fn(*args), want)


def test_eager_path_only_where_nothing_intercepts():
    # the dispatcher wherever something may intercept the call: torch.compile (tested above),
    # a torch.func transform, a dispatch mode (fake tensors), a function mode (a device
    # context), a tensor subclass, a tensor on another device
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class Sub(torch.Tensor):
        pass

    x = torch.randn(4, 5)
    ok = _torch_ops._eager_ok
    assert ok((x, 3, "mean", None)) and ok((torch.nn.Parameter(x),))
    with torch.device("cpu"):
        assert not ok((x,))
    with FakeTensorMode():
        assert not ok((torch.empty(2),))

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Mode():
        assert not ok((x,))
    assert not ok((x.as_subclass(Sub),)) and not ok((torch.empty(2, device="meta"),))
    seen = []
    torch.func.vmap(lambda v: seen.append(ok((v,))) or v)(x)
    assert seen == [False]
    # torch.jit.trace records the operator (not a Python autograd node)
    t = torch.tensor([0, 1, 2, 3])
    traced = torch.jit.trace(lambda a, b: flt.cross_entropy(a, b), (x, t), check_trace=False)
    assert "fastloss::cross_entropy" in str(traced.graph)
    x2 = torch.randn(4, 5)
    assert torch.equal(traced(x2, t), flt.cross_entropy(x2, t))
    # a call in a device context goes through the operator and gives the same numbers
    with torch.device("cpu"):
        a = flt.cross_entropy(x, t, reduction="none")
    assert torch.equal(a, flt.cross_entropy(x, t, reduction="none"))


# --- the in-place option ----------------------------------------------------------------

def _head(seed=0, V=13, D=6, N=9):
    h = _randn(N, D, dtype=torch.float32, seed=seed).requires_grad_()
    W = _randn(V, D, dtype=torch.float32, seed=seed + 1).requires_grad_()
    return h, W, _classes((N,), V, seed=seed + 2, ignore_some=True)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_gradient_over_the_logits(reduction):
    h, W, t = _head()
    logits = h @ W.T
    loss = flt.cross_entropy_inplace(logits, t, reduction=reduction, label_smoothing=0.1)
    go = torch.rand(loss.shape, generator=_gen(3)) + 0.5
    loss.backward(go)
    # the logits' memory now holds the gradient of sum(go * loss), as autograd computed it
    h2, W2, _ = _head()
    logits2 = (h2 @ W2.T).detach().requires_grad_()
    ref = F.cross_entropy(logits2, t, reduction=reduction, label_smoothing=0.1)
    torch.testing.assert_close(loss, ref)
    ref.backward(go)
    torch.testing.assert_close(logits.detach(), logits2.grad)
    torch.testing.assert_close(h.grad, logits2.grad @ W2.detach())
    torch.testing.assert_close(W.grad, logits2.grad.T @ h2.detach())


def test_inplace_refuses_what_autograd_cannot_allow():
    h, W, t = _head()
    leaf = (h @ W.T).detach().requires_grad_()
    with pytest.raises(RuntimeError, match="leaf"):
        flt.cross_entropy_inplace(leaf, t)
    with pytest.raises(RuntimeError, match="overlapping"):
        flt.cross_entropy_inplace((h[:1] @ W.T).expand(9, 13), t)
    # tanh saves its output for backward: autograd notices that it was overwritten
    loss = flt.cross_entropy_inplace(torch.tanh(h @ W.T), t)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    loss = flt.cross_entropy_inplace(h @ W.T, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    # no grad needed: the input is left alone
    logits = (h @ W.T).detach()
    before = logits.clone()
    torch.testing.assert_close(flt.cross_entropy_inplace(logits, t), F.cross_entropy(before, t))
    assert torch.equal(logits, before)


# --- errors -----------------------------------------------------------------------------

def test_errors_name_what_to_do():
    x, t = _randn(4, 5).requires_grad_(), _classes((4,), 5)
    with pytest.raises(RuntimeError, match=r"is on meta.*\.cpu\(\)"):
        flt.cross_entropy(torch.empty(4, 5, device="meta"), t)
    with pytest.raises(RuntimeError, match=r"linear_weight is on meta"):
        flt.linear_cross_entropy(x, torch.empty(5, 5, device="meta"), t)
    with pytest.raises(RuntimeError, match=r"no gradient with respect to weight.*detach"):
        flt.cross_entropy(x, t, torch.rand(5, requires_grad=True, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"no gradient with respect to target"):
        flt.cross_entropy(x, torch.rand(4, 5, dtype=torch.float64, requires_grad=True))
    with pytest.raises(RuntimeError, match=r"no gradient with respect to target"):
        flt.mse_loss(x, torch.rand(4, 5, dtype=torch.float64, requires_grad=True))
    with pytest.raises(RuntimeError, match=r"no gradient with respect to teacher"):
        flt.kl_div_with_logits(x, x)
    with pytest.raises(TypeError, match="floating"):
        flt.cross_entropy(torch.ones(4, 5, dtype=torch.int64), t)
    with pytest.raises(TypeError, match="torch.Tensor"):
        flt.mse_loss(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="reduction"):
        flt.cross_entropy(x, t, reduction="batchmean")
    with pytest.raises(IndexError, match="out of range"):
        flt.cross_entropy(x, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="normalizer"):
        flt.cross_entropy(x, t, reduction="none", normalizer=4.0)
    with pytest.raises(ValueError, match="weight must have input's shape"):
        flt.mse_loss(x, x.detach(), weight=torch.ones(5, dtype=torch.float64))
    # with grad mode off, the targets may require grad (nothing is differentiated)
    with torch.no_grad():
        flt.mse_loss(x, x)


# --- modules ----------------------------------------------------------------------------

MODULES = [
    ("CrossEntropyLoss", dict(weight=torch.rand(5, dtype=torch.float64) + 0.5,
                              label_smoothing=0.2), "class"),
    ("NLLLoss", dict(reduction="sum"), "logprob"),
    ("MSELoss", {}, "pair"), ("L1Loss", dict(reduction="none"), "pair"),
    ("HuberLoss", dict(delta=0.5), "pair"), ("SmoothL1Loss", dict(beta=0.3), "pair"),
    ("BCELoss", {}, "prob"), ("BCEWithLogitsLoss", dict(pos_weight=torch.full((5,), 2.0,
                                                        dtype=torch.float64)), "pair01"),
    ("KLDivLoss", dict(reduction="batchmean", log_target=True), "logprobs"),
    ("MultiMarginLoss", dict(p=2, margin=0.5), "class"),
    ("TripletMarginLoss", dict(margin=2.0, swap=True), "triplet"),
    ("CTCLoss", dict(blank=0, reduction="sum"), "ctc"),
]


def _module_inputs(kind):
    x = _randn(4, 5)
    return {
        "class": [x, _classes((4,), 5)],
        "logprob": [F.log_softmax(x, 1), _classes((4,), 5)],
        "pair": [x, _randn(4, 5, seed=7)],
        "prob": [torch.sigmoid(x), torch.rand(4, 5, generator=_gen(7), dtype=torch.float64)],
        "pair01": [x, torch.rand(4, 5, generator=_gen(7), dtype=torch.float64)],
        "logprobs": [F.log_softmax(x, 1), F.log_softmax(_randn(4, 5, seed=7), 1)],
        "triplet": [x, _randn(4, 5, seed=7), _randn(4, 5, seed=8)],
        "ctc": [F.log_softmax(_ctc_inputs(torch.float64)[0], 2)] + _ctc_inputs(torch.float64)[1:],
    }[kind]


@pytest.mark.parametrize("name, kwargs, kind", MODULES, ids=[m[0] for m in MODULES])
def test_modules_are_torch_modules_with_fastloss_forward(name, kwargs, kind):
    ours, theirs = getattr(flt, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert isinstance(ours, type(theirs))
    args = _module_inputs(kind)
    diff = (0, 1, 2) if kind == "triplet" else (0,)
    out, grads = _run(ours, args, diff)
    ref, ref_grads = _run(theirs, args, diff)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_linear_cross_entropy_module_owns_its_layer():
    torch.manual_seed(0)
    ours = flt.LinearCrossEntropyLoss(6, 11, bias=True, dtype=torch.float64)
    theirs = torch.nn.LinearCrossEntropyLoss(6, 11, bias=True, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    args = [_randn(7, 6), _classes((7,), 11, ignore_some=True)]
    out, (g,) = _run(ours, args, (0,))
    ref, (rg,) = _run(theirs, args, (0,))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, rg)
    torch.testing.assert_close(ours.linear.weight.grad, theirs.linear.weight.grad)
    torch.testing.assert_close(ours.linear.bias.grad, theirs.linear.bias.grad)


def test_cross_entropy_module_options():
    x, t = _randn(6, 8, scale=3), _classes((6,), 8)
    m = flt.CrossEntropyLoss(reduction="sum", z_loss=1e-2, softcap=3.0)
    torch.testing.assert_close(m(x, t), _torch_z_softcap(x, t, 1e-2, 3.0, "sum"))
    m = flt.CrossEntropyLoss(normalizer=5)
    torch.testing.assert_close(m(x, t), F.cross_entropy(x, t, reduction="sum") / 5)


# --- torch.compile, torch.export, opcheck -----------------------------------------------

class _TwoHeads(torch.nn.Module):
    """A model trained with four fastloss losses at once: cross-entropy of a classifier's
    logits, the fused output layer, a regression head, and the in-place cross-entropy."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 10)
        self.reg = torch.nn.Linear(16, 1)

    def forward(self, x, y, r, losses):
        h = self.body(x)
        ce, lce, mse, ce_inplace = losses
        return (ce(self.head(h), y) + lce(h, self.head.weight, y, linear_bias=self.head.bias)
                + mse(self.reg(h).squeeze(1), r) + ce_inplace(self.head(2 * h), y))


def _two_head_step(model, losses, compiled=False):
    x = _randn(12, 8, dtype=torch.float32, seed=20)
    y, r = _classes((12,), 10, seed=21), _randn(12, dtype=torch.float32, seed=22)
    fn = torch.compile(model, fullgraph=True) if compiled else model
    loss = fn(x, y, r, losses)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_torch_compile_fullgraph_matches_eager_and_torch():
    torch.manual_seed(0)
    model = _TwoHeads()
    ref_model = copy.deepcopy(model)
    ours = (lambda x, t: flt.cross_entropy(x, t, label_smoothing=0.1),
            flt.linear_cross_entropy, flt.mse_loss, flt.cross_entropy_inplace)
    theirs = (lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
              F.linear_cross_entropy, F.mse_loss, F.cross_entropy)
    torch._dynamo.reset()
    loss, grads = _two_head_step(model, ours, compiled=True)
    ref, ref_grads = _two_head_step(ref_model, theirs)
    torch.testing.assert_close(loss, ref)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg)


def test_torch_export_records_the_fastloss_ops():
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 7)

        def forward(self, h, t):
            return flt.cross_entropy(self.lin(h), t, z_loss=1e-3)

    torch.manual_seed(0)
    m = Head()
    h, t = _randn(5, 4, dtype=torch.float32), _classes((5,), 7)
    ep = torch.export.export(m, (h, t))
    assert "torch.ops.fastloss.cross_entropy" in ep.graph_module.code
    ref = F.cross_entropy(m.lin(h), t) + 1e-3 * (torch.logsumexp(m.lin(h), 1) ** 2).mean()
    torch.testing.assert_close(ep.module()(h, t), ref)


@pytest.mark.parametrize("op, args", [
    ("cross_entropy", lambda: (_randn(4, 6), _classes((4,), 6), None, -100, "none", 0.1, 0.0,
                               None, None, False, False, True)),
    ("cross_entropy", lambda: (_randn(4, 6), _classes((4,), 6), None, -100, "mean", 0.0, 0.0,
                               2.0, None, True, True, True)),
    ("triplet_margin_loss", lambda: (_randn(4, 3), _randn(4, 3, seed=2), _randn(4, 3, seed=3),
                                     1.0, 2.0, 1e-6, False, "mean", True)),
    ("linear_cross_entropy", lambda: (_randn(4, 3), _randn(6, 3, seed=2), _classes((4,), 6),
                                      _randn(6, seed=3), -100, "sum", 0.0, True)),
    ("linear_cross_entropy", lambda: (_randn(4, 3), _randn(6, 3, seed=2), _classes((4,), 6),
                                      None, -100, "mean", 0.1, True)),
    ("kl_div_with_logits", lambda: (_randn(3, 5), _randn(3, 5, seed=2).detach(), 2.0, "none",
                                    True)),
])
def test_opcheck(op, args):
    """torch.library.opcheck: schema, fake implementation and autograd registration agree
    with what the operator does."""
    a = [x.requires_grad_() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
         for x in args()]
    torch.library.opcheck(getattr(torch.ops.fastloss, op).default, tuple(a),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


# --- training loops ---------------------------------------------------------------------

def _train(model, loss_fn, batches, steps=20, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        inputs, targets = batches[step % len(batches)]
        opt.zero_grad()
        loss = loss_fn(model, inputs, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_mlp_classifier_training_matches_torch():
    g = _gen(5)
    X = torch.randn(4, 64, 20, generator=g)
    Y = torch.randint(0, 10, (4, 64), generator=g)
    batches = list(zip(X, Y))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    ours = _train(copy.deepcopy(model), lambda m, x, y: flt.CrossEntropyLoss()(m(x), y), batches)
    ref = _train(copy.deepcopy(model), lambda m, x, y: F.cross_entropy(m(x), y), batches)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert ref[-1] < ref[0]  # (it learns: the comparison is not between two constants)


class _TinyCausalLM(torch.nn.Module):
    def __init__(self, vocab=50, d=32):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.block = torch.nn.TransformerEncoderLayer(d, 2, 64, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(d, vocab)

    def hidden(self, tokens):
        n = tokens.shape[1]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(n)
        return self.block(self.embed(tokens), src_mask=mask, is_causal=True)


def _lm_loss(kind):
    def loss(m, tokens, _):
        h = m.hidden(tokens)[:, :-1]
        targets = tokens[:, 1:].reshape(-1)
        flat = h.reshape(-1, h.shape[-1])
        if kind == "linear":
            return flt.linear_cross_entropy(flat, m.head.weight, targets,
                                            linear_bias=m.head.bias)
        logits = m.head(flat)
        if kind == "inplace":
            return flt.cross_entropy_inplace(logits, targets)
        return (flt.cross_entropy if kind == "fastloss" else F.cross_entropy)(logits, targets)
    return loss


def test_tiny_causal_lm_training_matches_torch():
    g = _gen(6)
    tokens = torch.randint(0, 50, (3, 8, 16), generator=g)
    batches = [(t, None) for t in tokens]
    torch.manual_seed(0)
    model = _TinyCausalLM()
    runs = {kind: _train(copy.deepcopy(model), _lm_loss(kind), batches, lr=0.02)
            for kind in ("torch", "inplace", "linear")}  # (plain cross_entropy: the MLP test)
    for kind in ("inplace", "linear"):
        np.testing.assert_allclose(runs[kind], runs["torch"], rtol=1e-4, err_msg=kind)
    assert runs["torch"][-1] < runs["torch"][0] - 0.1
    assert math.isfinite(runs["torch"][-1])


# --- return_lse / return_token_accuracy (issue 15) --------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_statistics(reduction):
    x = _randn(4, 9, 3, scale=3.0).requires_grad_()  # (N, C, d1): class dim 1
    t = _classes((4, 3), 9, ignore_some=True)
    r = flt.cross_entropy(x, t, reduction=reduction, return_lse=True,
                          return_token_accuracy=True)
    assert r.grad is None
    lse = torch.logsumexp(x.detach(), dim=1)
    torch.testing.assert_close(r.lse, lse, rtol=1e-13, atol=1e-13)
    hit = ((x.detach().argmax(dim=1) == t) & (t != -100)).double()
    want = {"none": hit, "sum": hit.sum(), "mean": hit.sum() / (t != -100).sum()}[reduction]
    torch.testing.assert_close(r.token_accuracy, want)
    assert not r.lse.requires_grad and not r.token_accuracy.requires_grad
    ref = F.cross_entropy(x, t, reduction=reduction)
    torch.testing.assert_close(r.loss, ref)
    (g,) = torch.autograd.grad(r.loss.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_cross_entropy_statistics_compile():
    x, t = _randn(6, 5, scale=2.0), _classes((6,), 5)
    fn = torch.compile(lambda a, b: flt.cross_entropy(a, b, return_lse=True,
                                                      return_token_accuracy=True),
                       fullgraph=True, backend="eager")
    r = fn(x, t)
    torch.testing.assert_close(r.lse, torch.logsumexp(x, 1))
    torch.testing.assert_close(r.token_accuracy, (x.argmax(1) == t).double().mean())
