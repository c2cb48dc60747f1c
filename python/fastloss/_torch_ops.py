"""The ``torch.ops.fastloss`` operators behind :mod:`fastloss.torch` (private).

Each operator takes CPU tensors, views them as NumPy arrays (no copy, any strides; bfloat16
through an int16 view), runs the fastloss function with ``return_grad=need_grad`` and returns
``(loss, *grads)``: the gradients of the returned loss with respect to the differentiable
inputs, computed in the same pass as the loss (for ``reduction="none"``: of the sum of the
per-element losses), written into a tensor from torch's allocator where the fastloss function
takes ``grad_out``. ``need_grad`` is decided by the caller (grad mode on and an input that
requires grad); without it the gradient outputs are empty placeholders and no gradient is
computed. Autograd keeps the gradients from the forward and multiplies them by
``grad_output`` in backward; no operator is differentiated twice (no double backward).

Every operator is registered with ``torch.library.custom_op`` (functional: ``mutates_args=()``,
except ``cross_entropy_inplace``), a fake implementation that only computes shapes and dtypes
(``torch.compile`` and ``torch.export`` trace through it without running fastloss) and, for
the functional ones, ``register_autograd``. No loss arithmetic happens here: every number
comes from the fastloss functions.

:func:`run` calls a functional operator. In plain eager mode (not compiling or
``torch.jit.trace``-ing, no ``torch.func`` transform, no dispatch or function mode, every
tensor argument a plain CPU tensor or parameter) it skips the dispatcher: the operator's own implementation runs inside a
``torch.autograd.Function`` with the operator's ``setup_context`` and ``backward``, so the
results and gradients are the operator's, bit for bit. The dispatcher's path for a custom
operator cost 40-50 us a call (a (32, 10) cross-entropy forward: 53 us through it, 12 us
without; torch's own ``F.cross_entropy`` 5 us), as much as the loss itself for the small
batches a CPU training loop has. Anywhere else the operator is called as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from . import binary as _binary
from . import classification as _classification
from . import distributions as _distributions
from . import embeddings as _embeddings
from . import kl as _kl
from . import margin as _margin
from . import regression as _regression
from . import scale as _scale
from . import sequence as _sequence

_LIB = "fastloss"


# --- tensors <-> arrays -------------------------------------------------------------------

def _bfloat16() -> Any:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes comes with fastloss[torch]
        raise TypeError("bfloat16 tensors need the ml_dtypes package: pip install ml_dtypes "
                        "(or 'fastloss[torch]')") from None
    return ml_dtypes.bfloat16


def to_numpy(t: Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's memory: no copy, the tensor's strides (bfloat16 as an
    ``ml_dtypes.bfloat16`` view of its bits)."""
    t = t.detach()
    if t.is_conj() or t.is_neg():  # (lazy conjugate / negative views cannot be shared)
        t = t.resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()


