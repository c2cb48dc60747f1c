"""Benchmark machinery shared by ``fastloss bench`` and the pytest-benchmark suites in bench/.

A case is a workload (say cross-entropy loss+gradient on (4096, 50257) float32 logits); an
implementation is one library's way of computing it. Every implementation's output is checked
against fastloss's before it is timed, and every time is set against the machine's own
bandwidth floor, measured with the same threads on arrays of the same size.
"""

from __future__ import annotations

import importlib.util
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from . import _core, reference
from .classification import cross_entropy

__all__ = ["Result", "bandwidth_floor", "cross_entropy_case", "run_case", "run_kl_logits",
           "time_call"]


@dataclass
class Result:
    case: str
    impl: str
    median_ms: float
    min_ms: float
    max_ms: float
    bytes_moved: int
    floor_ms: float
    numpy_ms: Optional[float] = None
    peak_extra_bytes: Optional[int] = None
    note: str = ""
    times_ms: list = field(default_factory=list)

    @property
    def gbps(self) -> float:
        return self.bytes_moved / (self.median_ms * 1e-3) / 1e9

    @property
    def floor_ratio(self) -> float:
        return self.median_ms / self.floor_ms

    @property
    def speedup_vs_numpy(self) -> Optional[float]:
        return None if self.numpy_ms is None else self.numpy_ms / self.median_ms

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(gbps=self.gbps, floor_ratio=self.floor_ratio,
                 speedup_vs_numpy=self.speedup_vs_numpy)
        return d


def time_call(fn: Callable[[], object], repeat: int, warmup: int = 1,
              budget_s: Optional[float] = None) -> list:
    """Wall-clock times (ms) of ``repeat`` calls after ``warmup`` untimed ones; with
    ``budget_s``, fewer (at least one) once the timed calls have taken that many seconds, so
    a slow implementation on a large input costs seconds, not minutes."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and sum(times) >= budget_s * 1e3:
            break
    return times


def _recorder(results: list, moved: dict, floor_ms: dict) -> Callable[..., list]:
    """``add(case, impl, fn, repeat, warmup=1, note="")``: times ``fn`` (:func:`time_call`),
    appends its :class:`Result` for ``case`` (bytes moved and bandwidth floor from ``moved``
    and ``floor_ms``, peak extra memory from one more call) to ``results`` and returns the
    times (ms)."""

    def add(case, impl, fn, repeat_, warmup=1, note=""):
        times = time_call(fn, repeat_, warmup)
        results.append(Result(case, impl, statistics.median(times), min(times), max(times),
                              moved[case], floor_ms[case], note=note, times_ms=times,
                              peak_extra_bytes=peak_extra_memory(fn)))
        return times

    return add


def _numpy_times(add: Callable[..., list], make_impls: Callable[[], tuple], ref_loss: float,
                 repeat: int, progress: Callable[[str], None]) -> dict:
    """The plain-NumPy implementations of ``make_impls()``, checked against fastloss's loss
    ``ref_loss``, then timed with ``add``: {case: times (ms)}."""
    progress("NumPy")
    impls, label = make_impls()
    if not np.isclose(impls["loss"](), ref_loss, rtol=1e-4):
        raise RuntimeError("the NumPy implementation disagrees with fastloss")
    return {case: add(case, label, fn, repeat) for case, fn in impls.items()}


def _machine_info(threads: int, floor: dict, **case) -> dict:
    """The machine, the case's parameters and the measured bandwidths, for a report."""
    return {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "threads": threads,
        **case,
        "read_gbps": floor["read_gbps"],
        "read_write_gbps": floor["read_write_gbps"],
        "read_write_nt_gbps": floor["read_write_nt_gbps"],
        "isa": _core.active_isa(),
        "compiler": _core.compiler,
    }


def peak_extra_memory(fn: Callable[[], object]) -> Optional[int]:
    """Bytes of resident memory ``fn()`` added at its peak, over what was resident before
    (Linux: resets the high-water mark through /proc/self/clear_refs; None elsewhere). It counts
    every allocator, NumPy's, PyTorch's and XLA's alike; the result is kept alive until the peak
    is read, so it includes the outputs (e.g. a gradient array)."""

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise OSError(key)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS:")
        out = fn()
        peak = status("VmHWM:")
        del out
    except OSError:
        return None
    return max(peak - before, 0)


