"""Replays of the fuzz harness (``tests/fuzz``) in CI, without atheris.

- Every stored input in ``tests/fuzz/crashes`` (inputs that once broke the contract, kept as
  regression tests once fixed) and in ``tests/fuzz/corpus`` (the fuzzer's minimised corpus: one
  small input per code path it found) must pass the harness's checks.
- A fixed batch of random inputs must pass too.
- The harness itself must catch injected faults (a wrong number, a modified input, an
  undocumented exception), so a green replay means something.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

FUZZ_DIR = os.path.join(os.path.dirname(__file__), "fuzz")
sys.path.insert(0, FUZZ_DIR)
import harness  # noqa: E402

import fastloss as fl  # noqa: E402


def _files(sub):
    d = os.path.join(FUZZ_DIR, sub)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if not f.startswith((".", "README")))


CRASHES = _files("crashes")
CORPUS = _files("corpus")


@pytest.mark.parametrize("path", CRASHES, ids=os.path.basename)
def test_crash_regressions(path):
    with open(path, "rb") as f:
        data = f.read()
    assert harness.one_input(data) in ("ok", "rejected"), harness.describe(data)


def test_corpus_replays():
    assert CORPUS, "the fuzz corpus is missing"
    outcomes = {"ok": 0, "rejected": 0}
    for path in CORPUS:
        with open(path, "rb") as f:
            data = f.read()
        try:
            outcomes[harness.one_input(data)] += 1
        except Exception as e:  # pragma: no cover - a failure names the input
            raise AssertionError(f"{os.path.basename(path)}: {harness.describe(data)}") from e
    # the corpus reaches both outcomes, so it exercises the checks and the computations
    assert outcomes["ok"] > 50 and outcomes["rejected"] > 50, outcomes


@pytest.mark.parametrize("seed", range(4))
def test_random_inputs(seed):
    g = np.random.default_rng(1000 + seed)
    names = set()
    for _ in range(500):
        data = g.bytes(int(g.integers(1, 400)))
        harness.one_input(data)
        names.add(harness.BUILDERS[data[0] % len(harness.BUILDERS)][0])
    assert len(names) == len(harness.BUILDERS) - 1 or len(names) >= 25


# --- the harness catches injected faults ------------------------------------------------------
def _first_input_for(name, need=None, tries=4000):
    """A random input that calls ``name`` successfully (and, with ``need``, whose check set
    ``harness.LAST[need]``)."""
    g = np.random.default_rng(7)
    idx = [i for i, (n, _) in enumerate(harness.BUILDERS) if n == name][0]
    for _ in range(tries):
        data = bytes([idx]) + g.bytes(int(g.integers(8, 300)))
        if harness.one_input(data) == "ok" and (need is None or harness.LAST[need]):
            return data
    raise AssertionError(f"no input calls {name} successfully with {need}")


@pytest.mark.parametrize("fault", ["wrong_number", "modifies_input", "undocumented_error",
                                   "layout_dependent", "python_float"])
def test_harness_catches_injected_faults(monkeypatch, fault):
    need = {"wrong_number": "reference", "layout_dependent": "non_contiguous"}.get(fault)
    data = _first_input_for("mse_loss", need)
    real = fl.mse_loss

    def faulty(x, y, **kw):
        out = real(x, y, **kw)
        if fault == "wrong_number":
            return out * 1.001 + 1e-3 if not isinstance(out, tuple) else (out[0] + 1e-3, out[1])
        if fault == "modifies_input":
            if isinstance(x, np.ndarray) and x.size and x.flags.writeable:
                x.reshape(-1)[0] += 1
            else:
                raise RuntimeError("injected")
        if fault == "undocumented_error":
            raise RuntimeError("injected")
        if fault == "layout_dependent":
            if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
                return out * 2 if not isinstance(out, tuple) else (out[0] * 2, out[1])
            raise RuntimeError("injected")  # (this input is C-contiguous: fail anyway)
        if fault == "python_float":
            return float(np.sum(out[0] if isinstance(out, tuple) else out))
        return out

    monkeypatch.setattr(fl, "mse_loss", faulty)
    with pytest.raises((harness.Finding, RuntimeError, AssertionError)):
        harness.one_input(data)
