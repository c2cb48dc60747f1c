"""PyTorch's own inputs for every loss fastloss has, compared against fastloss in float64.

The samples are torch's: the OpInfo ``reference_inputs`` (which include the ``sample_inputs``)
of ``torch.testing._internal.common_methods_invocations.op_db``, and the ``module_db`` inputs
of the ``nn.*Loss`` (and softmax) modules of ``torch.testing._internal.common_modules``. Each
sample runs through torch (the functional op, or the module built from its constructor
arguments) and through the fastloss function it maps to (torch's class dim 1 is fastloss's
``axis=1``, torch's ``weight`` of ``linear_cross_entropy`` is ``class_weight``, ...). The
loss values are compared, and the gradients fastloss returns (``return_grad=True``) against
``torch.autograd.grad`` of the summed output for the same inputs (the softmax family has no
gradient in fastloss: values only). Skipped when torch or its testing internals (which need
``expecttest``) are absent.

Nothing is skipped silently: every sample is compared; a sample fastloss deliberately treats
differently is counted under its difference's name (``DIFFERENCES``), and the test checks that
fastloss does what its documentation says there. The terminal summary reports the counts.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import pytest
from conftest import SUITE_COUNTS

import fastloss as fl

torch = pytest.importorskip("torch")
cmi = pytest.importorskip("torch.testing._internal.common_methods_invocations",
                          reason="torch's testing internals are not importable (they need "
                                 "expecttest)")
cm = pytest.importorskip("torch.testing._internal.common_modules")

RTOL, ATOL = 1e-9, 1e-12

# torch's warnings about its own chunking options ("options ignored") are not ours
# (and its announcement about kl_div's "mean")
pytestmark = [pytest.mark.filterwarnings("ignore:linear_cross_entropy:UserWarning"),
              pytest.mark.filterwarnings("ignore:reduction. .mean. divides:UserWarning")]


@pytest.fixture(autouse=True, scope="module")
def _torch_one_thread():
    # the samples are tiny: torch's intra-op threads only wait for each other on a busy machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

#: Deliberate differences: name -> reason. Samples that meet one are counted under its name.
DIFFERENCES = {
    "kl_div_negative_target": (
        "a negative 'probability' target: torch gives NaN losses; fastloss raises ValueError "
        "by default and gives torch's result with negative_target='nan' (compared so)"),
    "logsumexp_0d_keepdim": (
        "a 0-d input with keepdim=True: torch returns a 0-d result, fastloss scipy's (1,) "
        "(scipy.special.logsumexp treats the input as 1-d); the values are compared"),
}


class Call(NamedTuple):
    """A sample mapped to fastloss: ``fn(*args, **kwargs, return_grad=True)`` unless
    ``values_only``; ``wrt`` are the torch tensors whose gradients fastloss returns, in its
    order; ``difference`` names an entry of DIFFERENCES the sample meets."""

    fn: Callable
    args: tuple
    kwargs: dict
    wrt: tuple = ()
    values_only: bool = False
    difference: Optional[str] = None
    default_raises: Optional[type] = None  # what fastloss's default does for a difference
    shape: Optional[tuple] = None  # fastloss's result shape where it differs from torch's


def _np(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return t.detach().numpy()
    if isinstance(t, (list, tuple)) and t and isinstance(t[0], torch.Tensor):
        return type(t)(_np(x) for x in t)
    return t


def _take(kwargs: dict, allowed: dict) -> dict:
    """torch keyword arguments -> fastloss's names; an unknown one fails the test loudly."""
    unknown = set(kwargs) - set(allowed)
    assert not unknown, f"torch sample keyword(s) not mapped to fastloss: {sorted(unknown)}"
    return {allowed[k]: _np(v) for k, v in kwargs.items() if allowed[k] is not None}


def _class_axis(x: torch.Tensor) -> int:
    return 1 if x.dim() >= 2 else 0  # torch: (N, C, d1, ...) or (C,)


# --- functional ops: torch name -> Call ------------------------------------------------------
def _cross_entropy(x, target, **kw):
    kw = _take(kw, {"weight": "weight", "ignore_index": "ignore_index",
                    "reduction": "reduction", "label_smoothing": "label_smoothing"})
    return Call(fl.cross_entropy, (_np(x), _np(target)), dict(axis=_class_axis(x), **kw), (x,))


def _nll_loss(x, target, **kw):
    kw = _take(kw, {"weight": "weight", "ignore_index": "ignore_index",
                    "reduction": "reduction"})
    return Call(fl.nll_loss, (_np(x), _np(target)), dict(axis=_class_axis(x), **kw), (x,))


