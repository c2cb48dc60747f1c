"""Build and run-time configuration: which instruction set the kernels dispatched to, threads,
compiler."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict

import numpy as np

from . import _core


def config() -> Dict[str, Any]:
    """The configuration as a dict (what :func:`show_config` prints)."""
    from . import __version__

    return {
        "fastloss": __version__,
        "isa": _core.active_isa(),
        "isas_compiled": list(_core.compiled_isas()),
        "isas_supported": [i for i in _core.compiled_isas() if _core.isa_supported(i)],
        "FASTLOSS_ISA": os.environ.get("FASTLOSS_ISA"),
        "threads": _core.get_num_threads(),
        "threading": _core.threading,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(),
        "compiler": _core.compiler,
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def show_config() -> None:
    """Print the dispatched instruction set, thread count and threading, compiler and versions.

    ``threading`` is ``openmp`` (an OpenMP team) or ``threadpool`` (a ``std::thread`` pool: a
    build with ``FASTLOSS_OPENMP=OFF``, or by a compiler without OpenMP); both give the same
    results.

    The kernels are compiled once per instruction set (AVX-512, AVX2, baseline x86-64 or the
    portable baseline elsewhere) and the best one the CPU supports is chosen at import. Set the
    environment variable ``FASTLOSS_ISA=avx2`` (or ``baseline``) before importing fastloss to
    cap the choice, e.g. to test the other paths.
    """
    for key, value in config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:>16}: {value}")


def environment() -> Dict[str, Any]:
    """What a benchmark ran on (``fastloss bench --json`` records it): :func:`config`'s values,
    the CPU model, the operating system, the memory and the versions of the libraries the
    benchmark compares with (None where not installed)."""
    import importlib.metadata

    from .benchmark import _cpu_name

    env = config()
    env["processor"] = _cpu_name()
    env["system"] = f"{platform.system()} {platform.release()}"
    try:
        env["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                  / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # (no sysconf names: not Linux)
        env["memory_gib"] = None
    for dist in ("torch", "jax", "jaxlib", "ml_dtypes"):
        try:
            env[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env[dist] = None
    return env
