"""Benchmark tables of the documentation, written from ``fastloss bench --json`` output.

The docs build (``docs/conf.py``) calls :func:`write` on ``docs/benchmarks/bench.json`` at its
start, so the tables on the benchmarks page are always those of the checked-in data; the
README's compact table is :func:`readme_sweep_table` of ``docs/benchmarks/sweep.json`` (the
class-count sweep), which tests/test_docs.py checks. To record new numbers (from the repository root, with the ``bench`` extra installed)::

    fastloss bench --pointwise --plot docs/throughput.png --json docs/benchmarks/bench.json
    fastloss bench --sweep --elements 50000000 --plot docs/sweep.png --json docs/benchmarks/sweep.json
    python docs/bench_tables.py docs/benchmarks/sweep.json --readme   # paste into README.md

``python docs/bench_tables.py FILE.json`` prints the Markdown of the benchmarks page,
``--out PATH`` writes it, ``--plot PATH.png`` redraws the throughput figure from the JSON's
vocabulary sweep (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Iterable, Optional, Sequence


def load(path) -> dict:
    """The JSON of ``fastloss bench --json``; it must record its environment."""
    with open(path) as f:
        data = json.load(f)
    if "environment" not in data:
        raise ValueError(f"{path}: no 'environment' (written by a fastloss bench before 0.1.0's "
                         "docs; record it again)")
    return data


def _table(header: Sequence[str], rows: Iterable[Sequence[str]],
           align: Optional[str] = None) -> str:
    """A Markdown pipe table; ``align`` has one letter per column, l or r."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _speedup(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.0f}x" if x >= 10 else f"{x:.1f}x")


def environment_table(env: dict) -> str:
    """The machine and the versions the numbers were measured with."""
    others = ", ".join(f"{name} {env[name]}" for name in ("torch", "jax") if env.get(name))
    rows = [
        ("CPU", f"{env['processor']} ({env['machine']}), {env['cpus']} cores"),
        ("memory", f"{env['memory_gib']} GiB" if env.get("memory_gib") else "-"),
        ("system", env.get("system", "-")),
        ("fastloss", f"{env['fastloss']}, {env['isa']} kernels, {env['threads']} threads, "
                     f"compiler {env['compiler']}"),
        ("Python, NumPy", f"{env['python']}, {env['numpy']}"),
        ("compared with", others or "NumPy only"),
    ]
    return _table(["what", "measured on"], rows)


def _floor_line(info: dict) -> str:
    return (f"Bandwidth floor measured in the same run: read {info['read_gbps']:.1f} GB/s, "
            f"read and write {info['read_write_gbps']:.1f} GB/s.")


def results_table(section: dict) -> str:
    """One ``run_case`` / ``run_kl_logits`` result list as a table (the minimum and maximum
    times stay in the JSON)."""
    rows = []
    for r in section["results"]:
        peak = r.get("peak_extra_bytes")
        rows.append((r["case"], r["impl"], _ms(r["median_ms"]), f"{r['gbps']:.1f}",
                     f"{r['floor_ratio']:.2f}", _speedup(r.get("speedup_vs_numpy")),
                     "-" if peak is None else f"{peak / 1e6:.0f}", r.get("note") or ""))
    return _table(["case", "implementation", "median ms", "GB/s", "x floor", "vs NumPy",
                   "peak extra MB", "note"], rows, "llrrrrrl")


def pointwise_table(section: dict) -> str:
    rows = [(r["case"], _ms(r["median_ms"]), f"{r['gbps']:.1f}", f"{r['floor_ratio']:.2f}",
             _ms(r["numpy_ms"]), _speedup(r.get("speedup_vs_numpy")))
            for r in section["results"]]
    return _table(["case", "median ms", "GB/s", "x floor", "NumPy ms", "vs NumPy"], rows,
                  "lrrrrr")


def sweep_table(sweep: dict) -> str:
    impls = list(sweep["impls"])
    rows = []
    for i, v in enumerate(sweep["vocab"]):
        rows.append([f"{v:,}"] + [f"{sweep['impls'][k][i]:.1f}" for k in impls]
                    + [f"{sweep['floor_gbps'][i]:.1f}"])
    return _table(["classes"] + impls + ["read floor"], rows, "r" * (len(impls) + 2))


def page(data: dict) -> str:
    """The Markdown the benchmarks page includes."""
    info, env = data["info"], data["environment"]
    out = [environment_table(env), "", "## Cross-entropy", "",
           f"Logits ({info['batch']:,}, {info['vocab']:,}) {info['dtype']}. "
           + _floor_line(info), "", results_table(data), ""]
    kl = data.get("kl_div_with_logits")
    if kl:
        ki = kl["info"]
        out += ["## Distillation", "",
                f"`kl_div_with_logits`, student and teacher logits ({ki['batch']:,}, "
                f"{ki['vocab']:,}) {ki['dtype']}. " + _floor_line(ki), "",
                results_table(kl), ""]
    pw = data.get("pointwise")
    if pw:
        out += ["## Regression and binary losses", "",
                f"{pw['info']['n']:,} float32 predictions and targets. "
                + _floor_line(pw["info"]) + ' "vs NumPy" is against the float64 NumPy '
                "reference (`fastloss.reference`).", "", pointwise_table(pw), ""]
    sweep = data.get("vocab_sweep")
    if sweep:
        out += ["## Throughput against vocabulary size", "",
                "Cross-entropy loss, GB/s of logits read, about 2**26 logits per size "
                "(the data of the figure below):", "", sweep_table(sweep), ""]
    return "\n".join(out)