def _pointwise(fn, extra=()):
    def call(x, target, **kw):
        names = {"reduction": "reduction", **{k: k for k in extra}}
        return Call(fn, (_np(x), _np(target)), _take(kw, names), (x,))
    return call


def _kl_div(x, target, **kw):
    kw = _take(kw, {"reduction": "reduction", "log_target": "log_target"})
    t = _np(target)
    if not kw.get("log_target") and np.any(t < 0):
        return Call(fl.kl_div, (_np(x), t), dict(kw, negative_target="nan"), (x,),
                    difference="kl_div_negative_target", default_raises=ValueError)
    return Call(fl.kl_div, (_np(x), t), kw, (x,))


def _multi_margin(x, target, **kw):
    kw = _take(kw, {"p": "p", "margin": "margin", "weight": "weight",
                    "reduction": "reduction"})
    return Call(fl.multi_margin_loss, (_np(x), _np(target)), kw, (x,))


def _ctc(log_probs, targets, input_lengths, target_lengths, **kw):
    kw = _take(kw, {"blank": "blank", "reduction": "reduction",
                    "zero_infinity": "zero_infinity"})
    args = (_np(log_probs), _np(targets), _np(input_lengths), _np(target_lengths))
    return Call(fl.ctc_loss, args, kw, (log_probs,))


def _triplet(anchor, positive, negative, **kw):
    kw = _take(kw, {"margin": "margin", "p": "p", "eps": "eps", "swap": "swap",
                    "reduction": "reduction"})
    return Call(fl.triplet_margin_loss, (_np(anchor), _np(positive), _np(negative)), kw,
                (anchor, positive, negative))


def _linear_ce(x, linear_weight, target, **kw):
    kw = dict(kw)
    kw.pop("options", None)  # torch's chunking strategy: no effect on the result
    if kw.get("ignore_index", 0) is None:
        kw.pop("ignore_index")  # torch's None is -100, fastloss's default
    bias = kw.get("linear_bias")
    kw = _take(kw, {"linear_bias": "bias", "weight": "class_weight",
                    "reduction": "reduction", "ignore_index": "ignore_index",
                    "label_smoothing": "label_smoothing"})
    wrt = (x, linear_weight) + ((bias,) if bias is not None else ())
    return Call(fl.linear_cross_entropy, (_np(x), _np(linear_weight), _np(target)), kw, wrt)


def _softmax_family(fn):
    def call(x, dim, *rest, **kw):
        kw = dict(kw)
        dtype = kw.pop("dtype", None)
        assert dtype in (None, torch.float64) and not kw, kw
        return Call(fn, (_np(x),), {"axis": dim}, values_only=True)
    return call


def _logsumexp(x, dim, keepdim=False):
    axis = tuple(dim) if isinstance(dim, (list, tuple)) else dim
    call = Call(fl.logsumexp, (_np(x),), {"axis": axis, "keepdims": keepdim}, values_only=True)
    if x.dim() == 0 and keepdim:
        return call._replace(difference="logsumexp_0d_keepdim", shape=(1,))
    return call


OPS = {
    "nn.functional.cross_entropy": _cross_entropy,
    "nn.functional.nll_loss": _nll_loss,
    "nn.functional.mse_loss": _pointwise(fl.mse_loss),
    "nn.functional.l1_loss": _pointwise(fl.l1_loss),
    "nn.functional.huber_loss": _pointwise(fl.huber_loss, ("delta",)),
    "nn.functional.smooth_l1_loss": _pointwise(fl.smooth_l1_loss, ("beta",)),
    "nn.functional.binary_cross_entropy": _pointwise(fl.binary_cross_entropy, ("weight",)),
    "nn.functional.binary_cross_entropy_with_logits":
        _pointwise(fl.binary_cross_entropy_with_logits, ("weight", "pos_weight")),
    "nn.functional.kl_div": _kl_div,
    "nn.functional.multi_margin_loss": _multi_margin,
    "nn.functional.ctc_loss": _ctc,
    "nn.functional.triplet_margin_loss": _triplet,
    "nn.functional.linear_cross_entropy": _linear_ce,
    "softmax": _softmax_family(fl.softmax),
    "log_softmax": _softmax_family(fl.log_softmax),
    "logsumexp": _logsumexp,
}


# --- modules: class name -> Call from the module instance and its forward arguments ---------
def _module_pointwise(fn, extra=()):
    def call(m, x, target):
        kw = {"reduction": m.reduction, **{k: getattr(m, k) for k in extra}}
        return Call(fn, (_np(x), _np(target)), {k: _np(v) for k, v in kw.items()
                                                if v is not None}, (x,))
    return call


def _module_kl(m, x, target):
    return _kl_div(x, target, reduction=m.reduction, log_target=m.log_target)


