"""``fastloss bench --frameworks``: one training step of GPT-2's output layer on the CPU.

The step is the loss of ``hidden @ weight.T`` (hidden ``(N, 768)``, weight ``(V, 768)``,
GPT-2: ``N = 4096`` tokens, ``V = 50,257``; no bias, float32) against random targets, and
backward to the gradients of ``hidden`` and ``weight``. Implementations:

- PyTorch: ``F.cross_entropy`` of the logits; ``F.linear_cross_entropy`` (its reference path,
  ``options=None``, and its chunked path, ``options=LinearCrossEntropyOptions()``);
  ``fastloss.torch.cross_entropy`` and ``cross_entropy_inplace`` of the logits;
  ``fastloss.torch.linear_cross_entropy`` (no logits);
- JAX (jitted ``value_and_grad``): optax's ``softmax_cross_entropy_with_integer_labels`` of the
  logits; ``fastloss.jax.cross_entropy`` of the logits; ``fastloss.jax.linear_cross_entropy``.

Memory, each implementation in a fresh Python process: the resident memory its first step
adds at its peak over what was resident before it (the inputs; JAX's functions are compiled
before), the returned gradients included (``(N + V) * 768 * 4`` bytes, 170 MB for GPT-2);
Linux only. Time, one process per framework: a warm-up step of each implementation, then
rounds in which each runs one step in turn; the median per implementation. Every
implementation's loss is checked against the first one's.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, NamedTuple, Optional

import numpy as np

from .benchmark import _cpu_name, peak_extra_memory, time_call

HIDDEN = 768


class FrameworkResult(NamedTuple):
    framework: str
    impl: str
    median_s: float
    min_s: float
    max_s: float
    peak_extra_bytes: Optional[int]
    loss: float

    def as_dict(self) -> dict:
        return self._asdict()


def _inputs(batch: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((batch, HIDDEN), dtype=np.float32)
    # GPT-2's initialisation scale (0.02): logits of a freshly initialised model
    weight = rng.standard_normal((vocab, HIDDEN), dtype=np.float32) * np.float32(0.02)
    target = rng.integers(0, vocab, batch)
    return hidden, weight, target


def _torch_steps(hidden, weight, target, threads: int) -> tuple[dict, str]:
    import torch
    import torch.nn.functional as F

    from . import torch as flt

    torch.set_num_threads(threads)
    h0, w0, t = torch.from_numpy(hidden), torch.from_numpy(weight), torch.from_numpy(target)

    def step(loss_fn: Callable) -> Callable[[], float]:
        def run():
            h = h0.detach().requires_grad_()
            w = w0.detach().requires_grad_()
            loss = loss_fn(h, w)
            loss.backward()
            return loss.item(), h.grad, w.grad  # (the gradients stay alive for the peak)
        return run

    steps = {
        "F.cross_entropy(h @ W.T)": step(lambda h, w: F.cross_entropy(h @ w.T, t)),
        "fastloss.torch.cross_entropy(h @ W.T)":
            step(lambda h, w: flt.cross_entropy(h @ w.T, t)),
        "fastloss.torch.cross_entropy_inplace(h @ W.T)":
            step(lambda h, w: flt.cross_entropy_inplace(h @ w.T, t)),
        "fastloss.torch.linear_cross_entropy":
            step(lambda h, w: flt.linear_cross_entropy(h, w, t)),
    }
    if hasattr(F, "linear_cross_entropy"):
        steps["F.linear_cross_entropy (options=None)"] = step(
            lambda h, w: F.linear_cross_entropy(h, w, t))
        options = torch.nn.LinearCrossEntropyOptions()
        steps["F.linear_cross_entropy (chunked options)"] = step(
            lambda h, w: F.linear_cross_entropy(h, w, t, options=options))
    order = ["F.cross_entropy(h @ W.T)", "F.linear_cross_entropy (options=None)",
             "F.linear_cross_entropy (chunked options)", "fastloss.torch.cross_entropy(h @ W.T)",
             "fastloss.torch.cross_entropy_inplace(h @ W.T)",
             "fastloss.torch.linear_cross_entropy"]
    return {k: steps[k] for k in order if k in steps}, f"torch {torch.__version__}"


def _jax_steps(hidden, weight, target) -> tuple[dict, str]:
    import jax
    import jax.numpy as jnp

    from . import jax as flj

    h, w, t = jnp.asarray(hidden), jnp.asarray(weight), jnp.asarray(target)

    def step(loss_fn: Callable) -> Callable[[], float]:
        # compiled ahead of time, so that the first step (where the peak memory is measured)
        # does not include the compilation
        f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(h, w, t).compile()

        def run():
            loss, grads = f(h, w, t)
            jax.block_until_ready(grads)
            return float(loss), grads
        return run

    steps = {}
    try:
        import optax

        steps["optax softmax_cross_entropy_with_integer_labels(h @ W.T)"] = step(
            lambda h, w, t: optax.softmax_cross_entropy_with_integer_labels(h @ w.T, t).mean())
    except ImportError:
        pass
    steps["fastloss.jax.cross_entropy(h @ W.T)"] = step(
        lambda h, w, t: flj.cross_entropy(h @ w.T, t, reduction="mean"))
    steps["fastloss.jax.linear_cross_entropy"] = step(
        lambda h, w, t: flj.linear_cross_entropy(h, w, t))
    return steps, f"jax {jax.__version__} (jit)"


def _case_names(framework: str) -> list:
    """The implementations of ``framework`` installed here (names only: builds no inputs)."""
    try:
        if framework == "torch":
            import torch.nn.functional as F

            names = ["F.cross_entropy(h @ W.T)"]
            if hasattr(F, "linear_cross_entropy"):
                names += ["F.linear_cross_entropy (options=None)",
                          "F.linear_cross_entropy (chunked options)"]
            return names + ["fastloss.torch.cross_entropy(h @ W.T)",
                            "fastloss.torch.cross_entropy_inplace(h @ W.T)",
                            "fastloss.torch.linear_cross_entropy"]
        import jax  # noqa: F401

        names = []
        try:
            import optax  # noqa: F401

            names.append("optax softmax_cross_entropy_with_integer_labels(h @ W.T)")
        except ImportError:
            pass
        return names + ["fastloss.jax.cross_entropy(h @ W.T)",
                        "fastloss.jax.linear_cross_entropy"]
    except ImportError:
        return []


def _steps(framework: str, batch: int, vocab: int, threads: int) -> tuple:
    from . import set_num_threads

    set_num_threads(threads)
    hidden, weight, target = _inputs(batch, vocab)
    if framework == "torch":
        return _torch_steps(hidden, weight, target, threads)
    return _jax_steps(hidden, weight, target)


def _measure_memory(framework: str, impl: str, batch: int, vocab: int, threads: int) -> dict:
    """In a fresh process: the peak memory of one implementation's first step (nothing is
    retained from an earlier step, which a framework's memory pool would reuse without
    growing) and its loss."""
    steps, version = _steps(framework, batch, vocab, threads)
    out = []
    peak = peak_extra_memory(lambda: out.append(steps[impl]()) or out[-1])
    return {"framework": version, "peak": peak, "loss": out[-1][0]}


def _measure_times(framework: str, names: list, batch: int, vocab: int, threads: int,
                   repeat: int) -> dict:
    """In one process: a warm-up step of every implementation, then ``repeat`` rounds that
    run each once in turn (a load that comes and goes on a shared machine then spreads over
    all of them instead of landing on one): {implementation: times (ms)}."""
    steps, _ = _steps(framework, batch, vocab, threads)
    for name in names:
        steps[name]()
    times = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            times[name] += time_call(steps[name], 1, warmup=0)
    return times


def _child(what: str, *args) -> dict:
    return _measure_memory(*args) if what == "memory" else _measure_times(*args)


def run_frameworks(batch: int = 4096, vocab: int = 50257, threads: Optional[int] = None,
                   repeat: int = 2, progress: Callable[[str], None] = lambda msg: None):
    """Measure every available implementation: the peak memory of each in a fresh Python
    process (so that one's freed memory or pools do not flatter the next), then the times of
    each framework's implementations in one process, in rounds. ``(results, info)``."""
    import json
    import os
    import subprocess
    import sys

    from . import get_num_threads

    threads = threads or get_num_threads()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def child(*args):
        out = subprocess.run([sys.executable, "-m", "fastloss._bench_frameworks",
                              json.dumps(args)], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{args[:3]} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    results, ref_loss = [], None
    for framework in ("torch", "jax"):
        names = _case_names(framework)
        if not names:
            progress(f"{framework} is not installed: skipped")
            continue
        memory = {}
        for impl in names:
            progress(f"{framework}: {impl}: memory")
            memory[impl] = m = child("memory", framework, impl, batch, vocab, threads)
            ref_loss = m["loss"] if ref_loss is None else ref_loss
            if not math.isclose(m["loss"], ref_loss, rel_tol=1e-4):
                raise RuntimeError(f"{framework} {impl}: loss {m['loss']} differs from "
                                   f"{ref_loss}")
        progress(f"{framework}: times, {repeat} round(s)")
        times = child("times", framework, names, batch, vocab, threads, repeat)
        for impl in names:
            t, m = times[impl], memory[impl]
            results.append(FrameworkResult(m["framework"], impl, statistics.median(t) / 1e3,
                                           min(t) / 1e3, max(t) / 1e3, m["peak"], m["loss"]))
    info = {"batch": batch, "vocab": vocab, "hidden": HIDDEN, "threads": threads,
            "processor": _cpu_name(), "repeat": repeat}
    return results, info


def format_frameworks(results, info) -> str:
    head = (f"GPT-2 output layer training step on the CPU: hidden ({info['batch']}, "
            f"{info['hidden']}) @ weight ({info['vocab']}, {info['hidden']}).T, float32, "
            "cross-entropy, backward to d_hidden and d_weight; "
            f"{info['threads']} threads, {info['processor']}; time: median of {info['repeat']} "
            "round(s) of one step each, after a warm-up step; 'peak extra MB': resident memory "
            "added at the peak of a first step in a fresh process (the gradients included)\n")
    cols = ["framework", "implementation", "median s", "min..max s", "peak extra MB", "loss"]
    rows = [[r.framework, r.impl, f"{r.median_s:.2f}", f"{r.min_s:.2f}..{r.max_s:.2f}",
             "-" if r.peak_extra_bytes is None else f"{r.peak_extra_bytes / 1e6:.0f}",
             f"{r.loss:.6f}"] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c)
              for i, c in enumerate(cols)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return head + "\n".join([line(cols), sep] + [line(r) for r in rows])


def cmd_bench_frameworks(args) -> int:
    """``fastloss bench --frameworks`` (uses --batch, --vocab, --threads, --repeat, --json,
    --quiet; float32 only)."""
    import json
    import sys

    from .cli import _Progress

    if args.dtype != "float32":
        print("fastloss bench: error: --frameworks runs float32 only", file=sys.stderr)
        return 2
    with _Progress(args.quiet) as progress:
        results, info = run_frameworks(args.batch, args.vocab, args.threads, args.repeat,
                                       progress=progress)
    print(format_frameworks(results, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": [r.as_dict() for r in results]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # one measurement, for run_frameworks: JSON arguments, JSON result
    import json
    import sys

    print(json.dumps(_child(*json.loads(sys.argv[1]))))
