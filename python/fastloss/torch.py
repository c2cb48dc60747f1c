"""fastloss's losses as PyTorch autograd operators, for training on CPUs.

``import fastloss.torch as flt`` (needs ``pip install 'fastloss[torch]'``; ``import fastloss``
itself never imports PyTorch). The functions have the signatures, defaults and class-dimension
convention of :mod:`torch.nn.functional` (class dimension 1, ``input``/``target``,
``reduction``, ``weight``, ``ignore_index``, ``label_smoothing``, the legacy ``size_average``
and ``reduce``), so ``F.cross_entropy(...)`` becomes ``flt.cross_entropy(...)``; the modules
(``flt.CrossEntropyLoss``, ...) subclass torch's and take the same constructor arguments.

>>> import torch, fastloss.torch as flt
>>> logits = torch.randn(8, 100, requires_grad=True)
>>> target = torch.randint(0, 100, (8,))
>>> loss = flt.cross_entropy(logits, target, label_smoothing=0.1)
>>> loss.backward()
>>> ref = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
>>> bool(torch.allclose(loss, ref))
True

How it works. Every loss is one operator ``torch.ops.fastloss.<name>`` registered with
``torch.library.custom_op``, with a fake implementation and an autograd formula, so it works
under autograd, ``torch.compile(fullgraph=True)`` and ``torch.export`` without graph breaks.
The forward views the tensors as NumPy arrays (no copy, any strides; float16 and bfloat16
included) and runs the fastloss kernel, which gives the loss and, when an input requires
grad, its gradient in the same pass; backward multiplies that gradient by ``grad_output``
(a unit ``grad_output``, ``loss.backward()``, hands it on as it is). In plain eager mode a
call runs the operator's implementation and autograd formula without the dispatcher (an
``autograd.Function``: the same numbers, a fraction of the per-call cost; see
``fastloss._torch_ops``). No loss arithmetic happens in this module.

Differences from :mod:`torch.nn.functional`:

- **CPU tensors only.** Tensors on another device raise a ``RuntimeError`` that says so
  (move them with ``.cpu()``, or keep ``torch.nn.functional`` on the accelerator).
- **Gradients** are given with respect to the prediction inputs (``input``, the three
  triplet embeddings, the student logits, and ``input``/``linear_weight``/``linear_bias`` of
  :func:`linear_cross_entropy`). A target, class weight or ``pos_weight`` that requires grad
  raises a ``RuntimeError`` naming it: detach it, or use ``torch.nn.functional``. No double
  backward (second derivatives); ``torch.func`` transforms are not supported.
- **16-bit inputs** (float16, bfloat16) are read as they are and computed in float32: the
  loss is float32 (torch gives the input's dtype), the gradient has the input's dtype.
- **Extras**: ``cross_entropy(..., z_loss=, softcap=, normalizer=)``,
  :func:`cross_entropy_inplace`, :func:`kl_div_with_logits`, :func:`softmax_focal_loss`,
  :func:`sigmoid_focal_loss` (torchvision's).

The in-place option, :func:`cross_entropy_inplace` (or ``CrossEntropyLoss(inplace=True)``),
writes the gradient over the logits in the forward pass, so the ``(N, C)`` gradient needs no
second buffer (Liger-Kernel's memory trick); backward scales it in place. Its constraints:
the logits must be an intermediate result (not a leaf such as a parameter, nor a view of
one), with no overlapping memory, and nothing else may need their values afterwards. The
logits of ``hidden @ W.T`` (``nn.Linear``) qualify: the matrix product's backward needs
``hidden`` and ``W`` only. If another operation saved the logits for its backward (a
``tanh`` soft-cap applied in torch, say), autograd raises its usual "modified by an inplace
operation" error at backward instead of computing a wrong gradient; reading the logits after
the call gives the gradient, not the logits. Backward runs once (``retain_graph=True`` and a
second backward raise). Under ``torch.compile`` the write is functionalised and may not save
the buffer.

:func:`linear_cross_entropy` runs fastloss's chunked kernel (the ``(N, C)`` logits never exist)
for class-index targets, 2-d ``linear_weight`` and no class ``weight``, and returns the
gradients of ``input``, ``linear_weight`` and ``linear_bias`` from one operator. With class
weights, probability targets, a multi-dimensional ``linear_weight``, or
``reduction="none"`` with a gradient (the weight's gradient sums over rows and cannot be
rescaled per row afterwards), it computes the logits with ``torch.nn.functional.linear`` and
applies :func:`cross_entropy`, materialising them as torch's reference path does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "fastloss.torch needs PyTorch: pip install 'fastloss[torch]' (or torch>=2.4)"
    ) from exc

from torch import Tensor
from torch.nn import _reduction as _torch_reduction
from torch.nn import functional as F

from . import _torch_ops  # (registers the torch.ops.fastloss operators)
from .classification import CrossEntropyResult
from ._validation import REDUCTIONS, check_reduction

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "cross_entropy_inplace",
    "ctc_loss",
    "huber_loss",
    "kl_div",
    "kl_div_with_logits",
    "l1_loss",
    "linear_cross_entropy",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "softmax_focal_loss",
    "triplet_margin_loss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CTCLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "MultiMarginLoss",
    "NLLLoss",
    "SmoothL1Loss",
    "TripletMarginLoss",
]

# the operators (torch.library CustomOpDef objects: calling one is calling torch.ops.fastloss's
# operator of that name) and _ops.run, which calls them without the dispatcher in plain eager
# mode (_torch_ops says when)
_ops = _torch_ops


# --- argument checks --------------------------------------------------------------------

def _check_tensors(fn: str, **tensors: Optional[Tensor]) -> None:
    """Every argument a CPU tensor (or None)."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"fastloss.torch.{fn}: {name} must be a torch.Tensor, got "
                            f"{type(t).__name__}")
        if t.device.type != "cpu":
            raise RuntimeError(
                f"fastloss.torch.{fn}: {name} is on {t.device}, and fastloss computes on the "
                f"CPU only. Move the tensors with .cpu(), or use torch.nn.functional on "
                f"{t.device.type}.")


