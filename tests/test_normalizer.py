"""cross_entropy(normalizer=): the summed loss and its gradient divided by a given count."""

import fastloss as fl
import numpy as np
import pytest
from conftest import central_diff
from fastloss import reference as ref


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_normalizer_divides_the_sum(rng, reduction, weighted):
    x = rng.normal(0, 2, size=(7, 11))
    t = rng.integers(0, 11, size=7)
    t[2] = -100
    w = rng.uniform(0.5, 2, size=11) if weighted else None
    opts = dict(weight=w, label_smoothing=0.1, z_loss=1e-3, softcap=5.0)
    loss, grad = fl.cross_entropy(x, t, reduction=reduction, normalizer=12.5, return_grad=True,
                                  **opts)
    ref_sum = ref.cross_entropy(x, t, reduction="sum", **opts)
    assert loss == pytest.approx(ref_sum / 12.5, rel=1e-13)
    d_sum = central_diff(lambda z: ref.cross_entropy(z, t, reduction="sum", **opts), x)
    np.testing.assert_allclose(grad, d_sum / 12.5, atol=1e-8)


def test_normalizer_matches_accumulated_micro_batches(rng):
    """Two micro-batches normalised by the total token count add up to the full batch's mean."""
    x = rng.normal(size=(10, 6)).astype(np.float32)
    t = rng.integers(0, 6, size=10)
    t[[1, 7]] = -100
    n_tokens = int(np.count_nonzero(t != -100))
    full, g_full = fl.cross_entropy(x, t, return_grad=True)
    parts = [fl.cross_entropy(x[s], t[s], normalizer=n_tokens, return_grad=True)
             for s in (slice(0, 4), slice(4, 10))]
    assert float(parts[0][0] + parts[1][0]) == pytest.approx(float(full), rel=1e-6)
    np.testing.assert_allclose(np.concatenate([parts[0][1], parts[1][1]]), g_full, rtol=1e-6,
                               atol=1e-9)


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-2.0, ValueError),
                                      (float("inf"), ValueError), (float("nan"), ValueError),
                                      ("3", TypeError), (True, TypeError)])
def test_normalizer_bad_values(bad, err):
    with pytest.raises(err, match="normalizer"):
        fl.cross_entropy(np.zeros((2, 3)), [0, 1], normalizer=bad)


def test_normalizer_needs_a_summing_reduction():
    with pytest.raises(ValueError, match="normalizer.*reduction"):
        fl.cross_entropy(np.zeros((2, 3)), [0, 1], normalizer=2.0, reduction="none")