def _module_linear_ce(m, x, target):
    C, pos, D = m.num_classes, tuple(m.out_features), m.linear.in_features
    weight = m.linear.weight.reshape(C, *pos, D)
    bias = m.linear.bias.reshape(C, *pos) if m.linear.bias is not None else None
    kw = {"reduction": m.reduction, "label_smoothing": m.label_smoothing}
    if m.ignore_index is not None:
        kw["ignore_index"] = m.ignore_index
    if m.weight is not None:
        kw["class_weight"] = _np(m.weight)
    if bias is not None:
        kw["bias"] = _np(bias)
    # gradients of the module's parameters: (C * P, D) and (C * P,) in torch
    wrt = (x, m.linear.weight) + ((m.linear.bias,) if bias is not None else ())
    return Call(fl.linear_cross_entropy, (_np(x), _np(weight), _np(target)), kw, wrt)


MODULES = {
    "CrossEntropyLoss": lambda m, x, t: _cross_entropy(
        x, t, weight=m.weight, ignore_index=m.ignore_index, reduction=m.reduction,
        label_smoothing=m.label_smoothing),
    "NLLLoss": lambda m, x, t: _nll_loss(x, t, weight=m.weight, ignore_index=m.ignore_index,
                                         reduction=m.reduction),
    "MSELoss": _module_pointwise(fl.mse_loss),
    "L1Loss": _module_pointwise(fl.l1_loss),
    "HuberLoss": _module_pointwise(fl.huber_loss, ("delta",)),
    "SmoothL1Loss": _module_pointwise(fl.smooth_l1_loss, ("beta",)),
    "BCELoss": _module_pointwise(fl.binary_cross_entropy, ("weight",)),
    "BCEWithLogitsLoss": _module_pointwise(fl.binary_cross_entropy_with_logits,
                                           ("weight", "pos_weight")),
    "KLDivLoss": _module_kl,
    "MultiMarginLoss": lambda m, x, t: _multi_margin(x, t, p=m.p, margin=m.margin,
                                                     weight=m.weight, reduction=m.reduction),
    "CTCLoss": lambda m, lp, tg, il, tl: _ctc(lp, tg, il, tl, blank=m.blank,
                                              reduction=m.reduction,
                                              zero_infinity=m.zero_infinity),
    "TripletMarginLoss": lambda m, a, p, n: _triplet(a, p, n, margin=m.margin, p=m.p,
                                                     eps=m.eps, swap=m.swap,
                                                     reduction=m.reduction),
    "LinearCrossEntropyLoss": _module_linear_ce,
    "Softmax": lambda m, x: Call(fl.softmax, (_np(x),), {"axis": m.dim}, values_only=True),
    "LogSoftmax": lambda m, x: Call(fl.log_softmax, (_np(x),), {"axis": m.dim},
                                    values_only=True),
    "Softmax2d": lambda m, x: Call(fl.softmax, (_np(x),), {"axis": -3}, values_only=True),
}


# --- running and comparing ----------------------------------------------------------------------
def _unaliased(args: tuple) -> tuple:
    """The arguments with any repeat of an earlier tensor argument replaced by a detached copy.
    (module_db's 0-d KLDivLoss samples pass one tensor as both input and target: torch's
    gradient would then add the target's path, and fastloss differentiates the input only.)"""
    out: list = []
    for a in args:
        if isinstance(a, torch.Tensor) and any(a is b for b in out):
            a = a.detach().clone()
        out.append(a)
    return tuple(out)


def _grads_like(fl_grads, wrt) -> list:
    """fastloss's gradient(s) as a list in ``wrt``'s order and torch's shapes."""
    gs = list(fl_grads) if isinstance(fl_grads, tuple) else [fl_grads]
    assert len(gs) == len(wrt), f"{len(gs)} gradients from fastloss, {len(wrt)} torch inputs"
    return [np.reshape(g, tuple(t.shape)) if g.size == t.numel() else g for g, t in
            zip(gs, wrt)]


def _compare(name: str, torch_out, wrt, call: Call) -> None:
    """Raise AssertionError unless fastloss's values (and gradients) equal torch's."""
    want = torch_out.detach().numpy()
    if call.values_only:
        got = call.fn(*call.args, **call.kwargs)
        fl_grads = None
    else:
        got, fl_grads = call.fn(*call.args, **call.kwargs, return_grad=True)
    assert np.shape(got) == (want.shape if call.shape is None else call.shape), \
        f"{name}: shape {np.shape(got)}, torch {want.shape}"
    got = np.reshape(got, want.shape)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True,
                               err_msg=f"{name}: loss")
    if fl_grads is None:
        return
    torch_grads = torch.autograd.grad(torch_out.sum(), wrt, allow_unused=True)
    for i, (g, tg) in enumerate(zip(_grads_like(fl_grads, wrt), torch_grads)):
        tg = np.zeros(g.shape) if tg is None else tg.numpy()
        assert g.shape == tg.shape, f"{name}: gradient {i} shape {g.shape}, torch {tg.shape}"
        finite = np.abs(tg[np.isfinite(tg)])
        scale = max(1.0, float(np.max(finite, initial=0.0)))
        np.testing.assert_allclose(g, tg, rtol=RTOL, atol=ATOL * scale, equal_nan=True,
                                   err_msg=f"{name}: gradient {i}")