def _check_float(fn: str, name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"fastloss.torch.{fn}: {name} must be a floating tensor (float16, "
                        f"bfloat16, float32 or float64), got {t.dtype}")


def _no_grad_for(fn: str, **tensors: Optional[Tensor]) -> None:
    """Refuse inputs whose gradient fastloss does not compute."""
    if not torch.is_grad_enabled():
        return
    for name, t in tensors.items():
        if t is not None and t.requires_grad:
            raise RuntimeError(
                f"fastloss.torch.{fn} gives no gradient with respect to {name}, which requires "
                f"grad: pass {name}.detach(), or use torch.nn.functional.{fn} to differentiate "
                f"with respect to {name}")


def _need_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _reduction(size_average: Any, reduce: Any, reduction: str,
               allowed: tuple = REDUCTIONS) -> str:
    """torch's legacy ``size_average``/``reduce`` (with its deprecation warning), then a check."""
    if size_average is not None or reduce is not None:
        reduction = _torch_reduction.legacy_get_string(size_average, reduce)
    return check_reduction(reduction, allowed)


def _broadcast_input(input: Tensor, *others: Optional[Tensor]) -> Tensor:
    """For reduction="none": the input expanded to the loss's shape, so that each element's
    gradient can be scaled by its own grad_output (autograd sums it back)."""
    shape = torch.broadcast_shapes(input.shape, *(t.shape for t in others if t is not None))
    return input if shape == input.shape else input.expand(shape)


def _float_or_none(value: Any) -> Optional[float]:
    return None if value is None else float(value)


# --- classification ---------------------------------------------------------------------