def _as_float32_bytes(a: np.ndarray) -> np.ndarray:
    """The bytes of a contiguous array seen as float32 (for measuring the floor of any dtype)."""
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return flat[: flat.size // 4 * 4].view(np.float32)


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.empty(n * dtype.itemsize + align, dtype=np.uint8)
    off = (-raw.__array_interface__["data"][0]) % align
    return raw[off : off + n * dtype.itemsize].view(dtype).reshape(shape)


def bandwidth_floor(nbytes: int, repeat: int = 5) -> dict:
    """The machine's streaming bandwidth (GB/s) on buffers of ``nbytes``, with the current
    fastloss thread count, best of ``repeat`` (the floor is what the machine can do): a read, a
    read + write with ordinary stores, and a read + write with non-temporal stores."""
    src = aligned_empty(max(nbytes // 4, 16), np.float32)
    dst = aligned_empty(src.shape, np.float32)
    src.fill(1.0)
    dst.fill(0.0)
    read = min(time_call(lambda: _core.stream_read(src), repeat))
    copy = min(time_call(lambda: _core.stream_copy(src, dst, False), repeat))
    copy_nt = min(time_call(lambda: _core.stream_copy(src, dst, True), repeat))
    return {"read_gbps": src.nbytes / (read * 1e-3) / 1e9,
            "read_write_gbps": 2 * src.nbytes / (copy * 1e-3) / 1e9,
            "read_write_nt_gbps": 2 * src.nbytes / (copy_nt * 1e-3) / 1e9}


def _numpy_impls(x: np.ndarray, t: np.ndarray):
    """Cross-entropy as a NumPy user writes it (stable, vectorised, in the input dtype); the
    float64 :mod:`fastloss.reference` is the accuracy baseline, not a speed one."""
    rows = np.arange(x.shape[0])

    def stats():
        m = x.max(axis=1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=1, keepdims=True)
        return m, e, s

    def loss():
        m, e, s = stats()
        return float(np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, t]))

    def loss_grad():
        m, e, s = stats()
        value = float(np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, t]))
        e /= s
        e[rows, t] -= 1
        e /= x.shape[0]
        return value, e

    return {"loss": loss, "loss+grad": loss_grad}, f"numpy {np.__version__}"


def _torch_impls(x: np.ndarray, t: np.ndarray, threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    if x.dtype.name == "bfloat16":  # NumPy has no bfloat16: hand over the bits
        xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    else:
        xt = torch.from_numpy(x)
    tt = torch.from_numpy(t)

    def loss():
        with torch.no_grad():
            return F.cross_entropy(xt, tt).item()

    def loss_grad():
        xg = xt.detach().requires_grad_(True)
        out = F.cross_entropy(xg, tt)
        out.backward()
        return out.item(), xg.grad.float().numpy()

    return {"loss": loss, "loss+grad": loss_grad}, f"torch {torch.__version__}"


def _jax_impls(x: np.ndarray, t: np.ndarray, threads: int):
    import jax
    import jax.numpy as jnp

    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)

    def ce(logits, labels):
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))

    f_loss = jax.jit(ce)
    f_grad = jax.jit(jax.value_and_grad(ce))
    xj, tj = jnp.asarray(x), jnp.asarray(t)

    def loss():
        return float(f_loss(xj, tj).block_until_ready())

    def loss_grad():
        v, g = f_grad(xj, tj)
        g.block_until_ready()
        return float(v), np.asarray(g)

    return {"loss": loss, "loss+grad": loss_grad}, f"jax {jax.__version__} (jit)"


