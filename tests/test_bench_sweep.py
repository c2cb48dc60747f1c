"""``fastloss bench --sweep`` at a tiny size through the CLI entry point: the table and JSON hold
every class count, case and library, and the losses that were timed are right (fastloss's and
NumPy's agree, and every library's matches the float64 reference on the same inputs). Speed is
never asserted."""

import importlib.util
import json

import numpy as np
import pytest

import fastloss.benchmark_sweep as sweep_mod
from fastloss import reference
from fastloss.benchmark import plot_sweep, vocab_sweep
from fastloss.benchmark_sweep import CLASSES, sweep_inputs
from fastloss.cli import main

ELEMENTS = 20_000
INSTALLED_PEERS = [m for m in ("torch", "jax") if importlib.util.find_spec(m) is not None]


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "sweep.json"
    rc = main(["bench", "--sweep", "--elements", str(ELEMENTS), "--repeat", "1",
               "--peer-repeat", "1", "--json", str(out), "--quiet", *extra])
    assert rc == 0
    return capsys.readouterr().out, json.loads(out.read_text())


def test_sweep_table_json_and_losses(tmp_path, capsys):
    table, sweep = _run(tmp_path, capsys)
    info, results = sweep["info"], sweep["results"]
    libraries = ["fastloss", "numpy", *INSTALLED_PEERS]
    assert info["classes"] == list(CLASSES)
    assert info["elements"] == ELEMENTS
    assert info["libraries"] == libraries
    assert info["read_gbps"] > 0 and info["read_write_gbps"] > 0
    assert len(results) == len(CLASSES) * 2 * len(libraries)

    inputs = {c: (x, t) for c, x, t in sweep_inputs(ELEMENTS, CLASSES)}
    by_point = {(r["classes"], r["case"], r["library"]): r for r in results}
    for c in CLASSES:
        x, t = inputs[c]
        rows = max(ELEMENTS // c, 1)
        assert x.shape == (rows, c) and t.shape == (rows,)
        expected = float(reference.cross_entropy(x.astype(np.float64), t))
        for case in ("loss", "loss+grad"):
            for lib in libraries:
                r = by_point[c, case, lib]
                assert r["rows"] == rows
                moved = x.nbytes + t.nbytes + (x.nbytes if case == "loss+grad" else 0)
                assert r["bytes_moved"] == moved
                assert len(r["times_ms"]) == 1 and r["median_ms"] > 0
                assert r["floor_ratio"] == pytest.approx(r["median_ms"] / r["floor_ms"])
                assert sorted(r["speedups"]) == sorted(set(libraries) - {lib})
                other = by_point[c, case, "numpy" if lib != "numpy" else "fastloss"]
                assert r["speedups"][other["library"]] == pytest.approx(
                    other["median_ms"] / r["median_ms"])
                # what each library computed in the timed calls is the loss itself
                assert r["loss"] == pytest.approx(expected, rel=1e-4), (c, case, lib)
                assert f"| {c:,} " in table and r["impl"] in table
            fast, plain = by_point[c, case, "fastloss"], by_point[c, case, "numpy"]
            assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5), (c, case)

    assert table.startswith("fastloss bench --sweep: cross-entropy")
    assert (f"read {info['read_gbps']:.1f} GB/s, read+write {info['read_write_gbps']:.1f} GB/s"
            in table)
    header = next(line for line in table.splitlines() if line.startswith("| classes"))
    assert [h.strip() for h in header.strip("|").split("|")][-len(libraries) + 1:] == [
        f"vs {lib}" for lib in libraries[1:]]
    body = [line for line in table.splitlines() if line.startswith("| ") and "classes" not in line]
    assert len(body) == len(results)


def test_sweep_notes_missing_peers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep_mod, "_installed", lambda module: False)
    table, sweep = _run(tmp_path, capsys, "--classes", "3,1000")
    assert sweep["info"]["skipped"] == {"torch": "not installed", "jax": "not installed"}
    assert {r["library"] for r in sweep["results"]} == {"fastloss", "numpy"}
    assert {r["classes"] for r in sweep["results"]} == {3, 1000}
    assert "torch skipped (not installed)" in table and "jax skipped (not installed)" in table
    assert "vs torch" not in table


def test_sweep_rejects_a_disagreeing_peer(tmp_path, capsys, monkeypatch):
    """The check before timing is live: an implementation whose loss is off stops the sweep."""
    real = sweep_mod._numpy_impls

    def off_by_a_bit(x, t):
        impls, label = real(x, t)
        return {"loss": lambda: impls["loss"]() * 1.001, "loss+grad": impls["loss+grad"]}, label

    monkeypatch.setattr(sweep_mod, "_numpy_impls", off_by_a_bit)
    with pytest.raises(RuntimeError, match="disagrees with fastloss at 10 classes"):
        _run(tmp_path, capsys, "--classes", "10", "--no-others")


def test_sweep_rejects_a_wrong_gradient(tmp_path, capsys, monkeypatch):
    real = sweep_mod._numpy_impls

    def transposed_rows(x, t):
        impls, label = real(x, t)

        def loss_grad():
            value, g = impls["loss+grad"]()
            return value, g[::-1]

        return {"loss": impls["loss"], "loss+grad": loss_grad}, label

    monkeypatch.setattr(sweep_mod, "_numpy_impls", transposed_rows)
    with pytest.raises(RuntimeError, match=r"100 classes \(loss\+grad\)"):
        _run(tmp_path, capsys, "--classes", "100", "--no-others")


def test_sweep_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    _run(tmp_path, capsys, "--classes", "2,100", "--no-others", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [["--elements", "0"], ["--classes", "2,x"], ["--classes", "0"],
                                 ["--peer-repeat", "0"]])
def test_sweep_bad_options(bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--sweep", *bad])
    assert e.value.code == 2


def test_vocab_sweep_runs_on_the_class_sweep(tmp_path):
    """``fastloss bench --plot`` without ``--sweep``: loss-only GB/s over vocabulary sizes."""
    sweep = vocab_sweep(vocabs=(16, 64), elements=4096, repeat=1, others=False)
    assert [(r["classes"], r["case"], r["library"]) for r in sweep["results"]] == [
        (16, "loss", "fastloss"), (64, "loss", "fastloss"),
        (16, "loss", "numpy"), (64, "loss", "numpy")]
    assert all(r["gbps"] > 0 for r in sweep["results"])
    if importlib.util.find_spec("matplotlib") is not None:
        plot_sweep(sweep, str(tmp_path / "gbps.png"), "test")
        assert (tmp_path / "gbps.png").stat().st_size > 0


def test_run_pointwise_small():
    """`fastloss bench --pointwise` on a small n: every loss, loss and loss+grad, each with its
    NumPy time and a floor from the better of the two bandwidth measurements."""
    from fastloss.benchmark import POINTWISE, run_pointwise

    results, info = run_pointwise(n=20_000, repeat=1, numpy_repeat=1)
    assert [r.case for r in results] == [f"{n} {c}" for n in POINTWISE
                                         for c in ("loss", "loss+grad")]
    for r in results:
        assert r.median_ms > 0 and r.numpy_ms > 0 and r.floor_ms > 0
        read = r.case.endswith(" loss")
        gbps = info["read_gbps"] if read else info["read_write_gbps"]
        assert abs(r.floor_ms - r.bytes_moved / gbps / 1e6) <= 1e-9 * r.floor_ms