def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  size_average: Optional[bool] = None, ignore_index: int = -100,
                  reduce: Optional[bool] = None, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                  softcap: Optional[float] = None,
                  normalizer: Optional[float] = None, return_lse: bool = False,
                  return_token_accuracy: bool = False) -> Any:
    """:func:`torch.nn.functional.cross_entropy`, computed by :func:`fastloss.cross_entropy`.

    ``input`` is ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``; ``target`` class indices (an
    integer tensor) or class probabilities (a floating tensor of ``input``'s shape). Extras:
    ``z_loss`` (PaLM: ``z_loss * logsumexp**2`` per row), ``softcap`` (Gemma 2:
    ``softcap * tanh(input / softcap)`` first), ``normalizer`` (a positive number: the summed
    loss and its gradient divided by it instead of the mean's denominator, for example the
    token count of all the micro-batches of a gradient-accumulation step; only with
    ``reduction="mean"`` or ``"sum"``; a tensor is read with ``.item()``, a graph break under
    ``torch.compile``). ``return_lse`` and ``return_token_accuracy`` (as
    :func:`fastloss.cross_entropy`: each row's log-sum-exp, and the fraction of rows whose
    argmax is the target, from the same pass; Liger-Kernel's ``return_token_accuracy``) make
    it return a :class:`fastloss.CrossEntropyResult` ``(loss, None, lse, token_accuracy)`` of
    tensors (the gradient comes through autograd; ``lse`` and ``token_accuracy`` carry none).
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_tensors("cross_entropy", input=input, target=target, weight=weight)
    _check_float("cross_entropy", "input", input)
    _no_grad_for("cross_entropy", target=target, weight=weight)
    want_lse, want_acc = bool(return_lse), bool(return_token_accuracy)
    out = _ops.run(_ops.cross_entropy, input, target, weight, int(ignore_index), reduction,
                   float(label_smoothing), float(z_loss), _float_or_none(softcap),
                   _float_or_none(normalizer), want_lse, want_acc, _need_grad(input))
    if not (want_lse or want_acc):
        return out[0]
    return CrossEntropyResult(out[0], None, out[2] if want_lse else None,
                              out[3] if want_acc else None)


class _CrossEntropyInplace(torch.autograd.Function):
    """The loss from ``fastloss::cross_entropy_inplace``, which leaves the gradient in the
    input's memory; backward scales that memory by grad_output and hands it on."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                softcap, normalizer):
        loss = _ops.cross_entropy_inplace(input, target, weight, ignore_index, reduction,
                                          label_smoothing, z_loss, softcap, normalizer)
        ctx.save_for_backward(input)  # (now the gradient; the version counter was bumped)
        ctx.row_dims = (1,) if reduction == "none" and input.dim() >= 2 else ()
        ctx.consumed = False
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.consumed:
            raise RuntimeError(
                "fastloss.torch.cross_entropy_inplace: backward ran a second time, but the "
                "gradient kept in the logits' memory was already scaled and handed on; use "
                "fastloss.torch.cross_entropy to backpropagate more than once")
        ctx.consumed = True
        (grad,) = ctx.saved_tensors
        for d in ctx.row_dims:
            grad_loss = grad_loss.unsqueeze(d)
        if not _torch_ops.unit_grad_output(grad_loss):
            grad.mul_(grad_loss)
        return (grad,) + (None,) * 8


def cross_entropy_inplace(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                          ignore_index: int = -100, reduction: str = "mean",
                          label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                          softcap: Optional[float] = None,
                          normalizer: Optional[float] = None) -> Tensor:
    """:func:`cross_entropy` that writes the gradient over ``input`` (no second ``(N, C)``
    buffer). The constraints are in the module's documentation: ``input`` must be an
    intermediate result that nothing else needs afterwards (the logits of an ``nn.Linear``
    output layer), not a leaf or a view of one; backward runs once. Without grad mode or when
    ``input`` does not require grad, ``input`` is left alone and this is :func:`cross_entropy`.
    """
    reduction = check_reduction(reduction)
    _check_tensors("cross_entropy_inplace", input=input, target=target, weight=weight)
    _check_float("cross_entropy_inplace", "input", input)
    _no_grad_for("cross_entropy", target=target, weight=weight)
    args = (int(ignore_index), reduction, float(label_smoothing), float(z_loss),
            _float_or_none(softcap), _float_or_none(normalizer))
    if not _need_grad(input):
        return _ops.run(_ops.cross_entropy, input, target, weight, *args, False, False, False)[0]
    if input.is_leaf or (input._base is not None and input._base.is_leaf):
        raise RuntimeError(
            "fastloss.torch.cross_entropy_inplace: input is a leaf tensor (a parameter or a "
            "tensor you created) or a view of one; writing the gradient over it would destroy "
            "it. Pass the logits computed from it (e.g. hidden @ W.T), or use "
            "fastloss.torch.cross_entropy")
    if any(s == 0 and n > 1 for s, n in zip(input.stride(), input.shape)):
        raise RuntimeError(
            "fastloss.torch.cross_entropy_inplace: input has overlapping memory (an expanded "
            "tensor); the gradient cannot be written over it. Use fastloss.torch.cross_entropy")
    return _CrossEntropyInplace.apply(input, target, weight, *args)