def _check_difference(name: str, call: Call) -> None:
    """fastloss's documented behaviour where it differs on purpose."""
    if call.default_raises is not None:
        default = {k: v for k, v in call.kwargs.items() if k != "negative_target"}
        with pytest.raises(call.default_raises):
            call.fn(*call.args, **default)


def _record(source: str, counts: Counter) -> None:
    total = SUITE_COUNTS.setdefault("torch's op_db/module_db samples vs fastloss (float64)",
                                    Counter())
    total.update(counts)
    per = SUITE_COUNTS.setdefault("torch samples compared, by op/module", {})
    per[source] = f"{counts['compared']}"


def _run_samples(source: str, samples, run_torch, to_call) -> None:
    counts, failures = Counter(), []
    for i, sample in enumerate(samples):
        name = f"{source}[{i}]"
        try:
            call, out, wrt = to_call(sample), None, None
            out, wrt = run_torch(sample, call)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
            continue
        counts["compared"] += 1
        try:
            if call.difference:
                assert call.difference in DIFFERENCES, call.difference
                _check_difference(name, call)
            _compare(name, out, wrt, call)
        except AssertionError as exc:
            failures.append(f"{name}: {str(exc)[:600]}")
            counts["disagree"] += 1
            continue
        if call.difference:
            counts[f"deliberately different ({call.difference})"] += 1
        else:
            counts["agree"] += 1
    _record(source, counts)
    assert counts["compared"] > 0, f"{source}: torch gave no samples"
    assert not failures, f"{len(failures)} of {counts['compared']} samples differ:\n" + \
        "\n".join(failures[:5])


OP_INFOS = [op for op in cmi.op_db if op.name in OPS]


@pytest.mark.parametrize("op", OP_INFOS, ids=lambda op: ".".join(
    filter(None, (op.name.replace("nn.functional.", ""), op.variant_test_name))))
def test_op_db_samples(op):
    def run_torch(sample, call):
        return op(*_unaliased((sample.input, *sample.args)), **sample.kwargs), call.wrt

    def to_call(sample):
        return OPS[op.name](*_unaliased((sample.input, *sample.args)), **sample.kwargs)

    samples = op.reference_inputs("cpu", torch.float64, requires_grad=True)
    source = "op_db " + ".".join(filter(None, (op.name.replace("nn.functional.", ""),
                                               op.variant_test_name)))
    _run_samples(source, samples, run_torch, to_call)


MODULE_INFOS = [m for m in cm.module_db if m.module_cls.__name__ in MODULES]


@pytest.mark.parametrize("module_info", MODULE_INFOS, ids=lambda m: m.module_cls.__name__)
def test_module_db_samples(module_info):
    cls = module_info.module_cls
    inputs = module_info.module_inputs_func(module_info, device="cpu", dtype=torch.float64,
                                            requires_grad=True, training=True)
    built = {}

    def module_of(mi):
        if id(mi) not in built:
            c = mi.constructor_input
            torch.manual_seed(0)
            built[id(mi)] = cls(*c.args, **c.kwargs).to(torch.float64)
        return built[id(mi)]

    args_of = {}

    def to_call(mi):
        assert not mi.forward_input.kwargs, mi.forward_input.kwargs
        args_of[id(mi)] = _unaliased(mi.forward_input.args)
        return MODULES[cls.__name__](module_of(mi), *args_of[id(mi)])

    def run_torch(mi, call):
        return module_of(mi)(*args_of[id(mi)]), call.wrt

    _run_samples(f"module_db {cls.__name__}", inputs, run_torch, to_call)


def test_every_loss_of_fastloss_with_torch_samples_is_covered():
    # the functions of fastloss that torch's databases have samples for are all here
    have = {op.name for op in cmi.op_db} | {m.module_cls.__name__ for m in cm.module_db}
    for name in OPS:
        assert name in have, f"torch {torch.__version__} has no op_db entry {name}"
    for name in MODULES:
        if name != "TripletMarginLoss":  # (not in torch 2.13's module_db; mapped if added)
            assert name in have, f"torch {torch.__version__} has no module_db entry {name}"
    assert math.isclose(RTOL, 1e-9) and ATOL <= 1e-12
