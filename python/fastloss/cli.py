"""The ``fastloss`` command line: ``fastloss bench``."""

from __future__ import annotations

import argparse
import json
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
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": [r.as_dict() for r in results],
                       "vocab_sweep": sweep,
                       "kl_div_with_logits": {"info": distill[1],
                                              "results": [r.as_dict() for r in distill[0]]},
                       "pointwise": None if pointwise is None else {
                           "info": pointwise[1],
                           "results": [r.as_dict() for r in pointwise[0]]}}, f, indent=2)
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
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch", "vocab", "repeat"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            build_parser().error(f"--{name} must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