def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
             size_average: Optional[bool] = None, ignore_index: int = -100,
             reduce: Optional[bool] = None, reduction: str = "mean") -> Tensor:
    """:func:`torch.nn.functional.nll_loss`, computed by :func:`fastloss.nll_loss`."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_tensors("nll_loss", input=input, target=target, weight=weight)
    _check_float("nll_loss", "input", input)
    _no_grad_for("nll_loss", target=target, weight=weight)
    return _ops.run(_ops.nll_loss, input, target, weight, int(ignore_index), reduction,
                    _need_grad(input))[0]


def softmax_focal_loss(input: Tensor, target: Tensor, gamma: float = 2.0,
                       alpha: Union[None, float, Tensor] = None, ignore_index: int = -100,
                       reduction: str = "mean") -> Tensor:
    """Multi-class focal loss ``-alpha_t (1 - p_t)**gamma log p_t``, ``p = softmax(input)``
    over dimension 1 (torch's class dimension), computed by
    :func:`fastloss.softmax_focal_loss`. ``alpha``: None, a number, or a ``(C,)`` tensor of
    per-class factors; ``"mean"`` divides by the number of non-ignored rows."""
    reduction = check_reduction(reduction)
    alpha_t = alpha if isinstance(alpha, Tensor) else None
    _check_tensors("softmax_focal_loss", input=input, target=target, alpha=alpha_t)
    _check_float("softmax_focal_loss", "input", input)
    _no_grad_for("softmax_focal_loss", target=target, alpha=alpha_t)
    return _ops.run(
        _ops.softmax_focal_loss, input, target, alpha_t,
        None if alpha is None or alpha_t is not None else float(alpha),
        float(gamma), int(ignore_index), reduction, _need_grad(input))[0]


def multi_margin_loss(input: Tensor, target: Tensor, p: int = 1, margin: float = 1.0,
                      weight: Optional[Tensor] = None, size_average: Optional[bool] = None,
                      reduce: Optional[bool] = None, reduction: str = "mean") -> Tensor:
    """:func:`torch.nn.functional.multi_margin_loss`, computed by
    :func:`fastloss.multi_margin_loss`."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_tensors("multi_margin_loss", input=input, target=target, weight=weight)
    _check_float("multi_margin_loss", "input", input)
    _no_grad_for("multi_margin_loss", target=target, weight=weight)
    return _ops.run(_ops.multi_margin_loss, input, target, int(p), float(margin), weight,
                    reduction, _need_grad(input))[0]


# --- regression and binary --------------------------------------------------------------

def _pointwise_args(fn: str, input: Tensor, target: Tensor, reduction: str,
                    **extra: Optional[Tensor]) -> tuple:
    _check_tensors(fn, input=input, target=target, **extra)
    _check_float(fn, "input", input)
    _no_grad_for(fn, target=target, **extra)
    if reduction == "none":
        input = _broadcast_input(input, target, *extra.values())
    return input, _need_grad(input)


def _same_shape_weight(fn: str, input: Tensor, weight: Optional[Tensor]) -> None:
    if weight is not None and weight.shape != input.shape:  # (torch's rule for these losses)
        raise ValueError(f"fastloss.torch.{fn}: weight must have input's shape "
                         f"{tuple(input.shape)}, got {tuple(weight.shape)}")


def mse_loss(input: Tensor, target: Tensor, size_average: Optional[bool] = None,
             reduce: Optional[bool] = None, reduction: str = "mean",
             weight: Optional[Tensor] = None) -> Tensor:
    """:func:`torch.nn.functional.mse_loss`, computed by :func:`fastloss.mse_loss`. As torch,
    ``"mean"`` with ``weight`` is ``sum(weight * loss) / sum(weight)``."""
    reduction = _reduction(size_average, reduce, reduction)
    _same_shape_weight("mse_loss", input, weight)
    x, need = _pointwise_args("mse_loss", input, target, reduction, weight=weight)
    if weight is not None and reduction == "mean":
        return _ops.run(_ops.mse_loss, x, target, weight, "sum", need)[0] / weight.sum()
    return _ops.run(_ops.mse_loss, x, target, weight, reduction, need)[0]


def l1_loss(input: Tensor, target: Tensor, size_average: Optional[bool] = None,
            reduce: Optional[bool] = None, reduction: str = "mean",
            weight: Optional[Tensor] = None) -> Tensor:
    """:func:`torch.nn.functional.l1_loss`, computed by :func:`fastloss.l1_loss`. As torch,
    ``"mean"`` with ``weight`` is ``sum(weight * loss) / sum(weight)``."""
    reduction = _reduction(size_average, reduce, reduction)
    _same_shape_weight("l1_loss", input, weight)
    x, need = _pointwise_args("l1_loss", input, target, reduction, weight=weight)
    if weight is not None and reduction == "mean":
        return _ops.run(_ops.l1_loss, x, target, weight, "sum", need)[0] / weight.sum()
    return _ops.run(_ops.l1_loss, x, target, weight, reduction, need)[0]


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Optional[Tensor] = None) -> Tensor:
    """:func:`torch.nn.functional.huber_loss`, computed by :func:`fastloss.huber_loss`
    (``"mean"`` with ``weight``: divided by the number of elements, as torch)."""
    reduction = check_reduction(reduction)
    _same_shape_weight("huber_loss", input, weight)
    x, need = _pointwise_args("huber_loss", input, target, reduction, weight=weight)
    return _ops.run(_ops.huber_loss, x, target, float(delta), weight, reduction, need)[0]


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: Optional[bool] = None,
                   reduce: Optional[bool] = None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """:func:`torch.nn.functional.smooth_l1_loss`, computed by :func:`fastloss.smooth_l1_loss`."""
    reduction = _reduction(size_average, reduce, reduction)
    x, need = _pointwise_args("smooth_l1_loss", input, target, reduction)
    return _ops.run(_ops.smooth_l1_loss, x, target, float(beta), None, reduction, need)[0]


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                         size_average: Optional[bool] = None, reduce: Optional[bool] = None,
                         reduction: str = "mean") -> Tensor:
    """:func:`torch.nn.functional.binary_cross_entropy` (probabilities, logs clamped at
    -100), computed by :func:`fastloss.binary_cross_entropy`."""
    reduction = _reduction(size_average, reduce, reduction)
    x, need = _pointwise_args("binary_cross_entropy", input, target, reduction, weight=weight)
    return _ops.run(_ops.binary_cross_entropy, x, target, weight, reduction, need)[0]


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Optional[Tensor] = None,
                                     size_average: Optional[bool] = None,
                                     reduce: Optional[bool] = None, reduction: str = "mean",
                                     pos_weight: Optional[Tensor] = None) -> Tensor:
    """:func:`torch.nn.functional.binary_cross_entropy_with_logits`, computed by
    :func:`fastloss.binary_cross_entropy_with_logits`."""
    reduction = _reduction(size_average, reduce, reduction)
    x, need = _pointwise_args("binary_cross_entropy_with_logits", input, target, reduction,
                              weight=weight, pos_weight=pos_weight)
    return _ops.run(_ops.binary_cross_entropy_with_logits, x, target, weight, pos_weight,
                    reduction, need)[0]


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "mean") -> Tensor:
    """:func:`torchvision.ops.sigmoid_focal_loss` (``alpha < 0`` disables the weighting),
    computed by :func:`fastloss.sigmoid_focal_loss`."""
    reduction = check_reduction(reduction)
    x, need = _pointwise_args("sigmoid_focal_loss", inputs, targets, reduction)
    return _ops.run(_ops.sigmoid_focal_loss, x, targets, float(alpha), float(gamma), reduction,
                    need)[0]


