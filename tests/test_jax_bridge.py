"""fastloss.jax against optax (and jax.numpy expressions where optax has no such loss): values,
gradients under jit / grad / value_and_grad / vmap, 16-bit inputs, errors, a training loop."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy
flj = pytest.importorskip("fastloss.jax")

TOL = dict(rtol=2e-5, atol=2e-6)


def _normal(seed, shape, scale=1.0, dtype=jnp.float32):
    return (scale * jax.random.normal(jax.random.key(seed), shape)).astype(dtype)


def _labels(seed, shape, n, ignore_some=False):
    y = jax.random.randint(jax.random.key(seed), shape, 0, n)
    return y.at[1].set(-100) if ignore_some else y


def _close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               **{**TOL, **tol})


def _vjp(f, ct, *args):
    """The cotangent ``ct`` pulled back through ``f`` at ``args``, jitted (JAX compiles each
    operation of an un-jitted function separately, which is slow on a loaded machine)."""
    return jax.jit(lambda *a: jax.vjp(f, *a)[1](ct))(*args)


def _optax_ce(x, y, axis=-1, reduction="none"):
    """optax's integer-label cross-entropy, with rows whose label is -100 left out."""
    valid = y != -100
    rows = optax.softmax_cross_entropy_with_integer_labels(x, jnp.where(valid, y, 0),
                                                           axis=axis, where=None)
    rows = jnp.where(valid, rows, 0.0)
    return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / valid.sum()}[reduction]


# --- cross_entropy ------------------------------------------------------------------------------

REDUCE = {"none": lambda v: v, "mean": jnp.mean, "sum": jnp.sum}


def _all_reductions(loss, n_rows, *args):
    """Each reduction's value and the pull-back of a cotangent (random for "none"), in one
    jitted function (one compilation instead of six)."""
    cts = {"none": _normal(99, (n_rows,) if isinstance(n_rows, int) else n_rows),
           "mean": jnp.float32(1.7), "sum": jnp.float32(0.3)}

    @jax.jit
    def run(*args):
        return {r: (loss(r)(*args), jax.vjp(loss(r), *args)[1](cts[r])) for r in cts}

    return run(*args)


def _assert_same(ours, ref):
    for r in ours:
        _close(ours[r][0], ref[r][0], err_msg=r)
        for g, rg in zip(ours[r][1], ref[r][1]):
            _close(g, rg, err_msg=r)


def test_cross_entropy_matches_optax_under_jit_and_grad():
    x, y = _normal(0, (8, 30), 3.0), _labels(1, (8,), 30, ignore_some=True)
    ours = lambda r: lambda x: flj.cross_entropy(x, y, reduction=r)
    ref = lambda r: lambda x: _optax_ce(x, y, reduction=r)
    _assert_same(_all_reductions(ours, 8, x), _all_reductions(ref, 8, x))
    v, g = jax.value_and_grad(ours("mean"))(x)  # (not jitted)
    _close(v, _optax_ce(x, y, reduction="mean"))
    _close(g, _all_reductions(ref, 8, x)["mean"][1][0] / 1.7)


def test_cross_entropy_class_axis_and_probabilities():
    x = _normal(3, (4, 7, 5))  # (N, C, T): the classes on axis 1
    y = _labels(4, (4, 5), 7)
    _close(flj.cross_entropy(x, y, axis=1),
           jax.jit(optax.softmax_cross_entropy_with_integer_labels, static_argnums=2)(x, y, 1))
    p = jax.nn.softmax(_normal(5, (4, 7, 5)), axis=1)
    f = lambda x: flj.cross_entropy(x, p, axis=1, label_smoothing=0.2, reduction="sum")
    r = lambda x: optax.softmax_cross_entropy(
        x, 0.8 * p + 0.2 / 7, axis=1).sum()
    _close(f(x), jax.jit(r)(x))
    _close(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(r))(x))


def test_cross_entropy_label_smoothing_z_loss_softcap_normalizer():
    x, y = _normal(6, (6, 9), 4.0), _labels(7, (6,), 9)
    smoothed = optax.smooth_labels(jax.nn.one_hot(y, 9), 0.1)

    def ref(x):
        capped = 5.0 * jnp.tanh(x / 5.0)
        rows = (optax.softmax_cross_entropy(capped, smoothed)
                + 1e-2 * jax.nn.logsumexp(capped, axis=-1) ** 2)
        return rows.sum() / 20.0

    def ours(x):
        return flj.cross_entropy(x, y, label_smoothing=0.1, z_loss=1e-2, softcap=5.0,
                                 normalizer=20.0, reduction="mean")

    _close(ours(x), jax.jit(ref)(x))
    _close(jax.jit(jax.grad(ours))(x), jax.jit(jax.grad(ref))(x))