def cross_entropy_case(batch: int, vocab: int, dtype: str = "float32", seed: int = 0):
    """Logits of N(0, 3^2) and uniform random targets, as saved LM logits look."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((batch, vocab), dtype=np.float32) * 3).astype(_np_dtype(dtype))
    t = rng.integers(0, vocab, batch, dtype=np.int64)
    return x, t


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def run_case(batch: int, vocab: int, dtype: str = "float32", threads: Optional[int] = None,
             repeat: int = 5, numpy_repeat: int = 3, others: bool = True,
             progress: Callable[[str], None] = lambda s: None) -> tuple:
    """Time cross-entropy loss and loss+grad for fastloss, plain NumPy and, when importable,
    PyTorch and JAX. Returns (results, machine info)."""
    from . import get_num_threads, set_num_threads

    if threads:
        set_num_threads(threads)
    threads = get_num_threads()
    progress(f"allocating ({batch}, {vocab}) {dtype} logits")
    x, t = cross_entropy_case(batch, vocab, dtype)
    nbytes = x.nbytes
    progress("measuring the bandwidth floor")
    floor = bandwidth_floor(nbytes)
    floor_ms = {"loss": nbytes / floor["read_gbps"] / 1e6,
                "loss+grad": 2 * nbytes / floor["read_write_gbps"] / 1e6}
    moved = {"loss": nbytes, "loss+grad": 2 * nbytes}
    results = []
    add = _recorder(results, moved, floor_ms)

    ref_loss = float(cross_entropy(x, t))
    grad_buf = np.empty_like(x)
    cross_entropy(x, t, return_grad=True, grad_out=grad_buf)  # touch it; also the check value

    progress("fastloss")
    add("loss", "fastloss", lambda: cross_entropy(x, t), repeat)
    add("loss+grad", "fastloss", lambda: cross_entropy(x, t, return_grad=True, grad_out=grad_buf),
        repeat, note="preallocated grad_out")
    add("loss+grad", "fastloss (fresh)", lambda: cross_entropy(x, t, return_grad=True), repeat,
        note="new gradient array per call")
    # issue 5: the LLM-training options in the same pass (PaLM z-loss, label smoothing)
    zkw = {"z_loss": 1e-4, "label_smoothing": 0.1}
    add("loss", "fastloss z-loss+smoothing", lambda: cross_entropy(x, t, **zkw), repeat,
        note="z_loss=1e-4, label_smoothing=0.1")
    zgrad = np.empty_like(x)  # (grad_buf keeps the plain gradient: the check value below)
    zgrad.fill(0)
    add("loss+grad", "fastloss z-loss+smoothing",
        lambda: cross_entropy(x, t, return_grad=True, grad_out=zgrad, **zkw), repeat,
        note="z_loss=1e-4, label_smoothing=0.1")
    zgrad = None  # (freed before the other implementations run)
    if x.dtype.itemsize > 2:
        work = x.copy()
        add("loss+grad", "fastloss (in place)",
            lambda: cross_entropy(work, t, return_grad=True, grad_out=work), repeat,
            note="grad_out=logits")

    np_times = {}
    if numpy_repeat and x.dtype.itemsize > 2:
        np_times = _numpy_times(add, lambda: _numpy_impls(x, t), ref_loss, numpy_repeat,
                                progress)

    if others:
        for mod, make in (("torch", _torch_impls), ("jax", _jax_impls)):
            wide = dtype in ("float32", "float64")
            if importlib.util.find_spec(mod) is None or (mod == "jax" and not wide):
                continue
            progress(mod)
            impls, label = make(x, t, threads)
            check = impls["loss"]()
            _, check_grad = impls["loss+grad"]()
            # (16-bit: PyTorch computes the loss in the input dtype, so only ~3 digits agree)
            rtol, atol = (1e-4, 1e-6 / batch) if wide else (2e-2, 2e-2 / batch)
            if not np.isclose(check, ref_loss, rtol=rtol) or not np.allclose(
                    check_grad, grad_buf.astype(np.float32), rtol=rtol * 10, atol=atol):
                raise RuntimeError(f"{label} disagrees with fastloss: loss {check} vs {ref_loss}")
            for case, fn in impls.items():
                add(case, label, fn, repeat, warmup=2,
                    note="XLA CPU, its own threads" if mod == "jax" else "")

    for r in results:
        ms = np_times.get(r.case) if "z-loss" not in r.impl else None
        r.numpy_ms = statistics.median(ms) if ms else None
    return results, _machine_info(threads, floor, batch=batch, vocab=vocab, dtype=dtype)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def vocab_sweep(vocabs=(1024, 4096, 16384, 50257, 131072, 262144), elements: int = 1 << 26,
                dtype: str = "float32", repeat: int = 3, others: bool = True, numpy: bool = True,
                progress: Callable[[str], None] = lambda s: None) -> dict:
    """Loss-only throughput against vocabulary size, about ``elements`` logits per case, for
    fastloss, plain NumPy and PyTorch/JAX when importable: the loss case of
    :func:`fastloss.benchmark_sweep.run_class_sweep`, as ``{"info": ..., "results": [...]}``."""
    from .benchmark_sweep import run_class_sweep

    peers = (("numpy",) if numpy else ()) + (("torch", "jax") if others else ())
    results, info = run_class_sweep(vocabs, elements, dtype, repeat=repeat, peer_repeat=repeat,
                                    peers=peers, cases=("loss",), progress=progress)
    return {"info": info, "results": [r.as_dict() for r in results]}


def plot_sweep(sweep: dict, path: str, title: str) -> None:
    """Throughput of :func:`vocab_sweep` against vocabulary size, one line per implementation,
    the floor dashed."""
    from .benchmark_sweep import plot_class_sweep

    plot_class_sweep(sweep, path, title, metric="gbps")


POINTWISE = {  # name: (fastloss function name, keyword arguments, target kind)
    "mse_loss": ("mse_loss", {}, "real"),
    "l1_loss": ("l1_loss", {}, "real"),
    "huber_loss": ("huber_loss", {"delta": 1.0}, "real"),
    "smooth_l1_loss": ("smooth_l1_loss", {"beta": 1.0}, "real"),
    "bce_with_logits": ("binary_cross_entropy_with_logits", {}, "binary"),
    "binary_cross_entropy": ("binary_cross_entropy", {}, "binary"),
    "sigmoid_focal_loss": ("sigmoid_focal_loss", {}, "binary"),
    "hinge_loss": ("hinge_loss", {}, "binary"),
}
# issue 16: PyTorch's missing elementwise losses, log-cosh, generalized KL (fastloss/pairs.py,
# multilabel.py). Target kinds: "signs" (+-1 labels); "real+var" (a third array, variances >=
# 0); "pair+signs" (a second prediction array and +-1 labels). Both gradients of the two-input
# losses go into preallocated arrays (grad_out as a tuple), as for the others.
POINTWISE.update({
    "poisson_nll_loss": ("poisson_nll_loss", {}, "binary"),
    "gaussian_nll_loss": ("gaussian_nll_loss", {}, "real+var"),
    "margin_ranking_loss": ("margin_ranking_loss", {}, "pair+signs"),
    "hinge_embedding_loss": ("hinge_embedding_loss", {}, "signs"),
    "soft_margin_loss": ("soft_margin_loss", {}, "signs"),
    "multilabel_soft_margin_loss": ("multilabel_soft_margin_loss", {}, "binary"),
    "log_cosh_loss": ("log_cosh_loss", {}, "real"),
    "generalized_kl_div": ("generalized_kl_div", {}, "binary"),
})


def run_pointwise(n: int = 50_000_000, threads: Optional[int] = None, repeat: int = 5,
                  numpy_repeat: int = 1, names=tuple(POINTWISE),
                  progress: Callable[[str], None] = lambda s: None) -> tuple:
    """Time every pointwise loss on n float32 predictions and targets, loss and loss+grad,
    against the float64 NumPy reference. Bytes moved: loss reads both arrays; loss+grad also
    writes the gradient."""
    import fastloss as fl

    if threads:
        fl.set_num_threads(threads)
    rng = np.random.default_rng(0)
    progress(f"allocating {n} float32 elements")
    x = rng.standard_normal(n, dtype=np.float32)
    probs = (1 / (1 + np.exp(-x))).astype(np.float32)
    real = rng.standard_normal(n, dtype=np.float32)
    binary = (rng.random(n, dtype=np.float32) > 0.5).astype(np.float32)
    grad = np.empty_like(x)
    grad.fill(0)
    grad2 = None  # (the second gradient of the two-input losses, made when first needed)
    progress("measuring the bandwidth floor")
    floor = bandwidth_floor(2 * x.nbytes)
    results, todo = [], []
    extra = {}  # (issue 16) the operands of the pair losses, made when first needed
    for name in names:
        fname, kw, kind = POINTWISE[name]
        f, ref = getattr(fl, fname), getattr(reference, fname)
        pred = probs if name == "binary_cross_entropy" else x
        tgt = real if kind == "real" else binary
        # issue 16: more operands (three arrays read, two gradients written for the pairs)
        args, reads, writes, gkw = (pred, tgt), 2, 1, {"grad_out": grad}
        if kind in ("signs", "pair+signs") and "signs" not in extra:
            extra["signs"] = binary * np.float32(2) - np.float32(1)
        if kind in ("real+var", "pair+signs") and grad2 is None:
            grad2 = np.zeros_like(x)
        if kind == "signs":
            args = (pred, extra["signs"])
        elif kind == "real+var":
            if "var" not in extra:
                extra["var"] = np.abs(real) + np.float32(0.1)
            args, reads, writes = (pred, real, extra["var"]), 3, 2
            gkw = {"grad_out": (grad, grad2)}
        elif kind == "pair+signs":
            args, reads, writes = (pred, real, extra["signs"]), 3, 2
            gkw = {"grad_out": (grad, grad2)}
        for case in ("loss", "loss+grad"):
            g = case == "loss+grad"
            moved = x.nbytes * (reads + (writes if g else 0))
            fast = (lambda f=f, a=args, k={**kw, **gkw}: f(*a, return_grad=True, **k)) if g else \
                (lambda f=f, a=args, k=kw: f(*a, **k))
            slow = (lambda r=ref, a=args, k=kw: r(*a, return_grad=True, **k)) if g else \
                (lambda r=ref, a=args, k=kw: r(*a, **k))
            todo.append((name, f"{name} {case}", case, moved, fast, slow))
    # fastloss first, every case, with the floor again in each round (the best measurement is
    # kept: measured right after the arrays were allocated and filled it has come out at half
    # the machine's bandwidth), then the NumPy reference, whose allocations of gigabytes
    # disturb whatever runs next on this kind of machine.
    # The cases are timed round-robin (one call of each per round, a floor measurement in
    # every round), not one case after another: this kind of machine's bandwidth drifts by up
    # to 2x over tens of seconds, and a case timed through a slow spell alone would look that
    # much worse than its neighbours.
    times = {label: [] for _, label, *_ in todo}
    for name, label, case, moved, fast, slow in todo:
        progress(f"{label} (warm-up)")
        fast()
    for r in range(repeat):
        progress(f"round {r + 1} of {repeat}")
        for name, label, case, moved, fast, slow in todo:
            times[label] += time_call(fast, 1, warmup=0)
        floor = {k: max(v, floor[k]) for k, v in bandwidth_floor(2 * x.nbytes, 1).items()}
    for name, label, case, moved, fast, slow in todo:
        progress(f"{label} (NumPy)")
        np_ms = statistics.median(time_call(slow, numpy_repeat, warmup=0))
        t = times[label]
        floor_case = moved / floor["read_gbps" if case == "loss" else "read_write_gbps"] / 1e6
        results.append(Result(label, "fastloss", statistics.median(t), min(t), max(t), moved,
                              floor_case, numpy_ms=np_ms, times_ms=t))
    info = {"n": n, "threads": fl.get_num_threads(), "processor": _cpu_name(),
            "isa": _core.active_isa(), **floor}
    return results, info


def _numpy_kl_impls(s: np.ndarray, t: np.ndarray, temperature: float):
    """Distillation KL as a NumPy user writes it (stable log-softmax of both, in the input
    dtype, batchmean)."""
    T, n = temperature, s.shape[0]

    def log_softmax(x):
        z = x / T
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        return z

    def value(logp, logq):
        q = np.exp(logq)
        return float(T * T * np.sum(q * (logq - logp), axis=1).mean()), q

    def loss():
        return value(log_softmax(s), log_softmax(t))[0]

    def loss_grad():
        logp = log_softmax(s)
        v, q = value(logp, log_softmax(t))
        g = np.exp(logp, out=logp)
        g -= q
        g *= T / n
        return v, g

    return {"loss": loss, "loss+grad": loss_grad}, f"numpy {np.__version__}"


def _torch_kl_impls(s: np.ndarray, t: np.ndarray, temperature: float, threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    st, tt, T = torch.from_numpy(s), torch.from_numpy(t), temperature

    def kl(x):
        return T * T * F.kl_div(F.log_softmax(x / T, dim=-1), F.log_softmax(tt / T, dim=-1),
                                reduction="batchmean", log_target=True)

    def loss():
        with torch.no_grad():
            return kl(st).item()

    def loss_grad():
        xg = st.detach().requires_grad_(True)
        out = kl(xg)
        out.backward()
        return out.item(), xg.grad.numpy()

    return {"loss": loss, "loss+grad": loss_grad}, f"torch {torch.__version__}"


def run_kl_logits(batch: int = 4096, vocab: int = 50257, threads: Optional[int] = None,
                  repeat: int = 5, *, temperature: float = 1.0, numpy_repeat: int = 3,
                  others: bool = True, progress: Callable[[str], None] = lambda s: None) -> tuple:
    """Time kl_div_with_logits (distillation, "batchmean") on (batch, vocab) float32 student
    and teacher logits of N(0, 3^2): loss and loss+grad for fastloss, plain NumPy and, when
    importable, PyTorch. Bytes moved: the loss reads both arrays, loss+grad also writes the
    gradient. Returns (results, machine info), as :func:`run_case`."""
    from . import get_num_threads, kl_div_with_logits, set_num_threads

    if threads:
        set_num_threads(threads)
    threads = get_num_threads()
    progress(f"allocating 2 x ({batch}, {vocab}) float32 logits")
    rng = np.random.default_rng(0)
    s = rng.standard_normal((batch, vocab), dtype=np.float32) * 3
    t = rng.standard_normal((batch, vocab), dtype=np.float32) * 3
    nbytes = s.nbytes
    progress("measuring the bandwidth floor")
    floor = bandwidth_floor(nbytes)
    moved = {"loss": 2 * nbytes, "loss+grad": 3 * nbytes}
    floor_ms = {"loss": moved["loss"] / floor["read_gbps"] / 1e6,
                "loss+grad": moved["loss+grad"] / floor["read_write_gbps"] / 1e6}
    results = []
    add = _recorder(results, moved, floor_ms)

    kw = {"temperature": temperature}
    ref_loss = float(kl_div_with_logits(s, t, **kw))
    grad_buf = np.empty_like(s)
    kl_div_with_logits(s, t, return_grad=True, grad_out=grad_buf, **kw)  # touch it; check value

    progress("fastloss")
    add("loss", "fastloss", lambda: kl_div_with_logits(s, t, **kw), repeat)
    add("loss+grad", "fastloss",
        lambda: kl_div_with_logits(s, t, return_grad=True, grad_out=grad_buf, **kw), repeat,
        note="preallocated grad_out")
    add("loss+grad", "fastloss (fresh)", lambda: kl_div_with_logits(s, t, return_grad=True, **kw),
        repeat, note="new gradient array per call")

    np_times = {}
    if numpy_repeat:
        np_times = _numpy_times(add, lambda: _numpy_kl_impls(s, t, temperature), ref_loss,
                                numpy_repeat, progress)

    if others and importlib.util.find_spec("torch") is not None:
        progress("torch")
        impls, label = _torch_kl_impls(s, t, temperature, threads)
        check = impls["loss"]()
        _, check_grad = impls["loss+grad"]()
        if not np.isclose(check, ref_loss, rtol=1e-4) or not np.allclose(
                check_grad, grad_buf, rtol=1e-3, atol=1e-6 / batch):
            raise RuntimeError(f"{label} disagrees with fastloss: loss {check} vs {ref_loss}")
        for case, fn in impls.items():
            add(case, label, fn, repeat, warmup=2)

    for r in results:
        ms = np_times.get(r.case)
        r.numpy_ms = statistics.median(ms) if ms else None
    return results, _machine_info(threads, floor, batch=batch, vocab=vocab, dtype="float32",
                                  temperature=temperature)