def _median(section: dict, case: str, impl: str) -> Optional[float]:
    """The median time of ``case`` for the implementation ``impl``, or ``impl`` and a version
    (``numpy`` finds ``numpy 2.4.6``, ``jax`` finds ``jax 0.10.2 (jit)``)."""
    for r in section["results"]:
        name, rest = r["impl"], r["impl"][len(impl) + 1:]
        if r["case"] == case and (name == impl or name.startswith(impl + " ")
                                  and rest[:1].isdigit()):
            return r["median_ms"]
    return None


def readme_table(data: dict) -> str:
    """The README's compact table: cross-entropy, median ms of fastloss and the others. For
    loss and gradient, fastloss's row is the one with a new gradient array per call, as the
    others allocate theirs."""
    info, env = data["info"], data["environment"]
    columns = [("fastloss", "fastloss", "fastloss (fresh)"),
               (f"NumPy {env['numpy']}", "numpy", "numpy")]
    if env.get("torch"):
        columns.append((f"PyTorch {env['torch']}", "torch", "torch"))
    if env.get("jax"):
        columns.append((f"JAX {env['jax']}", "jax", "jax"))
    columns = [c for c in columns if _median(data, "loss", c[1]) is not None]
    rows = [["loss"] + [_ms(_median(data, "loss", c[1])) for c in columns],
            ["loss and gradient"] + [_ms(_median(data, "loss+grad", c[2])) for c in columns]]
    head = (f"Cross-entropy of ({info['batch']:,}, {info['vocab']:,}) {info['dtype']} logits, "
            f"median ms, {info['threads']} threads of an {env['processor']} "
            f"({env['isa']}):")
    return head + "\n\n" + _table([""] + [c[0] for c in columns], rows,
                                   "l" + "r" * len(columns))


def _sweep_median(data: dict, classes: int, case: str, library: str) -> Optional[float]:
    for r in data["results"]:
        if r["classes"] == classes and r["case"] == case and r["library"] == library:
            return r["median_ms"]
    return None


def _sweep_versions(data: dict) -> dict:
    """library -> the implementation's name with its version ("torch 2.13.0+cpu")."""
    return {r["library"]: r["impl"] for r in data["results"]}


def class_sweep_table(data: dict, case: str = "loss+grad") -> str:
    """``fastloss bench --sweep --json`` output as one table: median ms of ``case`` per class
    count for every library. (The ratios to the bandwidth floor stay in the command's own
    table: a floor measured next to a loaded run can be too low to compare against.)"""
    info = data["info"]
    names = _sweep_versions(data)
    libs = [lib for lib in ("fastloss", "torch", "jax", "numpy") if lib in names]
    label = {"fastloss": "fastloss", "torch": "PyTorch", "jax": "JAX", "numpy": "NumPy"}
    header = ["classes"] + [label[lib] + ("" if lib == "fastloss" else " " + names[lib]
                                          .split(" ", 1)[1].replace(" (jit)", ""))
                            for lib in libs]
    rows = []
    for c in info["classes"]:
        rows.append([f"{c:,}"] + [_ms(_sweep_median(data, c, case, lib)) for lib in libs])
    return _table(header, rows, "r" * len(header))


def readme_sweep_table(data: dict) -> str:
    """The README's compact table: cross-entropy loss and gradient over the class counts of
    ``fastloss bench --sweep``."""
    info = data["info"]
    head = (f"Cross-entropy loss and gradient, median ms, {info['elements']:,} {info['dtype']} "
            f"logits at every class count (rows = logits / classes), {info['threads']} threads "
            f"of an {info['processor']} ({info['isa']}):")
    return head + "\n\n" + class_sweep_table(data)


def sweep_page(data: dict) -> str:
    """The Markdown of the class-count sweep on the benchmarks page."""
    info = data["info"]
    return "\n".join([
        f"{info['elements']:,} {info['dtype']} logits at every class count, "
        f"{info['threads']} threads of an {info['processor']} ({info['isa']}).", "",
        "Loss, median ms:", "", class_sweep_table(data, "loss"), "",
        "Loss and gradient, median ms:", "", class_sweep_table(data, "loss+grad"), ""])


def write_sweep(json_path, out_path) -> str:
    """Write :func:`sweep_page` of ``json_path`` (``fastloss bench --sweep --json``)."""
    with open(json_path) as f:
        text = sweep_page(json.load(f))
    out = pathlib.Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return text


def write(json_path, out_path) -> str:
    """Write :func:`page` of ``json_path`` to ``out_path`` (only when it changed, so that
    Sphinx does not rebuild the page needlessly); returns the text."""
    text = page(load(json_path))
    out = pathlib.Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return text


def plot(data: dict, path) -> None:
    from fastloss.benchmark import plot_sweep

    env = data["environment"]
    plot_sweep(data["vocab_sweep"], str(path),
               f"cross-entropy loss, {data['info']['dtype']}, {env['threads']} threads, "
               f"{env['processor']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="output of fastloss bench --json")
    p.add_argument("--out", help="write the benchmarks page's tables here (default: print)")
    p.add_argument("--readme", action="store_true",
                   help="print the README's compact table (from a fastloss bench --sweep JSON)")
    p.add_argument("--plot", metavar="PNG", help="draw the vocabulary sweep figure")
    args = p.parse_args(argv)
    if args.readme:
        with open(args.json) as f:
            print(readme_sweep_table(json.load(f)))
        return 0
    data = load(args.json)
    if args.plot:
        plot(data, args.plot)
    if args.readme:
        print(readme_table(data))
    elif args.out:
        write(args.json, args.out)
    elif not args.plot:
        print(page(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