def test_vmap_per_example_gradients():
    """vmap(grad(mean loss)): each batch element gets its own mean ("sequential"), and
    reduction="none" hands the whole batch to fastloss at once ("broadcast_all")."""
    xb, yb = _normal(8, (3, 5, 11)), _labels(9, (3, 5), 11)
    f = jax.jit(jax.vmap(jax.grad(lambda x, y: flj.cross_entropy(x, y, reduction="mean"))))
    r = jax.jit(jax.vmap(jax.grad(lambda x, y: _optax_ce(x, y, reduction="mean"))))
    _close(f(xb, yb), r(xb, yb))
    _close(jax.vmap(flj.cross_entropy)(xb, yb), jax.jit(_optax_ce)(xb, yb))
    # batched logits, shared labels: loss and per-row weighted gradient in one jit each
    weights = jnp.arange(5.0)

    def both(ce):
        loss = lambda x: ce(x, yb[0])
        return jax.jit(lambda xb: (jax.vmap(loss)(xb),
                                   jax.vmap(jax.grad(lambda x: (loss(x) * weights).sum()))(xb)))

    for a, b in zip(both(flj.cross_entropy)(xb), both(_optax_ce)(xb)):
        _close(a, b)


def test_bfloat16_logits():
    x = _normal(10, (6, 40), 3.0, dtype=jnp.bfloat16)
    y = _labels(11, (6,), 40)
    f = lambda x: flj.cross_entropy(x, y, reduction="mean")
    loss, g = jax.value_and_grad(f)(x)
    assert loss.dtype == jnp.float32 and g.dtype == jnp.bfloat16
    x32 = x.astype(jnp.float32)
    ref = jax.jit(jax.value_and_grad(lambda x: _optax_ce(x, y, reduction="mean")))
    ref_loss, ref_g = ref(x32)
    _close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    _close(g, ref_g, rtol=1e-2, atol=1e-4)


def test_large_gradient_in_page_memory():
    """A gradient above 4 MB goes to an mmap-backed buffer (see fastloss.jax._page_buffer)."""
    x, y = _normal(37, (40, 30000)), _labels(38, (40,), 30000)
    assert x.size * 4 > 1 << 22
    g = jax.grad(lambda x: flj.cross_entropy(x, y, reduction="sum"))(x)
    _close(g, jax.jit(jax.grad(lambda x: _optax_ce(x, y, reduction="sum")))(x))


# --- pointwise --------------------------------------------------------------------------

@pytest.mark.parametrize("name, ref", [
    ("mse_loss", optax.squared_error),
    ("huber_loss", lambda p, t: optax.huber_loss(p, t, delta=0.7)),
    ("binary_cross_entropy_with_logits", optax.sigmoid_binary_cross_entropy),
])
def test_pointwise_losses_match_optax(name, ref):
    p = _normal(12, (5, 1), 2.0)  # broadcast against (5, 4) targets
    t = jax.random.uniform(jax.random.key(13), (5, 4))
    kwargs = dict(delta=0.7) if name == "huber_loss" else {}
    ours = lambda r: lambda p: getattr(flj, name)(p, t, reduction=r, **kwargs)
    theirs = lambda r: lambda p: REDUCE[r](ref(jnp.broadcast_to(p, (5, 4)), t))
    _assert_same(_all_reductions(ours, (5, 4), p), _all_reductions(theirs, (5, 4), p))


def test_mse_loss_without_targets_is_squared_error_to_zero():
    p = _normal(15, (7,))
    _close(flj.mse_loss(p), np.asarray(p) ** 2)
    _close(jax.grad(lambda p: flj.mse_loss(p, reduction="sum"))(p), 2 * np.asarray(p))


