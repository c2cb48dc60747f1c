"""The ``fastloss`` command line: ``fastloss bench`` and ``fastloss eval``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Optional, Sequence


class _Progress:
    """Progress lines on stderr: a rich spinner when rich is installed, plain lines otherwise."""

    def __init__(self, quiet: bool):
        self.quiet, self.status = quiet, None
        if not quiet:
            try:
                from rich.console import Console

                self.status = Console(stderr=True).status("fastloss bench")
            except ImportError:
                pass

    def __enter__(self):
        if self.status:
            self.status.__enter__()
        return self

    def __exit__(self, *exc):
        if self.status:
            self.status.__exit__(*exc)

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        if self.status:
            self.status.update(f"fastloss bench: {msg}")
        else:
            print(f"  ... {msg}", file=sys.stderr, flush=True)


def _fmt(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_table(results, info, what: str = "cross-entropy",
                 moves: str = "loss moves the logits once, loss+grad reads them and writes "
                              "the gradient") -> str:
    """A plain-text table (also what the README shows)."""
    head = (f"fastloss bench: {what} ({info['batch']}, {info['vocab']}) {info['dtype']}, "
            f"{info['threads']} threads, {info['isa']} kernels, {info['processor']}\n"
            f"bandwidth floor: read {info['read_gbps']:.1f} GB/s, read+write "
            f"{info['read_write_gbps']:.1f} GB/s ({info['read_write_nt_gbps']:.1f} GB/s with "
            f"non-temporal stores); 'x floor' = time / (bytes moved / floor bandwidth); {moves}\n"
            "timings: outputs preallocated except rows marked 'fresh' (new pages are "
            "first-touched in the timed call)\n")
    cols = ["case", "implementation", "median ms", "min..max ms", "GB/s", "x floor", "vs numpy",
            "peak extra MB", "note"]
    rows = [[r.case, r.impl, f"{r.median_ms:.1f}", f"{r.min_ms:.1f}..{r.max_ms:.1f}",
             f"{r.gbps:.1f}", f"{r.floor_ratio:.2f}", _fmt(r.speedup_vs_numpy, ".1f") + ("x" if r.speedup_vs_numpy else ""),
             _fmt(None if r.peak_extra_bytes is None else r.peak_extra_bytes / 1e6, ".0f"),
             r.note] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return head + "\n".join([line(cols), sep] + [line(r) for r in rows])


def format_pointwise(results, info) -> str:
    head = (f"pointwise losses: {info['n']:,} float32 predictions and targets, {info['threads']} "
            f"threads, {info['isa']} kernels, {info['processor']}; floor: read "
            f"{info['read_gbps']:.1f} GB/s, read+write {info['read_write_gbps']:.1f} GB/s; "
            "'vs numpy' against the float64 NumPy reference\n")
    cols = ["case", "median ms", "min..max ms", "GB/s", "x floor", "numpy ms", "vs numpy"]
    rows = [[r.case, f"{r.median_ms:.1f}", f"{r.min_ms:.1f}..{r.max_ms:.1f}", f"{r.gbps:.1f}",
             f"{r.floor_ratio:.2f}", f"{r.numpy_ms:.0f}", f"{r.speedup_vs_numpy:.0f}x"]
            for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return head + "\n".join([line(cols), sep] + [line(r) for r in rows])


def cmd_bench(args) -> int:
    if args.sweep:
        return cmd_bench_sweep(args)
    if args.frameworks:  # (a separate benchmark: python/fastloss/_bench_frameworks.py)
        from ._bench_frameworks import cmd_bench_frameworks

        return cmd_bench_frameworks(args)
    from .benchmark import plot_sweep, run_case, vocab_sweep

    with _Progress(args.quiet) as progress:
        results, info = run_case(args.batch, args.vocab, args.dtype, args.threads, args.repeat,
                                 numpy_repeat=0 if args.no_numpy else args.repeat,
                                 others=not args.no_others, progress=progress)
        sweep = None
        if args.plot:
            sweep = vocab_sweep(dtype=args.dtype, others=not args.no_others,
                                numpy=not args.no_numpy, progress=progress)
    print(format_table(results, info))
    from .benchmark import run_kl_logits

    with _Progress(args.quiet) as progress:
        distill = run_kl_logits(args.batch, args.vocab, args.threads, args.repeat,
                                numpy_repeat=0 if args.no_numpy else 1,
                                others=not args.no_others, progress=progress)
    print()
    print(format_table(*distill, what="kl_div_with_logits (distillation, T=1, 'batchmean')",
                       moves="loss reads student and teacher logits, loss+grad also writes "
                             "the student gradient"))
    pointwise = None
    if args.pointwise:
        from .benchmark import run_pointwise

        with _Progress(args.quiet) as progress:
            pointwise = run_pointwise(threads=args.threads, repeat=args.repeat, progress=progress)
        print()
        print(format_pointwise(*pointwise))
    if args.plot:
        plot_sweep(sweep, args.plot, f"cross-entropy loss, {args.dtype}, {info['threads']} "
                                     f"threads, {info['processor']}")
        print(f"wrote {args.plot}")
    if args.json:
        from ._config import environment

        with open(args.json, "w") as f:
            json.dump({"environment": environment(),
                       "info": info, "results": [r.as_dict() for r in results],
                       "vocab_sweep": sweep,
                       "kl_div_with_logits": {"info": distill[1],
                                              "results": [r.as_dict() for r in distill[0]]},
                       "pointwise": None if pointwise is None else {
                           "info": pointwise[1],
                           "results": [r.as_dict() for r in pointwise[0]]}}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_bench_sweep(args) -> int:
    """``fastloss bench --sweep``: cross-entropy over class counts 2..128,256 at a fixed number
    of logits, for fastloss and its peers (fastloss.benchmark_sweep)."""
    from .benchmark_sweep import (CLASSES, ELEMENTS, format_class_sweep, plot_class_sweep,
                                  run_class_sweep)

    peers = (() if args.no_numpy else ("numpy",)) + (() if args.no_others else ("torch", "jax"))
    with _Progress(args.quiet) as progress:
        results, info = run_class_sweep(args.classes or CLASSES, args.elements or ELEMENTS,
                                        args.dtype, args.threads, args.repeat, args.peer_repeat,
                                        peers=peers, progress=progress)
    print(format_class_sweep(results, info))
    sweep = {"info": info, "results": [r.as_dict() for r in results]}
    if args.plot:
        plot_class_sweep(sweep, args.plot, f"cross-entropy, {args.dtype}, about "
                                           f"{info['elements']:,} logits per point, "
                                           f"{info['threads']} threads, {info['processor']}")
        print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(sweep, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {n}")
    return n


def _class_counts(text: str) -> tuple:
    return tuple(_positive_int(c) for c in text.split(","))


class _EvalProgress:
    """Progress of ``fastloss eval`` on stderr: a rich bar (bytes, GB/s, time left) when rich is
    installed, else a plain line every 10%; called as ``progress(bytes_done, bytes_total)``."""

    def __init__(self, quiet: bool, label: str):
        self.quiet, self.label, self.bar, self.task, self.next_pct = quiet, label, None, None, 10
        if not quiet:
            try:
                from rich.console import Console
                from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                           TimeRemainingColumn, TransferSpeedColumn)

                self.bar = Progress(TextColumn("[bold]fastloss eval[/] {task.description}"),
                                    BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                    TimeRemainingColumn(), console=Console(stderr=True),
                                    transient=True)
            except ImportError:
                pass

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar:
            if self.task is None:
                self.task = self.bar.add_task(self.label, total=max(total, 1))
            self.bar.update(self.task, completed=done)
            return
        pct = 100 if total == 0 else 100 * done // total
        if done == 0:
            print(f"  ... fastloss eval {self.label}: {total / 1e9:.2f} GB of logits",
                  file=sys.stderr, flush=True)
        elif pct >= self.next_pct:
            print(f"  ... {pct}% ({done / 1e9:.2f} / {total / 1e9:.2f} GB)", file=sys.stderr,
                  flush=True)
            self.next_pct = pct // 10 * 10 + 10


def format_eval(r: dict) -> str:
    """The human-readable result of ``fastloss eval``."""
    opts = [f"ignore_index={r['ignore_index']}"]
    if r["label_smoothing"]:
        opts.append(f"label_smoothing={r['label_smoothing']:g}")
    if r["softcap"] is not None:
        opts.append(f"softcap={r['softcap']:g}")
    shape = str(tuple(r["shape"]))
    lines = [
        f"fastloss eval: {r['logits']} {shape} {r['dtype']}, {r['bytes'] / 1e9:.2f} GB; "
        f"targets {r['targets']} {r['targets_dtype']}; {', '.join(opts)}",
        f"  tokens         {r['evaluated_tokens']:,} evaluated, {r['ignored_tokens']:,} ignored "
        f"(of {r['tokens']:,})",
        f"  cross-entropy  {r['mean_loss']:.6f} nats/token (mean), {r['total_loss']:.6g} nats "
        "in all",
        f"  perplexity     {r['perplexity']:.6g}",
    ]
    if r["bits_per_byte"] is not None:
        lines.append(f"  bits per byte  {r['bits_per_byte']:.6f} ({r['n_bytes']:,} bytes)")
    lines.append(
        f"  throughput     {r['gb_per_s']:.2f} GB/s, {r['tokens_per_s']:,.0f} tokens/s "
        f"({r['seconds']:.2f} s; {r['threads']} threads, {r['chunks']} chunk"
        f"{'' if r['chunks'] == 1 else 's'} of "
        f"{r['chunk_rows']:,} rows = {r['chunk_bytes'] / 1e6:.0f} MB, {r['io']})")
    if r["per_token"]:
        lines.append(f"  per-token      wrote {r['per_token']} ({r['per_token_dtype']}, shape "
                     f"{tuple(r['shape'][:-1])})")
    return "\n".join(lines)


def _json_safe(r: dict) -> dict:
    """NaN and infinities as null (strict JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in r.items()}