def kl_div(input: Tensor, target: Tensor, size_average: Optional[bool] = None,
           reduce: Optional[bool] = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """:func:`torch.nn.functional.kl_div` (``input``: log-probabilities; ``"batchmean"`` is
    the KL divergence per sample), computed by :func:`fastloss.kl_div`."""
    reduction = _reduction(size_average, reduce, reduction, REDUCTIONS + ("batchmean",))
    x, need = _pointwise_args("kl_div", input, target, reduction)
    return _ops.run(_ops.kl_div, x, target, reduction, bool(log_target), need)[0]


# --- distillation, embeddings, sequences ------------------------------------------------

def kl_div_with_logits(student: Tensor, teacher: Tensor, *, temperature: float = 1.0,
                       reduction: str = "batchmean") -> Tensor:
    """Distillation loss ``T**2 * KL(softmax(teacher / T) || softmax(student / T))`` over the
    last dimension, fused (:func:`fastloss.kl_div_with_logits`): equal to
    ``T**2 * F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1),
    reduction=reduction, log_target=True)`` for 2-d logits. ``"batchmean"`` divides by the
    number of rows (every position but the last dimension), ``"mean"`` by the number of
    elements; ``"none"`` gives one loss per row. The gradient is with respect to ``student``."""
    reduction = check_reduction(reduction, REDUCTIONS + ("batchmean",))
    _check_tensors("kl_div_with_logits", student=student, teacher=teacher)
    _check_float("kl_div_with_logits", "student", student)
    _no_grad_for("kl_div_with_logits", teacher=teacher)
    return _ops.run(_ops.kl_div_with_logits, student, teacher, float(temperature), reduction,
                    _need_grad(student))[0]


def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0,
                        p: float = 2, eps: float = 1e-6, swap: bool = False,
                        size_average: Optional[bool] = None, reduce: Optional[bool] = None,
                        reduction: str = "mean") -> Tensor:
    """:func:`torch.nn.functional.triplet_margin_loss`, computed by
    :func:`fastloss.triplet_margin_loss` (gradients for all three inputs)."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_tensors("triplet_margin_loss", anchor=anchor, positive=positive, negative=negative)
    for name, t in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        _check_float("triplet_margin_loss", name, t)
    return _ops.run(_ops.triplet_margin_loss, anchor, positive, negative, float(margin),
                    float(p), float(eps), bool(swap), reduction,
                    _need_grad(anchor, positive, negative))[0]


def _lengths(value: Union[Tensor, Sequence[int]]) -> Tensor:
    return value if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.long)


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: Union[Tensor, Sequence[int]],
             target_lengths: Union[Tensor, Sequence[int]], blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """:func:`torch.nn.functional.ctc_loss`, computed by :func:`fastloss.ctc_loss`. As
    torch's, the gradient with respect to ``log_probs`` is the one that is right when they
    come from ``log_softmax`` (it includes torch's ``exp(log_probs)`` term)."""
    reduction = check_reduction(reduction)
    input_lengths, target_lengths = _lengths(input_lengths), _lengths(target_lengths)
    _check_tensors("ctc_loss", log_probs=log_probs, targets=targets,
                   input_lengths=input_lengths, target_lengths=target_lengths)
    _check_float("ctc_loss", "log_probs", log_probs)
    return _ops.run(_ops.ctc_loss, log_probs, targets, input_lengths, target_lengths,
                    int(blank), reduction, bool(zero_infinity), _need_grad(log_probs))[0]


# --- the output layer -------------------------------------------------------------------

def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                         reduction: str = "mean", ignore_index: Optional[int] = -100,
                         label_smoothing: float = 0.0) -> Tensor:
    """:func:`torch.nn.functional.linear_cross_entropy`: the cross-entropy of
    ``F.linear(input, linear_weight, linear_bias)``, computed by fastloss's chunked kernel
    (:func:`fastloss.linear_cross_entropy`: the logits never exist in full) with the gradients
    of ``input``, ``linear_weight`` and ``linear_bias`` from one operator. ``ignore_index=None``
    is -100 (torch's default). Class ``weight``, probability targets, a multi-dimensional
    ``linear_weight`` and ``reduction="none"`` with a gradient take the materialising path
    (see the module's documentation). There is no ``options`` argument: fastloss chooses its
    chunks itself."""
    reduction = check_reduction(reduction)
    ignore_index = -100 if ignore_index is None else int(ignore_index)
    _check_tensors("linear_cross_entropy", input=input, linear_weight=linear_weight,
                   target=target, linear_bias=linear_bias, weight=weight)
    for name, t in (("input", input), ("linear_weight", linear_weight),
                    ("linear_bias", linear_bias)):
        if t is not None:
            _check_float("linear_cross_entropy", name, t)
    _no_grad_for("linear_cross_entropy", target=target, weight=weight)
    need = _need_grad(input, linear_weight, linear_bias)
    if (weight is not None or target.is_floating_point() or linear_weight.dim() != 2
            or input.dim() not in (1, 2) or (reduction == "none" and need)):
        return _linear_then_cross_entropy(input, linear_weight, target, linear_bias, weight,
                                          reduction, ignore_index, label_smoothing)
    if input.dim() == 1:  # one sample: a batch of one
        loss = _ops.run(_ops.linear_cross_entropy, input.unsqueeze(0), linear_weight,
                        target.reshape(1), linear_bias, ignore_index, reduction,
                        float(label_smoothing), need)[0]
        return loss.reshape(())
    return _ops.run(_ops.linear_cross_entropy, input, linear_weight, target, linear_bias,
                    ignore_index, reduction, float(label_smoothing), need)[0]