def _opt_numpy(t: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if t is None else to_numpy(t)


def from_numpy(a: Any) -> Tensor:
    """A tensor sharing the memory of a NumPy array (or a 0-d tensor of a NumPy scalar)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiub" and a.dtype.name == "bfloat16":  # (dtype.name is slow)
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def loss_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """What fastloss returns losses in: float64 if any input is float64, else float32 (16-bit
    inputs are computed in float32 and give float32 losses)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _results(out: Any, need_grad: bool, like: Sequence[Optional[Tensor]]) -> tuple:
    """(loss, *grads) as tensors from a fastloss result (``loss`` or ``(loss, grad)`` or
    ``(loss, (grad, ...))``); without gradients, empty placeholders shaped like ``like``."""
    if not need_grad:
        return (from_numpy(out),) + tuple(_placeholder(t) for t in like)
    loss, grads = out
    grads = grads if isinstance(grads, tuple) else (grads,)
    grads += (None,) * (len(like) - len(grads))  # (an absent bias has no gradient)
    return (from_numpy(loss),) + tuple(
        _placeholder(t) if g is None else from_numpy(g) for g, t in zip(grads, like))


def _new_grad(like: Tensor, need_grad: bool) -> Optional[Tensor]:
    """The gradient buffer, from torch's allocator, for fastloss's ``grad_out``: the operator
    returns it as it is. (A fastloss-allocated NumPy array would do as well, but NumPy asks
    the kernel for transparent huge pages for large arrays, and on a busy machine with
    ``defrag=madvise`` the first touch of 800 MB of them stalled for seconds in page
    compaction, against half a second for torch's memory.)"""
    return torch.empty(like.shape, dtype=like.dtype) if need_grad else None


def _loss_and_grad(out: Any, grad: Optional[Tensor], like: Tensor) -> tuple:
    """(loss, grad) tensors of a fastloss call that wrote its gradient into ``grad``."""
    if grad is None:
        return from_numpy(out), _placeholder(like)
    return from_numpy(out[0]), grad


def _placeholder(like: Optional[Tensor]) -> Tensor:
    """The empty tensor an operator returns where it computed no gradient."""
    return torch.empty(0) if like is None else like.new_empty(0)


def _fake_results(loss_shape: Sequence[int], dtype: torch.dtype, need_grad: bool,
                  like: Sequence[Optional[Tensor]]) -> tuple:
    ref = next(t for t in like if t is not None)
    loss = ref.new_empty(tuple(loss_shape), dtype=dtype)
    grads = tuple(_placeholder(t) if t is None or not need_grad else torch.empty_like(t)
                  for t in like)
    return (loss,) + grads


def _reduced_shape(reduction: str, none_shape: Sequence[int]) -> tuple:
    return tuple(none_shape) if reduction == "none" else ()


# --- autograd: the gradient from the forward, times grad_output --------------------------

def unit_grad_output(grad_output: Tensor) -> bool:
    """True for the scalar 1 of ``loss.backward()`` (in eager mode; under ``torch.compile``
    the backward is traced and always multiplies)."""
    return (grad_output.numel() == 1 and not torch.compiler.is_compiling()
            and grad_output.item() == 1.0)


def scaled(grad: Tensor, grad_output: Tensor) -> Tensor:
    """``grad * grad_output`` in ``grad``'s dtype; for a unit ``grad_output``, the stored
    gradient itself: no pass over it and no second buffer. That is safe because autograd never
    writes into a gradient it is handed (a leaf's ``.grad`` takes it over only once this graph
    has let it go, so ``retain_graph=True`` and a second backward still see it unchanged)."""
    return grad if unit_grad_output(grad_output) else (grad * grad_output).to(grad.dtype)


# The checks behind run's eager path (torch internals: where one is missing, as in another
# torch version, every call goes through the dispatcher).
try:
    _EAGER_CHECKS = (torch._C._are_functorch_transforms_active,
                     torch._C._len_torch_dispatch_stack, torch._C._is_torch_function_mode_enabled)
except AttributeError:  # pragma: no cover - other torch versions
    _EAGER_CHECKS = None
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _eager_ok(args: tuple) -> bool:
    """Whether a call of an operator on ``args`` may skip the dispatcher (see the module's
    documentation)."""
    if _EAGER_CHECKS is None or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    transforms, dispatch_modes, function_modes = _EAGER_CHECKS
    if transforms() or dispatch_modes() or function_modes():
        return False
    for a in args:
        if isinstance(a, Tensor) and (type(a) not in _PLAIN_TENSORS or a.device.type != "cpu"):
            return False
    return True


def run(op, *args: Any) -> Any:
    """``op(*args)``, in plain eager mode without the dispatcher (the module's documentation
    says when and why)."""
    eager = getattr(op, "_fastloss_eager", None)
    if eager is not None and _eager_ok(args):
        return eager(*args)
    return op(*args)


def _register_autograd(op, grad_inputs: tuple, row_dims: Callable[[tuple], tuple],
                       n_extra: int = 0) -> None:
    """Backward of an operator returning ``(loss, *grads)``, ``grads[k]`` the gradient with
    respect to input ``grad_inputs[k]``; ``row_dims(inputs)`` gives, for
    ``reduction="none"``, the dimensions to insert into ``grad_output`` (the loss's shape) so
    that it broadcasts against the gradients (each element's gradient depends on its own
    loss only, so scaling it by that loss's ``grad_output`` is exact). ``n_extra``: outputs
    after the gradients that are statistics, not differentiable."""

    def setup_context(ctx, inputs, output):
        grads = output[1:len(output) - n_extra]
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*grads)
        ctx.n_inputs = len(inputs)
        ctx.had_grad = inputs[-1]  # every operator's last argument is need_grad
        ctx.row_dims = row_dims(inputs)

    def backward(ctx, grad_loss, *unused):
        out = [None] * ctx.n_inputs
        if not any(ctx.needs_input_grad[i] for i in grad_inputs):
            return tuple(out)
        if not ctx.had_grad:
            raise RuntimeError(
                f"{op._name}: backward was called but the forward computed no gradient (grad "
                "mode was off or no input required grad when it ran)")
        go = grad_loss
        for d in ctx.row_dims:
            go = go.unsqueeze(d)
        for i, g in zip(grad_inputs, ctx.saved_tensors):
            if ctx.needs_input_grad[i]:
                out[i] = scaled(g, go)
        return tuple(out)

    op.register_autograd(backward, setup_context=setup_context)

    impl = getattr(op, "_init_fn", None)  # (the decorated function: CustomOpDef keeps it)
    if impl is None:  # pragma: no cover - other torch versions: always the dispatcher
        return

    class Eager(torch.autograd.Function):
        """The operator's implementation, setup_context and backward, without the
        dispatcher (run)."""

        @staticmethod
        def forward(ctx, *inputs):
            output = impl(*inputs)
            setup_context(ctx, inputs, output)
            return output

        @staticmethod
        def backward(ctx, *grad_outputs):
            return backward(ctx, *grad_outputs)

    Eager.__name__ = Eager.__qualname__ = f"{op._name.split('::')[-1]}_eager"
    op._fastloss_eager = Eager.apply


