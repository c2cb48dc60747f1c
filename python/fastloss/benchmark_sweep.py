"""The class-count sweep of ``fastloss bench --sweep``: softmax cross-entropy with class-index
targets, loss and loss+grad, over 2 to 128,256 classes, for fastloss, plain NumPy and, when
installed, PyTorch and JAX, each time set against the machine's bandwidth floor.

Every point holds about the same number of logits (rows = elements // classes), so the bytes
of logits are the same across the sweep and only the row length changes: narrow rows make
the per-row work (max, log, target pick) count, wide ones make streaming bandwidth count.
The implementations are those of :mod:`fastloss.benchmark`; each one's loss and a sample of
its gradient rows are checked against fastloss's at every point before it is timed.
"""

from __future__ import annotations

import importlib.util
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .benchmark import (Result, _jax_impls, _machine_info, _numpy_impls, _torch_impls,
                        aligned_empty, bandwidth_floor, cross_entropy_case, time_call)
from .classification import cross_entropy

__all__ = ["CLASSES", "ELEMENTS", "PEERS", "SweepResult", "format_class_sweep",
           "plot_class_sweep", "run_class_sweep", "sweep_impls", "sweep_inputs"]

CLASSES = (2, 10, 100, 1000, 32000, 50257, 128256)  # the last three: Llama 2, GPT-2, Llama 3
ELEMENTS = 200_000_000  # logits per point: 800 MB of float32, far beyond any cache
PEERS = ("numpy", "torch", "jax")
CASES = ("loss", "loss+grad")


@dataclass
class SweepResult(Result):
    """A :class:`~fastloss.benchmark.Result` at one point of the sweep, with the loss the
    implementation returned and its speed-up over each other library at the same point."""

    library: str = ""
    classes: int = 0
    rows: int = 0
    loss: Optional[float] = None
    speedups: dict = field(default_factory=dict)  # {library: its time / this time}


