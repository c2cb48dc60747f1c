"""linear_cross_entropy on a GPT-2 output layer: hidden (4096, 768), weight (50257, 768), float32,
against materialising the (4096, 50257) logits with NumPy matmul and then fl.cross_entropy.
Time and peak extra resident memory (VmHWM over what was resident before the call, through
/proc/self/clear_refs: every allocator counts, BLAS's included; outputs such as the gradients
count too) for the loss and for loss + gradients.

Run: pytest bench/bench_scale.py (pytest-benchmark; the memory figures go to extra_info), or
python bench/bench_scale.py for a table.

Compute: a (4096, 768) x (768, 50257) product is 316 GFLOP. Materialised: 1 product for the
loss, 3 with the gradients. Vocabulary-chunked linear_cross_entropy: 1 and 4 (the second sweep
recomputes each chunk's logits); with chunk_size >= V (row blocks of whole rows): 1 and 3.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastloss as fl
from fastloss.benchmark import peak_extra_memory

N, D, V = 4096, 768, 50257
GFLOP = 2.0 * N * D * V / 1e9


def linear_case():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((N, D), dtype=np.float32)
    weight = (rng.standard_normal((V, D), dtype=np.float32) * np.float32(0.05))
    target = rng.integers(0, V, N)
    return hidden, weight, target


def materialised(hidden, weight, target, grad):
    """What one writes without linear_cross_entropy: the logits, then the fused loss (and the
    gradient in place of the logits, the least memory this way can take)."""
    logits = hidden @ weight.T
    if not grad:
        return fl.cross_entropy(logits, target)
    loss, g = fl.cross_entropy(logits, target, return_grad=True, grad_out=logits)
    return loss, (g @ weight, g.T @ hidden)


IMPLS = {
    "materialised": lambda h, w, t, grad: materialised(h, w, t, grad),
    "chunked (chunk_size=8192)": lambda h, w, t, grad: fl.linear_cross_entropy(
        h, w, t, return_grad=grad),
    "chunked (chunk_size=2048)": lambda h, w, t, grad: fl.linear_cross_entropy(
        h, w, t, chunk_size=2048, return_grad=grad),
    "row blocks (chunk_size=V, 512 rows)": lambda h, w, t, grad: fl.linear_cross_entropy(
        h, w, t, chunk_size=V, row_chunk_size=512, return_grad=grad),
}


@pytest.fixture(scope="module")
def case():
    return linear_case()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "loss_grad"])
def bench_linear_cross_entropy(benchmark, case, impl, grad):
    h, w, t = case
    fn = IMPLS[impl]
    benchmark.pedantic(fn, (h, w, t, grad), rounds=3, warmup_rounds=1)
    peak = peak_extra_memory(lambda: fn(h, w, t, grad))
    benchmark.extra_info.update(peak_extra_mb=None if peak is None else peak / 2**20,
                                matmul_gflops=(4 if grad else 1) * GFLOP
                                / benchmark.stats.stats.median)


def main(repeat: int = 2) -> None:
    h, w, t = linear_case()
    print(f"hidden ({N}, {D}), weight ({V}, {D}) float32; threads {fl.get_num_threads()}; "
          f"inputs {(h.nbytes + w.nbytes) / 2**20:.0f} MiB; logits would be "
          f"{N * V * 4 / 2**20:.0f} MiB")
    print(f"{'case':10} {'implementation':36} {'median s':>9} {'min s':>7} {'peak extra MiB':>14}"
          f" {'loss rel. err':>14} {'grad max err':>13}")
    for grad in (False, True):
        ref = None
        for name, fn in IMPLS.items():
            peak = peak_extra_memory(lambda fn=fn, grad=grad: fn(h, w, t, grad))  # (+ warm-up)
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                out = fn(h, w, t, grad)
                times.append(time.perf_counter() - t0)
            loss, grads = (out if grad else (out, ()))
            if ref is None:  # the materialised result, the first implementation
                ref = (float(loss), grads)
            err = abs(float(loss) - ref[0]) / ref[0]
            gerr = max((float(np.abs(g - r).max() / np.abs(r).max())
                        for g, r in zip(grads, ref[1])), default=float("nan"))
            del out, grads
            print(f"{'loss+grad' if grad else 'loss':10} {name:36} {np.median(times):9.3f} "
                  f"{min(times):7.3f} {peak / 2**20 if peak is not None else float('nan'):14.0f}"
                  f" {err:14.1e} {gerr:13.1e}")


if __name__ == "__main__":
    main()