def _class_axis(input: Tensor) -> int:
    """torch's class dimension: 1 for (N, C, d1, ...), 0 for an unbatched (C,) input."""
    return 1 if input.dim() >= 2 else 0


# --- classification ---------------------------------------------------------------------

@torch.library.custom_op(f"{_LIB}::cross_entropy", mutates_args=())
def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                  reduction: str, label_smoothing: float, z_loss: float,
                  softcap: Optional[float], normalizer: Optional[float], return_lse: bool,
                  return_token_accuracy: bool,
                  need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, grad, lse, token_accuracy); what was not asked for is an empty placeholder."""
    g = _new_grad(input, need_grad)
    out = _classification.cross_entropy(
        to_numpy(input), to_numpy(target), axis=_class_axis(input), weight=_opt_numpy(weight),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, normalizer=normalizer, return_grad=need_grad,
        grad_out=_opt_numpy(g), return_lse=return_lse,
        return_token_accuracy=return_token_accuracy)
    if not (return_lse or return_token_accuracy):
        return _loss_and_grad(out, g, input) + (_placeholder(input), _placeholder(input))
    stats = tuple(_placeholder(input) if v is None else from_numpy(np.asarray(v))
                  for v in (out.lse, out.token_accuracy))
    return (from_numpy(np.asarray(out.loss)), g if need_grad else _placeholder(input)) + stats


def _class_loss_shape(input: Tensor, target: Tensor, reduction: str) -> tuple:
    if target.is_floating_point():  # class probabilities: the input's shape without dim 1
        rows = tuple(s for d, s in enumerate(input.shape) if d != _class_axis(input))
    else:
        rows = tuple(target.shape)
    return _reduced_shape(reduction, rows)


@cross_entropy.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
      normalizer, return_lse, return_token_accuracy, need_grad):
    dtype = loss_dtype(input.dtype)
    rows = _class_loss_shape(input, target, "none")
    lse = input.new_empty(rows, dtype=dtype) if return_lse else _placeholder(input)
    acc = (input.new_empty(_reduced_shape(reduction, rows), dtype=dtype)
           if return_token_accuracy else _placeholder(input))
    return _fake_results(_class_loss_shape(input, target, reduction), dtype, need_grad,
                         (input,)) + (lse, acc)


def _class_dims(reduction_index: int) -> Callable[[tuple], tuple]:
    def dims(inputs: tuple) -> tuple:
        input, reduction = inputs[0], inputs[reduction_index]
        return (1,) if reduction == "none" and input.dim() >= 2 else ()
    return dims


_register_autograd(cross_entropy, (0,), _class_dims(4), n_extra=2)


@torch.library.custom_op(f"{_LIB}::cross_entropy_inplace", mutates_args=("input",))
def cross_entropy_inplace(input: Tensor, target: Tensor, weight: Optional[Tensor],
                          ignore_index: int, reduction: str, label_smoothing: float,
                          z_loss: float, softcap: Optional[float],
                          normalizer: Optional[float]) -> Tensor:
    """The loss; the gradient of the loss is written over ``input`` (fastloss's
    ``grad_out=logits``)."""
    x = to_numpy(input)
    loss, _ = _classification.cross_entropy(
        x, to_numpy(target), axis=_class_axis(input), weight=_opt_numpy(weight),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, normalizer=normalizer, return_grad=True, grad_out=x)
    return from_numpy(loss)


@cross_entropy_inplace.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
      normalizer):
    return input.new_empty(_class_loss_shape(input, target, reduction),
                           dtype=loss_dtype(input.dtype))


@torch.library.custom_op(f"{_LIB}::softmax_focal_loss", mutates_args=())
def softmax_focal_loss(input: Tensor, target: Tensor, alpha_per_class: Optional[Tensor],
                       alpha: Optional[float], gamma: float, ignore_index: int, reduction: str,
                       need_grad: bool) -> tuple[Tensor, Tensor]:
    a = to_numpy(alpha_per_class) if alpha_per_class is not None else alpha
    g = _new_grad(input, need_grad)
    out = _classification.softmax_focal_loss(
        to_numpy(input), to_numpy(target), axis=_class_axis(input), alpha=a, gamma=gamma,
        ignore_index=ignore_index, reduction=reduction, return_grad=need_grad,
        grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


@softmax_focal_loss.register_fake
def _(input, target, alpha_per_class, alpha, gamma, ignore_index, reduction, need_grad):
    return _fake_results(_reduced_shape(reduction, target.shape), loss_dtype(input.dtype),
                         need_grad, (input,))


_register_autograd(softmax_focal_loss, (0,), _class_dims(6))


@torch.library.custom_op(f"{_LIB}::nll_loss", mutates_args=())
def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
             reduction: str, need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _classification.nll_loss(
        to_numpy(input), to_numpy(target), axis=_class_axis(input), weight=_opt_numpy(weight),
        ignore_index=ignore_index, reduction=reduction, return_grad=need_grad,
        grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


@nll_loss.register_fake
def _(input, target, weight, ignore_index, reduction, need_grad):
    return _fake_results(_reduced_shape(reduction, target.shape), loss_dtype(input.dtype),
                         need_grad, (input,))


_register_autograd(nll_loss, (0,), _class_dims(4))


@torch.library.custom_op(f"{_LIB}::multi_margin_loss", mutates_args=())
def multi_margin_loss(input: Tensor, target: Tensor, p: int, margin: float,
                      weight: Optional[Tensor], reduction: str,
                      need_grad: bool) -> tuple[Tensor, Tensor]:
    out = _margin.multi_margin_loss(to_numpy(input), to_numpy(target), p=p, margin=margin,
                                    weight=_opt_numpy(weight), reduction=reduction,
                                    return_grad=need_grad)
    return _results(out, need_grad, (input,))


@multi_margin_loss.register_fake
def _(input, target, p, margin, weight, reduction, need_grad):
    return _fake_results(_reduced_shape(reduction, input.shape[:-1]), loss_dtype(input.dtype),
                         need_grad, (input,))


def _last_dim_rows(reduction_index: int) -> Callable[[tuple], tuple]:
    """Losses with one value per row of the last dimension: insert dim -1 for "none"."""
    def dims(inputs: tuple) -> tuple:
        return (-1,) if inputs[reduction_index] == "none" and inputs[0].dim() >= 2 else ()
    return dims


_register_autograd(multi_margin_loss, (0,), _last_dim_rows(5))


# --- pointwise: regression and binary losses ---------------------------------------------
# The public functions broadcast input against target (and weight) before these operators
# when reduction="none", so that the gradient has the loss's shape; with "mean"/"sum",
# fastloss sums the gradient over the broadcast axes itself.

def _pointwise_fake(input: Tensor, others: Sequence[Optional[Tensor]], reduction: str,
                    need_grad: bool) -> tuple:
    shape = torch.broadcast_shapes(input.shape, *(t.shape for t in others if t is not None))
    return _fake_results(_reduced_shape(reduction, shape), loss_dtype(input.dtype), need_grad,
                         (input,))


def _no_dims(inputs: tuple) -> tuple:
    return ()


@torch.library.custom_op(f"{_LIB}::mse_loss", mutates_args=())
def mse_loss(input: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str,
             need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _regression.mse_loss(to_numpy(input), to_numpy(target), weight=_opt_numpy(weight),
                               reduction=reduction, return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


@torch.library.custom_op(f"{_LIB}::l1_loss", mutates_args=())
def l1_loss(input: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str,
            need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _regression.l1_loss(to_numpy(input), to_numpy(target), weight=_opt_numpy(weight),
                              reduction=reduction, return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


for _op in (mse_loss, l1_loss):
    _op.register_fake(lambda input, target, weight, reduction, need_grad:
                      _pointwise_fake(input, (target, weight), reduction, need_grad))
    _register_autograd(_op, (0,), _no_dims)


@torch.library.custom_op(f"{_LIB}::huber_loss", mutates_args=())
def huber_loss(input: Tensor, target: Tensor, delta: float, weight: Optional[Tensor],
               reduction: str, need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _regression.huber_loss(to_numpy(input), to_numpy(target), delta=delta,
                                 weight=_opt_numpy(weight), reduction=reduction,
                                 return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


@torch.library.custom_op(f"{_LIB}::smooth_l1_loss", mutates_args=())
def smooth_l1_loss(input: Tensor, target: Tensor, beta: float, weight: Optional[Tensor],
                   reduction: str, need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _regression.smooth_l1_loss(to_numpy(input), to_numpy(target), beta=beta,
                                     weight=_opt_numpy(weight), reduction=reduction,
                                     return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


for _op in (huber_loss, smooth_l1_loss):
    _op.register_fake(lambda input, target, param, weight, reduction, need_grad:
                      _pointwise_fake(input, (target, weight), reduction, need_grad))
    _register_autograd(_op, (0,), _no_dims)


@torch.library.custom_op(f"{_LIB}::binary_cross_entropy", mutates_args=())
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor],
                         reduction: str, need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _binary.binary_cross_entropy(to_numpy(input), to_numpy(target),
                                       weight=_opt_numpy(weight), reduction=reduction,
                                       return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


binary_cross_entropy.register_fake(lambda input, target, weight, reduction, need_grad:
                                   _pointwise_fake(input, (target, weight), reduction,
                                                   need_grad))
_register_autograd(binary_cross_entropy, (0,), _no_dims)


@torch.library.custom_op(f"{_LIB}::binary_cross_entropy_with_logits", mutates_args=())
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Optional[Tensor],
                                     pos_weight: Optional[Tensor], reduction: str,
                                     need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _binary.binary_cross_entropy_with_logits(
        to_numpy(input), to_numpy(target), weight=_opt_numpy(weight),
        pos_weight=_opt_numpy(pos_weight), reduction=reduction, return_grad=need_grad,
        grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


binary_cross_entropy_with_logits.register_fake(
    lambda input, target, weight, pos_weight, reduction, need_grad:
    _pointwise_fake(input, (target, weight, pos_weight), reduction, need_grad))
_register_autograd(binary_cross_entropy_with_logits, (0,), _no_dims)


@torch.library.custom_op(f"{_LIB}::sigmoid_focal_loss", mutates_args=())
def sigmoid_focal_loss(input: Tensor, target: Tensor, alpha: float, gamma: float,
                       reduction: str, need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _binary.sigmoid_focal_loss(to_numpy(input), to_numpy(target), alpha=alpha,
                                     gamma=gamma, reduction=reduction, return_grad=need_grad,
                                     grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


sigmoid_focal_loss.register_fake(lambda input, target, alpha, gamma, reduction, need_grad:
                                 _pointwise_fake(input, (target,), reduction, need_grad))
_register_autograd(sigmoid_focal_loss, (0,), _no_dims)


@torch.library.custom_op(f"{_LIB}::kl_div", mutates_args=())
def kl_div(input: Tensor, target: Tensor, reduction: str, log_target: bool,
           need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(input, need_grad)
    out = _kl.kl_div(to_numpy(input), to_numpy(target), reduction=reduction,
                     log_target=log_target, return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, input)


kl_div.register_fake(lambda input, target, reduction, log_target, need_grad:
                     _pointwise_fake(input, (target,), reduction, need_grad))
_register_autograd(kl_div, (0,), _no_dims)


# --- distillation, embeddings, sequences, the output layer ------------------------------

@torch.library.custom_op(f"{_LIB}::kl_div_with_logits", mutates_args=())
def kl_div_with_logits(student: Tensor, teacher: Tensor, temperature: float, reduction: str,
                       need_grad: bool) -> tuple[Tensor, Tensor]:
    g = _new_grad(student, need_grad)
    out = _distributions.kl_div_with_logits(to_numpy(student), to_numpy(teacher), axis=-1,
                                            temperature=temperature, reduction=reduction,
                                            return_grad=need_grad, grad_out=_opt_numpy(g))
    return _loss_and_grad(out, g, student)


@kl_div_with_logits.register_fake
def _(student, teacher, temperature, reduction, need_grad):
    return _fake_results(_reduced_shape(reduction, student.shape[:-1]),
                         loss_dtype(student.dtype, teacher.dtype), need_grad, (student,))


_register_autograd(kl_div_with_logits, (0,), _last_dim_rows(3))


@torch.library.custom_op(f"{_LIB}::triplet_margin_loss", mutates_args=())
def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float,
                        p: float, eps: float, swap: bool, reduction: str,
                        need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = _embeddings.triplet_margin_loss(
        to_numpy(anchor), to_numpy(positive), to_numpy(negative), margin=margin, p=p, eps=eps,
        swap=swap, reduction=reduction, return_grad=need_grad)
    return _results(out, need_grad, (anchor, positive, negative))


@triplet_margin_loss.register_fake
def _(anchor, positive, negative, margin, p, eps, swap, reduction, need_grad):
    dtype = loss_dtype(anchor.dtype, positive.dtype, negative.dtype)
    return _fake_results(_reduced_shape(reduction, anchor.shape[:-1]), dtype, need_grad,
                         (anchor, positive, negative))


_register_autograd(triplet_margin_loss, (0, 1, 2), _last_dim_rows(7))


@torch.library.custom_op(f"{_LIB}::ctc_loss", mutates_args=())
def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor,
             blank: int, reduction: str, zero_infinity: bool,
             need_grad: bool) -> tuple[Tensor, Tensor]:
    out = _sequence.ctc_loss(to_numpy(log_probs), to_numpy(targets), to_numpy(input_lengths),
                             to_numpy(target_lengths), blank=blank, reduction=reduction,
                             zero_infinity=zero_infinity, return_grad=need_grad)
    return _results(out, need_grad, (log_probs,))


@ctc_loss.register_fake
def _(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
      need_grad):
    rows = log_probs.shape[1:2] if log_probs.dim() == 3 else ()
    return _fake_results(_reduced_shape(reduction, rows), loss_dtype(log_probs.dtype),
                         need_grad, (log_probs,))


def _ctc_dims(inputs: tuple) -> tuple:
    """Loss "none" (N,) against the gradient (T, N, C)."""
    return (0, 2) if inputs[5] == "none" and inputs[0].dim() == 3 else ()


_register_autograd(ctc_loss, (0,), _ctc_dims)


@torch.library.custom_op(f"{_LIB}::linear_cross_entropy", mutates_args=())
def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor,
                         linear_bias: Optional[Tensor], ignore_index: int, reduction: str,
                         label_smoothing: float,
                         need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = _scale.linear_cross_entropy(
        to_numpy(input), to_numpy(linear_weight), to_numpy(target), bias=_opt_numpy(linear_bias),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        return_grad=need_grad)
    return _results(out, need_grad, (input, linear_weight, linear_bias))


@linear_cross_entropy.register_fake
def _(input, linear_weight, target, linear_bias, ignore_index, reduction, label_smoothing,
      need_grad):
    dtypes = (input.dtype, linear_weight.dtype) + (
        () if linear_bias is None else (linear_bias.dtype,))
    return _fake_results(_reduced_shape(reduction, input.shape[:1]), loss_dtype(*dtypes),
                         need_grad, (input, linear_weight, linear_bias))


# (reduction="none" never has a gradient here: the weight's gradient sums over rows, so it
# cannot be rescaled per row afterwards; fastloss.torch takes another path for it.)
_register_autograd(linear_cross_entropy, (0, 1, 3), _no_dims)