# --- distillation and the output layer --------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "batchmean", "sum"])
def test_kl_div_with_logits_matches_optax(reduction):
    s, t = _normal(16, (6, 12), 2.0), _normal(17, (6, 12), 2.0)

    def ref(s):
        rows = 4.0 * optax.kl_divergence(jax.nn.log_softmax(s / 2.0), jax.nn.softmax(t / 2.0))
        return {"none": rows, "batchmean": rows.mean(), "sum": rows.sum()}[reduction]

    ours = lambda s: flj.kl_div_with_logits(s, t, temperature=2.0, reduction=reduction)
    _close(jax.jit(ours)(s), jax.jit(ref)(s))
    ct = _normal(18, (6,)) if reduction == "none" else jnp.float32(1.0)
    _close(_vjp(ours, ct, s)[0], _vjp(ref, ct, s)[0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_matches_optax_on_the_logits(reduction):
    h, w, b = _normal(19, (10, 6)), _normal(20, (23, 6)), _normal(21, (23,))
    y = _labels(22, (10,), 23, ignore_some=True)
    ours = lambda h, w, b: flj.linear_cross_entropy(h, w, y, bias=b, reduction=reduction)
    ref = lambda h, w, b: _optax_ce(h @ w.T + b, y, reduction=reduction)
    _close(jax.jit(ours)(h, w, b), jax.jit(ref)(h, w, b))
    ct = _normal(23, (10,)) if reduction == "none" else jnp.float32(1.0)
    for g, r in zip(_vjp(ours, ct, h, w, b), _vjp(ref, ct, h, w, b)):
        _close(g, r)
    # per-example gradients (vmap over a batch of sequences)
    if reduction == "mean":
        hb = _normal(24, (3, 10, 6))
        per = jax.jit(jax.vmap(jax.grad(lambda h: ours(h, w, b))))(hb)
        _close(per, jax.jit(jax.vmap(jax.grad(lambda h: ref(h, w, b))))(hb))


def test_linear_cross_entropy_without_bias():
    h, w, y = _normal(25, (5, 3)), _normal(26, (8, 3)), _labels(27, (5,), 8)
    g = jax.grad(lambda w: flj.linear_cross_entropy(h, w, y, label_smoothing=0.1))(w)
    r = jax.jit(jax.grad(lambda w: optax.softmax_cross_entropy(
        h @ w.T, optax.smooth_labels(jax.nn.one_hot(y, 8), 0.1)).mean()))(w)
    _close(g, r)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(flj, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --- what is computed, and errors -------------------------------------------------------

def test_gradient_is_only_computed_when_differentiating(monkeypatch):
    from fastloss import classification

    seen = []
    real = classification.cross_entropy
    monkeypatch.setattr(classification, "cross_entropy",
                        lambda *a, **k: seen.append(k["return_grad"]) or real(*a, **k))
    x, y = _normal(28, (4, 6)), _labels(29, (4,), 6)
    flj.cross_entropy(x, y).block_until_ready()
    jax.grad(lambda x: flj.cross_entropy(x, y, reduction="sum"))(x).block_until_ready()
    assert seen == [False, True]


def test_errors():
    x, y = _normal(30, (4, 6)), _labels(31, (4,), 6)
    p = jax.nn.softmax(_normal(32, (4, 6)))
    with pytest.raises(TypeError, match="no gradient with respect to labels"):
        jax.grad(lambda p: flj.cross_entropy(x, p, reduction="sum"))(p)
    with pytest.raises(TypeError, match="no gradient with respect to teacher_logits"):
        jax.grad(lambda t: flj.kl_div_with_logits(x, t, reduction="sum"))(x)
    with pytest.raises(TypeError, match="floating"):
        flj.cross_entropy(jnp.ones((4, 6), jnp.int32), y)
    with pytest.raises(ValueError, match="reduction"):
        flj.cross_entropy(x, y, reduction="batchmean")
    with pytest.raises(ValueError, match="normalizer"):
        flj.cross_entropy(x, y, normalizer=3.0)  # (reduction "none")
    with pytest.raises(ValueError, match="label_smoothing"):
        jax.jit(lambda x: flj.cross_entropy(x, y, label_smoothing=2.0))(x)
    with pytest.raises(ValueError, match="weight"):
        flj.linear_cross_entropy(x, _normal(33, (9, 5)), y)
    # stop_gradient makes the labels constants: fine
    g = jax.grad(lambda x: flj.cross_entropy(x, jax.lax.stop_gradient(p), reduction="sum"))(x)
    _close(g, jax.jit(jax.grad(lambda x: optax.softmax_cross_entropy(x, p).sum()))(x))


def test_optax_training_loop_matches():
    """A linear classifier trained for 20 steps with optax.adam: the same losses with
    fastloss's and optax's cross-entropy."""
    X, Y = _normal(34, (64, 12)), _labels(35, (64,), 5)
    params = {"w": _normal(36, (12, 5), 0.1), "b": jnp.zeros(5)}
    opt = optax.adam(0.05)

    def train(loss_fn):
        @jax.jit
        def step(params, state):
            loss, g = jax.value_and_grad(lambda p: loss_fn(X @ p["w"] + p["b"], Y))(params)
            updates, state = opt.update(g, state)
            return optax.apply_updates(params, updates), state, loss

        p, s, losses = params, opt.init(params), []
        for _ in range(20):
            p, s, loss = step(p, s)
            losses.append(float(loss))
        return losses

    ours = train(lambda z, y: flj.cross_entropy(z, y, reduction="mean"))
    ref = train(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert ref[-1] < ref[0] - 0.1


# --- return_lse / return_token_accuracy (issue 15) --------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_statistics(reduction):
    x = _normal(0, (12, 10), scale=3.0)
    y = _labels(1, (12,), 10, ignore_some=True)
    fn = jax.jit(lambda a: flj.cross_entropy(a, y, reduction=reduction, return_lse=True,
                                             return_token_accuracy=True))
    r = fn(x)
    assert r.grad is None
    _close(r.lse, jax.nn.logsumexp(x, axis=-1))
    hit = (jnp.argmax(x, -1) == y) & (y != -100)
    want = {"none": hit, "sum": hit.sum(), "mean": hit.sum() / (y != -100).sum()}[reduction]
    _close(r.token_accuracy, want)
    _close(r.loss, flj.cross_entropy(x, y, reduction=reduction))
    # only the loss is differentiated; the statistics ride along
    g = jax.grad(lambda a: flj.cross_entropy(a, y, reduction="sum", return_lse=True).loss)(x)
    _close(g, jax.grad(lambda a: flj.cross_entropy(a, y, reduction="sum"))(x))
    acc = jax.vmap(lambda a: flj.cross_entropy(a, y, reduction=reduction,
                                               return_token_accuracy=True).token_accuracy)
    _close(acc(jnp.stack([x, -x]))[0], want)
