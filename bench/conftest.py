"""Shared fixtures for the benchmark suites: inputs, and the machine's bandwidth floor so every
benchmark records its GB/s and its ratio to the floor in ``extra_info``."""

import numpy as np
import pytest

from fastloss.benchmark import bandwidth_floor, cross_entropy_case


@pytest.fixture(scope="session")
def ce_case():
    """(4096, 50257) float32 logits of N(0, 3^2) and random targets: GPT-2-vocabulary rows."""
    return cross_entropy_case(4096, 50257, "float32")


@pytest.fixture(scope="session")
def floor(ce_case):
    x, _ = ce_case
    return bandwidth_floor(x.nbytes)


@pytest.fixture
def record(benchmark, floor):
    """record(bytes_read, bytes_written): after a benchmark, store GB/s and floor ratios."""

    def _record(nbytes_read: int, nbytes_written: int = 0):
        median = benchmark.stats.stats.median
        moved = nbytes_read + nbytes_written
        floor_s = nbytes_read / (floor["read_gbps"] * 1e9) if not nbytes_written else (
            moved / (floor["read_write_gbps"] * 1e9))
        benchmark.extra_info.update(
            gbps=moved / median / 1e9,
            floor_ratio=median / floor_s,
            floor_read_gbps=floor["read_gbps"],
            floor_read_write_gbps=floor["read_write_gbps"],
        )

    return _record


def as_dtype(x: np.ndarray, name: str) -> np.ndarray:
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return x.astype(ml_dtypes.bfloat16)
    return x.astype(name)
