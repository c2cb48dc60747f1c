"""The documentation: docstring examples run, the API reference lists every public name, and
the README is short, has its commands, runs its example and shows the checked-in benchmark."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re
import sys

import numpy as np
import pytest

import fastloss as fl

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SWEEP_JSON = ROOT / "docs" / "benchmarks" / "sweep.json"
BENCH_JSON = DOCS / "benchmarks" / "bench.json"
# Framework modules, each with its API page; fastloss.torch and fastloss.jax need their
# framework installed and are checked only when they import.
FRAMEWORK_PAGES = {"fastloss.dask": "dask", "fastloss.torch": "torch", "fastloss.jax": "jax"}


@pytest.mark.parametrize(
    "name",
    ["fastloss.softmax", "fastloss.classification", "fastloss.regression", "fastloss.binary",
     "fastloss.kl", "fastloss.distributions", "fastloss.margin",
     "fastloss.embeddings", "fastloss.sequence", "fastloss.scale", "fastloss.evaluate",
     "fastloss.dask"],
)
def test_docstring_examples(name):
    if name == "fastloss.dask":
        pytest.importorskip("dask")
    module = importlib.import_module(name)  # (fastloss.softmax the attribute is the function)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------------------------
# API reference
# ---------------------------------------------------------------------------------------------
def autosummary_entries(text: str) -> list:
    """Full names listed by the ``.. autosummary::`` directives of one reST page, each under
    the ``.. currentmodule::`` in force."""
    names, module, in_summary = [], None, False
    for line in text.splitlines():
        m = re.match(r"\.\. currentmodule:: (\S+)\s*$", line)
        if m:
            module, in_summary = m.group(1), False
        elif line.startswith(".. autosummary::"):
            assert module, "an autosummary before any currentmodule"
            in_summary = True
        elif in_summary and line and not line.startswith(" "):
            in_summary = False  # the directive's indented block ended
        elif in_summary and line.strip() and not line.strip().startswith(":"):
            names.append(f"{module}.{line.strip()}")
    return names


def api_pages() -> dict:
    return {p.stem: autosummary_entries(p.read_text()) for p in (DOCS / "api").glob("*.rst")}


def test_autosummary_parser():
    page = (".. currentmodule:: fastloss\n\n.. autosummary::\n   :toctree: generated/\n\n"
            "   cross_entropy\n   nll_loss\n\nText.\n\n   indented prose\n")
    assert autosummary_entries(page) == ["fastloss.cross_entropy", "fastloss.nll_loss"]


def test_api_reference_covers_fastloss_all():
    documented = {n for names in api_pages().values() for n in names}
    missing = sorted(f"fastloss.{n}" for n in fl.__all__ if f"fastloss.{n}" not in documented)
    assert not missing, f"not in any docs/api/*.rst autosummary: {missing}"


def test_api_reference_lists_each_name_once():
    listed = [n for names in api_pages().values() for n in names]
    assert len(listed) == len(set(listed)), sorted(n for n in listed if listed.count(n) > 1)


@pytest.mark.parametrize("module_name", sorted(FRAMEWORK_PAGES))
def test_framework_module_api_page(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        pytest.skip(f"{module_name} does not import here: {e}")
    page = FRAMEWORK_PAGES[module_name]
    listed = api_pages().get(page)
    assert listed is not None, f"docs/api/{page}.rst is missing"
    assert f".. automodule:: {module_name}" in (DOCS / "api" / f"{page}.rst").read_text()
    missing = sorted(n for n in module.__all__ if f"{module_name}.{n}" not in listed)
    assert not missing, f"{module_name}.__all__ names not in docs/api/{page}.rst: {missing}"
    if module_name != "fastloss.dask":  # the bridges' pages are built when they import
        assert f'"api/{page}": "{module_name}"' in (DOCS / "conf.py").read_text()


def test_api_reference_names_exist():
    """Every listed name resolves (pages of framework modules that do not import here are
    left out: the docs build leaves them out too)."""
    unresolved = []
    for page, names in api_pages().items():
        for full in names:
            module_name, attr = full.rsplit(".", 1)
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                assert module_name in FRAMEWORK_PAGES, f"{page}.rst: {module_name} does not import"
                continue
            if not hasattr(module, attr):
                unresolved.append(f"{page}.rst: {full}")
    assert not unresolved, unresolved


# ---------------------------------------------------------------------------------------------
# Benchmark tables and README
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_tables():
    sys.path.insert(0, str(DOCS))
    try:
        import bench_tables
    finally:
        sys.path.remove(str(DOCS))
    return bench_tables


def test_bench_json_records_machine_and_versions(bench_tables):
    data = bench_tables.load(BENCH_JSON)
    env = data["environment"]
    for key in ("processor", "cpus", "memory_gib", "isa", "threads", "compiler", "python",
                "numpy", "fastloss", "torch", "jax"):
        assert key in env, key
    assert env["processor"] and env["python"] and env["numpy"]
    page = bench_tables.page(data)
    assert env["processor"] in page and f"{env['python']}, {env['numpy']}" in page
    for section in ("## Cross-entropy", "## Distillation", "## Regression and binary",
                    "## Throughput against vocabulary size"):
        assert section in page, section
    fastloss_loss = next(r for r in data["results"]
                         if r["case"] == "loss" and r["impl"] == "fastloss")
    assert f"| loss | fastloss | {bench_tables._ms(fastloss_loss['median_ms'])} |" in page
    # the README's loss-and-gradient column of fastloss is its row with a fresh gradient array
    fresh = next(r for r in data["results"] if r["impl"] == "fastloss (fresh)")
    readme = bench_tables.readme_table(data)
    assert f"| loss and gradient | {bench_tables._ms(fresh['median_ms'])} |" in readme
    assert f"| loss | {bench_tables._ms(fastloss_loss['median_ms'])} |" in readme


def test_bench_json_output_records_its_environment(tmp_path, capsys, bench_tables):
    """fastloss bench --json (a tiny case) writes what the tables need, environment included."""
    from fastloss.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--batch", "16", "--vocab", "256", "--repeat", "1", "--no-others",
                 "--no-numpy", "--quiet", "--json", str(out)]) == 0
    data = bench_tables.load(out)
    env = data["environment"]
    assert env["fastloss"] == fl.__version__ and env["numpy"] == np.__version__
    assert env["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert env["cpus"] >= 1 and env["threads"] == fl.get_num_threads()
    assert "| loss | fastloss |" in bench_tables.page(data)


def test_bench_tables_without_environment_is_an_error(bench_tables, tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text('{"info": {}, "results": []}')
    with pytest.raises(ValueError, match="environment"):
        bench_tables.load(bad)


def test_readme_is_short_and_has_the_commands():
    text = README.read_text()
    assert len(text.encode()) < 8 * 1024, f"README.md is {len(text.encode())} bytes"
    for command in ('pip install . && fastloss bench', 'pip install ".[test]" && pytest',
                    'pip install ".[docs]"', "python -m sphinx -W --keep-going docs "):
        assert command in text, command


def test_readme_benchmark_table_is_the_checked_in_one(bench_tables):
    import json

    with open(SWEEP_JSON) as f:
        table = bench_tables.readme_sweep_table(json.load(f))
    assert table in README.read_text(), (
        "README's benchmark table differs from docs/benchmarks/sweep.json; paste the output "
        "of: python docs/bench_tables.py docs/benchmarks/sweep.json --readme\n" + table)


def test_sweep_tables_cover_every_class_count(bench_tables):
    import json

    with open(SWEEP_JSON) as f:
        data = json.load(f)
    text = bench_tables.sweep_page(data)
    for c in data["info"]["classes"]:
        assert f"| {c:,} |" in text
    fast = [r for r in data["results"] if r["library"] == "fastloss"]
    assert len(fast) == 2 * len(data["info"]["classes"])
    assert f"| {bench_tables._ms(fast[0]['median_ms'])} |" in text


def test_readme_links_exist():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 12
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    loss, grad, logits = namespace["loss"], namespace["grad"], namespace["logits"]
    assert grad is logits and grad.shape == (512, 50257)
    assert np.isfinite(loss) and loss.dtype == np.float32
