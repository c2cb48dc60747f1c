"""Sphinx configuration of the fastloss documentation.

Build (from the repository root, with fastloss importable: installed, or ``PYTHONPATH=python``
next to a built extension)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest   # runs every example

The benchmark tables are written from ``docs/benchmarks/bench.json`` by
``docs/bench_tables.py`` at the start of every build, so they cannot drift from the data.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pathlib
import posixpath
import sys

import fastloss

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_tables.py

import bench_tables  # noqa: E402

project = "fastloss"
author = "the fastloss developers"
copyright = "the fastloss developers"
release = fastloss.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# Pages listed in the toctrees that another branch adds (docs/compatibility.md,
# docs/frameworks.md), and the API pages of the framework bridges, which need their module
# (and its framework) to import. A page that is missing, or whose module does not import, is
# left out of the build and its toctree entries are dropped (_drop_missing_pages); once it is
# there, it is built, with no change here.
OPTIONAL_PAGES = {
    "compatibility": None,
    "frameworks": None,
    "api/torch": "fastloss.torch",
    "api/jax": "fastloss.jax",
}


def _page_missing(page: str, module: str | None) -> str | None:
    """Why ``page`` is left out, or None when it is built."""
    if not any((HERE / f"{page}{suffix}").exists() for suffix in source_suffix):
        return "not in this tree"
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            return f"{module} does not import: {e}"
    return None


MISSING_PAGES = {}
for _page, _module in OPTIONAL_PAGES.items():
    _why = _page_missing(_page, _module)
    if _why:
        MISSING_PAGES[_page] = _why
        exclude_patterns += [f"{_page}{suffix}" for suffix in source_suffix]
        print(f"fastloss docs: {_page} left out ({_why})")


def _drop_missing_pages(app, docname: str, source: list) -> None:
    """Remove the toctree entries (lines that are just a page name, relative to ``docname``)
    of the pages in MISSING_PAGES."""
    folder = posixpath.dirname(docname)
    lines = source[0].split("\n")
    kept = [line for line in lines
            if not line.strip()
            or posixpath.normpath(posixpath.join(folder, line.strip())) not in MISSING_PAGES]
    source[0] = "\n".join(kept)


# MyST: ```{doctest} fences run under sphinx.ext.doctest; $...$ math; heading anchors.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one page per function, generated from the docstrings (numpydoc sections).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # the numpydoc Parameters section says it better
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set = set()

# Examples: the docstrings' and the guide's run with these names defined.
doctest_global_setup = """
import numpy as np
import fastloss as fl
"""
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

html_theme = "pydata_sphinx_theme"
html_title = f"fastloss {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# (no left sidebar on pages without subpages: the tables get the width)
html_sidebars = {page: [] for page in ("index", "getting-started", "numerics", "benchmarks",
                                       "changelog", "development", "compatibility")}
html_static_path: list = []
html_show_sourcelink = False


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # (unchanged: no rebuild of the page)
        path.write_text(text)


def _write_generated(app) -> None:
    """The benchmark tables from the checked-in JSON, and the command line's --help texts."""
    generated = HERE / "_generated"
    bench_tables.write(HERE / "benchmarks" / "bench.json", generated / "bench_tables.md")
    bench_tables.write_sweep(HERE / "benchmarks" / "sweep.json", generated / "sweep_tables.md")
    from fastloss.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width
    try:
        parser = build_parser()
        commands = parser._subparsers._group_actions[0].choices  # {name: subparser}
        for name, sub in commands.items():
            _write_if_changed(generated / f"cli-{name}.txt", sub.format_help())
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def setup(app):
    app.connect("builder-inited", _write_generated)
    app.connect("source-read", _drop_missing_pages)