def cmd_eval(args) -> int:
    from . import eval_file, set_num_threads

    prog = "fastloss eval"
    try:
        if args.threads is not None:
            set_num_threads(args.threads)
        with _EvalProgress(args.quiet, os.path.basename(args.logits)) as progress:
            result = eval_file(args.logits, args.targets, chunk_rows=args.chunk_rows,
                               ignore_index=args.ignore_index,
                               label_smoothing=args.label_smoothing, softcap=args.softcap,
                               n_bytes=args.bytes, per_token=args.per_token, progress=progress)
    except (OSError, ValueError, TypeError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, OSError) and e.filename and e.strerror:
            msg = f"{e.filename}: {e.strerror}"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if args.json != "-":
        print(format_eval(result))
    if args.json:
        text = json.dumps(_json_safe(result), indent=2, allow_nan=False)
        if args.json == "-":
            print(text)
        else:
            try:
                with open(args.json, "w") as f:
                    f.write(text + "\n")
            except OSError as e:
                print(f"{prog}: error: {args.json}: {e.strerror or e}", file=sys.stderr)
                return 2
            print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastloss", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="benchmark cross-entropy against NumPy (and PyTorch/JAX)")
    b.add_argument("--batch", type=int, default=4096, help="rows (default 4096)")
    b.add_argument("--vocab", type=int, default=50257, help="classes (default 50257, GPT-2)")
    b.add_argument("--dtype", default="float32",
                   choices=["float32", "float64", "float16", "bfloat16"])
    b.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    b.add_argument("--repeat", type=int, default=5, help="timed runs per implementation")
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    b.add_argument("--no-others", action="store_true", help="skip PyTorch and JAX")
    b.add_argument("--no-numpy", action="store_true", help="skip plain NumPy")
    b.add_argument("--pointwise", action="store_true",
                   help="also time the regression and binary losses on 50M float32 elements")
    b.add_argument("--plot", metavar="FILE.png",
                   help="also sweep vocabulary sizes 1k..256k and plot GB/s (needs matplotlib)")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    b.add_argument("--frameworks", action="store_true",
                   help="instead: a training step of GPT-2's output layer with PyTorch, JAX "
                        "and fastloss.torch / fastloss.jax (time and peak memory)")
    s = b.add_argument_group(
        "class-count sweep",
        "--sweep times loss and loss+grad over class counts 2 to 128,256 with the same number "
        "of logits at every point (rows = elements // classes), for fastloss, NumPy, PyTorch "
        "and JAX, instead of the benchmark above; --plot then plots its times, --json writes "
        "its results; --repeat, --dtype, --threads, --no-numpy and --no-others apply")
    s.add_argument("--sweep", action="store_true", help="run the class-count sweep")
    s.add_argument("--elements", type=_positive_int, default=None, metavar="N",
                   help="logits per point (default 200,000,000)")
    s.add_argument("--classes", type=_class_counts, default=None, metavar="C1,C2,...",
                   help="class counts (default 2,10,100,1000,32000,50257,128256)")
    s.add_argument("--peer-repeat", type=_positive_int, default=3, metavar="N",
                   help="timed runs per point for NumPy, PyTorch and JAX (default 3; --repeat "
                        "sets fastloss's); runs stop early once a case has taken 3 s")
    b.set_defaults(func=cmd_bench)

    e = sub.add_parser(
        "eval", help="cross-entropy, perplexity and bits-per-byte of .npy logits of any size",
        description="Streams over memory-mapped .npy logits (shape (..., V); float32, float16, "
                    "float64 or bfloat16) and integer targets (the logits' shape without the "
                    "last axis) in row chunks, with resident memory bounded by the chunk size. "
                    "Exit status 2 on bad input (one line on stderr).")
    e.add_argument("logits", help="logits .npy file, shape (..., V)")
    e.add_argument("targets", help="targets .npy file, integer class indices, shape (...)")
    e.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per chunk (default: about 64 MB of logits per chunk)")
    e.add_argument("--ignore-index", type=int, default=-100,
                   help="targets equal to this are left out (default -100)")
    e.add_argument("--label-smoothing", type=float, default=0.0, help="in [0, 1] (default 0)")
    e.add_argument("--softcap", type=float, default=None,
                   help="cap the logits at softcap * tanh(x / softcap) first (Gemma 2)")
    e.add_argument("--bytes", type=int, default=None, metavar="N",
                   help="bytes of text the tokens cover: also report bits per byte")
    e.add_argument("--per-token", metavar="OUT.npy",
                   help="also write the per-token losses (0 where ignored) to this .npy file")
    e.add_argument("--json", metavar="FILE",
                   help="also write the result as JSON to FILE; '-' prints only the JSON on "
                        "stdout (NaN and infinities as null)")
    e.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch", "vocab", "repeat"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            build_parser().error(f"--{name} must be >= 1")
    for name in ("chunk_rows", "threads", "bytes") if args.command == "eval" else ():
        if getattr(args, name) is not None and getattr(args, name) < 1:
            build_parser().error(f"--{name.replace('_', '-')} must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