def _linear_then_cross_entropy(input, linear_weight, target, linear_bias, weight, reduction,
                               ignore_index, label_smoothing) -> Tensor:
    """The materialising path: the logits by torch's matrix product, then fastloss's
    cross-entropy over the class dimension 1 (``(N, C, d1, ...)`` for a weight of shape
    ``(C, d1, ..., D)``)."""
    class_shape = linear_weight.shape[:-1]
    w2 = linear_weight.reshape(-1, linear_weight.shape[-1])
    b2 = None if linear_bias is None else linear_bias.reshape(-1)
    logits = F.linear(input, w2, b2)
    if len(class_shape) > 1:
        logits = logits.reshape(*input.shape[:-1], *class_shape)
    return cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)


# --- modules: torch's classes, with fastloss's forward ---------------------------------------

class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """:class:`torch.nn.CrossEntropyLoss` computed by :func:`cross_entropy`; also takes
    ``z_loss``, ``softcap``, ``normalizer`` and ``inplace`` (:func:`cross_entropy_inplace`)."""

    def __init__(self, weight: Optional[Tensor] = None, size_average=None,
                 ignore_index: int = -100, reduce=None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                 softcap: Optional[float] = None, normalizer: Optional[float] = None,
                 inplace: bool = False) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss, self.softcap, self.normalizer = z_loss, softcap, normalizer
        self.inplace = inplace

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        fn = cross_entropy_inplace if self.inplace else cross_entropy
        return fn(input, target, self.weight, ignore_index=self.ignore_index,
                  reduction=self.reduction, label_smoothing=self.label_smoothing,
                  z_loss=self.z_loss, softcap=self.softcap, normalizer=self.normalizer)