def sweep_inputs(elements: int, classes=CLASSES, dtype: str = "float32", seed: int = 0) -> list:
    """[(classes, logits, targets)]: ``max(elements // classes, 1)`` rows of N(0, 3^2) logits
    and uniform int64 targets per class count. The logits of every point are views of one
    buffer (generating 200M normals once, not seven times, and holding 800 MB, not 5.6 GB)."""
    shapes = [(max(elements // c, 1), c) for c in classes]
    buf = cross_entropy_case(1, max(r * c for r, c in shapes), dtype, seed)[0].reshape(-1)
    return [(c, buf[: r * c].reshape(r, c),
             np.random.default_rng((seed, c)).integers(0, c, r, dtype=np.int64))
            for r, c in shapes]


def sweep_impls(library: str, x: np.ndarray, t: np.ndarray, threads: int,
                grad_out: Optional[np.ndarray] = None) -> tuple:
    """({"loss": fn, "loss+grad": fn}, label) of ``library`` on logits ``x`` and targets ``t``;
    fastloss writes its gradient into ``grad_out`` when given (the others allocate theirs)."""
    if library == "fastloss":
        return {"loss": lambda: cross_entropy(x, t),
                "loss+grad": lambda: cross_entropy(x, t, return_grad=True,
                                                   grad_out=grad_out)}, "fastloss"
    if library == "numpy":
        return _numpy_impls(x, t)
    if library == "torch":
        return _torch_impls(x, t, threads)
    if library == "jax":
        return _jax_impls(x, t, threads)
    raise ValueError(f"library must be fastloss, numpy, torch or jax, not {library!r}")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _skip_reason(library: str, dtype: str) -> Optional[str]:
    """Why ``library`` is left out of a sweep in ``dtype``, or None (as in run_case: plain
    NumPy is timed on 32- and 64-bit floats, JAX on float32 and float64)."""
    if library in ("torch", "jax") and not _installed(library):
        return "not installed"
    if (library == "numpy" and dtype in ("float16", "bfloat16")) or (
            library == "jax" and dtype not in ("float32", "float64")):
        return f"not timed on {dtype}"
    return None


def _sample_rows(rows: int) -> np.ndarray:
    # the first, the last and evenly spaced rows: a layout or scaling mistake shows on any of
    # them, and comparing 1024 rows costs nothing where 100M would cost seconds per point
    return np.unique(np.linspace(0, rows - 1, min(rows, 1024)).astype(np.int64))


class _Checker:
    """Fastloss's loss and a sample of its gradient rows at every point, and the check of
    another library's outputs against them."""

    def __init__(self, dtype: str):
        wide = dtype in ("float32", "float64")
        # (16-bit: PyTorch computes the loss in the input dtype, so only ~3 digits agree)
        self.rtol, self.atol = (1e-4, 1e-6) if wide else (2e-2, 2e-2)
        self.ref: dict = {}

    def __call__(self, library: str, label: str, classes: int, case: str, out) -> float:
        """The loss in ``out`` (a loss, or (loss, gradient)); fastloss's are kept, any other
        library's are compared with them (RuntimeError when they disagree)."""
        loss, grad = (float(out[0]), out[1]) if case == "loss+grad" else (float(out), None)
        rows = None
        if grad is not None:
            rows = grad.shape[0]
            grad = np.asarray(grad[_sample_rows(rows)], dtype=np.float32)
        if library == "fastloss":
            self.ref[classes, case] = loss, grad
            return loss
        ref_loss, ref_grad = self.ref[classes, case]
        ok = bool(np.isclose(loss, ref_loss, rtol=self.rtol))
        if grad is not None:
            # entries are (p - onehot) / rows, so the absolute tolerance scales with 1 / rows
            ok = ok and np.allclose(grad, ref_grad, rtol=self.rtol * 10, atol=self.atol / rows)
        if not ok:
            raise RuntimeError(f"{label} disagrees with fastloss at {classes} classes ({case}): "
                               f"loss {loss} vs {ref_loss}")
        return loss


def run_class_sweep(classes=CLASSES, elements: int = ELEMENTS, dtype: str = "float32",
                    threads: Optional[int] = None, repeat: int = 5, peer_repeat: int = 3,
                    peers=PEERS, cases=CASES, budget_s: float = 3.0,
                    progress: Callable[[str], None] = lambda s: None) -> tuple:
    """Time ``cases`` of cross-entropy at every class count in ``classes`` (about ``elements``
    logits each) for fastloss and the ``peers`` that are installed. Returns (results, info),
    as :func:`fastloss.benchmark.run_case`: a :class:`SweepResult` per library, class count
    and case, and the machine, the floor and the libraries left out (``info["skipped"]``).

    Each implementation is called once untimed at each point (that call is checked against
    fastloss's and is the warm-up, JAX's compilation included), then timed ``repeat`` times
    (fastloss) or ``peer_repeat`` times (the others), fewer once the timed calls of a case
    have taken ``budget_s`` seconds, so that a slow library at 200M logits costs seconds.
    A library runs over every point before the next one starts: PyTorch's and XLA's worker
    threads keep spinning for a while after a call and would slow whatever runs next.

    Bytes moved: the loss reads the logits and the int64 targets (as many bytes as the logits
    at 2 classes), loss+grad also writes a gradient the size of the logits. The floor is
    :func:`~fastloss.benchmark.bandwidth_floor` on a buffer the size of the largest logits,
    measured before fastloss's runs at every point, the best of all: on a shared machine one
    measurement can catch a busy moment, and the floor is what the machine can do."""
    from . import get_num_threads, set_num_threads

    if threads:
        set_num_threads(threads)
    threads = get_num_threads()
    skipped = {lib: why for lib in peers if (why := _skip_reason(lib, dtype))}
    libraries = ["fastloss"] + [lib for lib in peers if lib not in skipped]
    progress(f"generating {elements:,} {dtype} logits")
    points = sweep_inputs(elements, classes, dtype)
    biggest = max(x.nbytes for _, x, _ in points)
    floor: dict = {}
    grad_buf = None
    if "loss+grad" in cases:
        grad_buf = aligned_empty(biggest // points[0][1].itemsize, points[0][1].dtype)
        grad_buf.fill(0)  # first-touched here, not in fastloss's first timed call
    check = _Checker(dtype)
    results = []
    for lib in libraries:
        for c, x, t in points:
            if lib == "fastloss":
                progress(f"measuring the bandwidth floor ({c} classes next)")
                floor = {k: max(v, floor.get(k, 0.0))
                         for k, v in bandwidth_floor(biggest, 3).items()}
            progress(f"{lib}, {c} classes ({x.shape[0]:,} rows)")
            grad_out = None if grad_buf is None else grad_buf[: x.size].reshape(x.shape)
            impls, label = sweep_impls(lib, x, t, threads, grad_out)
            for case in cases:
                loss = check(lib, label, c, case, impls[case]())
                times = time_call(impls[case], repeat if lib == "fastloss" else peer_repeat,
                                  warmup=0, budget_s=budget_s)
                moved = x.nbytes + t.nbytes + (x.nbytes if case == "loss+grad" else 0)
                results.append(SweepResult(
                    case, label, statistics.median(times), min(times), max(times), moved,
                    0.0, times_ms=times, library=lib, classes=c, rows=x.shape[0], loss=loss))
            del impls  # (JAX's copy of the logits goes before the next point's)
    point_ms: dict = {}
    for r in results:
        point_ms.setdefault((r.classes, r.case), {})[r.library] = r.median_ms
    for r in results:
        bw = floor["read_gbps" if r.case == "loss" else "read_write_gbps"]
        r.floor_ms = r.bytes_moved / bw / 1e6
        ms = point_ms[r.classes, r.case]
        r.speedups = {lib: t / r.median_ms for lib, t in ms.items() if lib != r.library}
        r.numpy_ms = ms.get("numpy")
    info = _machine_info(threads, floor, elements=elements, classes=list(classes), dtype=dtype,
                         repeat=repeat, peer_repeat=peer_repeat, budget_s=budget_s,
                         libraries=libraries, skipped=skipped)
    return results, info


def _ms(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.3f}"  # (tiny smoke-test sizes take microseconds)


def _times(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def format_class_sweep(results, info) -> str:
    """The sweep as a plain-text table, one row per class count, case and library."""
    peers = [lib for lib in info["libraries"] if lib != "fastloss"]
    skipped = "".join(f"; {lib} skipped ({why})" for lib, why in info["skipped"].items())
    head = (f"fastloss bench --sweep: cross-entropy, class-index targets, {info['dtype']}, "
            f"about {info['elements']:,} logits per point (rows = elements // classes), "
            f"{info['threads']} threads, {info['isa']} kernels, {info['processor']}\n"
            f"bandwidth floor (best of {len(info['classes'])} measurements, one before each "
            f"point): read {info['read_gbps']:.1f} GB/s, read+write "
            f"{info['read_write_gbps']:.1f} GB/s; bytes moved: logits and int64 targets read, "
            "loss+grad also writes the gradient; 'x floor' = time / (bytes moved / floor "
            "bandwidth); 'vs X' = X's time / this row's time\n"
            f"timings: median of up to {info['repeat']} timed runs for fastloss, "
            f"{info['peer_repeat']} for the others (fewer once a case has run "
            f"{info['budget_s']:g} s), each after an untimed call checked against fastloss; "
            "fastloss writes its gradient into a preallocated array, the others allocate it; "
            f"JAX: jit, compilation excluded, XLA's own threads{skipped}\n")
    cols = ["classes", "rows", "case", "implementation", "median ms", "min..max ms", "runs",
            "GB/s", "x floor"] + [f"vs {lib}" for lib in peers]
    rows = [[f"{r.classes:,}", f"{r.rows:,}", r.case, r.impl, _ms(r.median_ms),
             f"{_ms(r.min_ms)}..{_ms(r.max_ms)}", str(len(r.times_ms)), f"{r.gbps:.1f}",
             f"{r.floor_ratio:.2f}"] + [_times(r.speedups.get(lib)) for lib in peers]
            for r in sorted(results, key=lambda r: (r.classes, CASES.index(r.case)))]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return head + "\n".join([line(cols), sep] + [line(r) for r in rows])


def plot_class_sweep(sweep: dict, path: str, title: str, metric: str = "median_ms") -> None:
    """One panel per case of ``sweep`` (``{"info": ..., "results": [SweepResult.as_dict()]}``,
    as ``--json`` writes it): ``metric`` ("median_ms", "floor_ratio" or "gbps") against the
    class count, a line per implementation, the bandwidth floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = sweep["results"]
    cases = [c for c in CASES if any(r["case"] == c for r in results)]
    fig, axes = plt.subplots(1, len(cases), figsize=(6.5 * len(cases), 4.8), squeeze=False)
    for ax, case in zip(axes[0], cases):
        rs = [r for r in results if r["case"] == case]
        for impl in dict.fromkeys(r["impl"] for r in rs):
            pts = sorted((r["classes"], r[metric]) for r in rs if r["impl"] == impl)
            ax.plot(*zip(*pts), marker="o", label=impl)
        if metric == "median_ms":  # (the floor's time grows where the targets add bytes)
            ax.plot(*zip(*sorted({(r["classes"], r["floor_ms"]) for r in rs})), "k--",
                    label="bandwidth floor")
        else:
            bw = sweep["info"]["read_gbps" if case == "loss" else "read_write_gbps"]
            ax.axhline(1.0 if metric == "floor_ratio" else bw, color="k", linestyle="--",
                       label="bandwidth floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # ticks at the swept counts, not powers of ten; slanted, as 32,000 and 50,257 sit close
        ticks = sorted({r["classes"] for r in rs})
        ax.set_xticks(ticks, [f"{c:,}" for c in ticks], rotation=45)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("classes per row (same number of logits at every point)")
        ax.set_ylabel({"median_ms": "median time (ms)", "floor_ratio": "time / floor time",
                       "gbps": "bytes moved per second (GB/s)"}[metric])
        ax.set_title(case)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
