"""The ``fastloss`` command line: ``fastloss bench``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _progress_printer(quiet: bool):
    if quiet:
        return lambda msg: None
    return lambda msg: print(f"  ... {msg}", file=sys.stderr, flush=True)


def _fmt(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_table(results, info) -> str:
    """A plain-text table (also what the README shows)."""
    head = (f"fastloss bench: cross-entropy ({info['batch']}, {info['vocab']}) {info['dtype']}, "
            f"{info['threads']} threads, {info['processor']}\n"
            f"bandwidth floor: read {info['read_gbps']:.1f} GB/s, "
            f"read+write {info['read_write_gbps']:.1f} GB/s\n")
    cols = ["case", "implementation", "median ms", "min..max ms", "GB/s", "x floor", "vs numpy",
            "note"]
    rows = [[r.case, r.impl, f"{r.median_ms:.1f}", f"{r.min_ms:.1f}..{r.max_ms:.1f}",
             f"{r.gbps:.1f}", f"{r.floor_ratio:.2f}", _fmt(r.speedup_vs_numpy, ".1f") + "x",
             r.note] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return head + "\n".join([line(cols), sep] + [line(r) for r in rows])


def cmd_bench(args) -> int:
    from .benchmark import run_case

    results, info = run_case(args.batch, args.vocab, args.dtype, args.threads, args.repeat,
                             others=not args.no_others, progress=_progress_printer(args.quiet))
    print(format_table(results, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": [r.as_dict() for r in results]}, f, indent=2)
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