class NLLLoss(torch.nn.NLLLoss):
    """:class:`torch.nn.NLLLoss` computed by :func:`nll_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                        reduction=self.reduction)


class MSELoss(torch.nn.MSELoss):
    """:class:`torch.nn.MSELoss` computed by :func:`mse_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    """:class:`torch.nn.L1Loss` computed by :func:`l1_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, reduction=self.reduction)


class HuberLoss(torch.nn.HuberLoss):
    """:class:`torch.nn.HuberLoss` computed by :func:`huber_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    """:class:`torch.nn.SmoothL1Loss` computed by :func:`smooth_l1_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCELoss(torch.nn.BCELoss):
    """:class:`torch.nn.BCELoss` computed by :func:`binary_cross_entropy`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """:class:`torch.nn.BCEWithLogitsLoss` computed by :func:`binary_cross_entropy_with_logits`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                reduction=self.reduction,
                                                pos_weight=self.pos_weight)


class KLDivLoss(torch.nn.KLDivLoss):
    """:class:`torch.nn.KLDivLoss` computed by :func:`kl_div`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class MultiMarginLoss(torch.nn.MultiMarginLoss):
    """:class:`torch.nn.MultiMarginLoss` computed by :func:`multi_margin_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(input, target, p=self.p, margin=self.margin, weight=self.weight,
                                 reduction=self.reduction)


class CTCLoss(torch.nn.CTCLoss):
    """:class:`torch.nn.CTCLoss` computed by :func:`ctc_loss`."""

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths: Tensor,
                target_lengths: Tensor) -> Tensor:
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank,
                        self.reduction, self.zero_infinity)


class TripletMarginLoss(torch.nn.TripletMarginLoss):
    """:class:`torch.nn.TripletMarginLoss` computed by :func:`triplet_margin_loss`."""

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p,
                                   eps=self.eps, swap=self.swap, reduction=self.reduction)


class LinearCrossEntropyLoss(getattr(torch.nn, "LinearCrossEntropyLoss", torch.nn.Module)):
    """:class:`torch.nn.LinearCrossEntropyLoss` (it owns the output layer, ``self.linear``)
    computed by :func:`linear_cross_entropy`; its ``options`` argument is accepted and not
    used (fastloss chooses its chunks itself). Needs a torch that has the class (2.13)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        in_features = self.linear.in_features
        linear_weight = self.linear.weight.reshape(self.num_classes, *self.out_features,
                                                   in_features)
        bias = self.linear.bias
        linear_bias = None if bias is None else bias.reshape(self.num_classes,
                                                             *self.out_features)
        return linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias,
                                    weight=self.weight, reduction=self.reduction,
                                    ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing)
