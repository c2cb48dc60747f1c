"""fastloss.eval_file and ``fastloss eval``: streamed results equal fl.cross_entropy on the
whole array; bad input gives a one-line error and exit status 2; resident memory stays
bounded by the chunk size for a file many times larger."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastloss as fl
from fastloss.cli import main

IO_MODES = ("mmap", "read")


def _save(tmp_path, logits, target, name="a"):
    lp, tp = tmp_path / f"{name}_logits.npy", tmp_path / f"{name}_targets.npy"
    np.save(lp, logits)
    np.save(tp, target)
    return lp, tp


def _problem(rng, shape=(3, 7), vocab=11, dtype=np.float32, ignore_frac=0.2, ignore_index=-100):
    logits = (rng.normal(0, 3, shape + (vocab,))).astype(dtype)
    target = rng.integers(0, vocab, shape)
    target[rng.random(shape) < ignore_frac] = ignore_index
    return logits, target


def _dtypes():
    out = [np.float32, np.float16, np.float64]
    try:
        import ml_dtypes

        out.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("io", IO_MODES)
@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk_rows", [None, 1, 5, 21, 1000])
def test_matches_cross_entropy(tmp_path, rng, dtype, chunk_rows, io):
    logits, target = _problem(rng, dtype=dtype)
    lp, tp = _save(tmp_path, logits, target)
    r = fl.eval_file(lp, tp, chunk_rows=chunk_rows, _io=io)
    ref_sum = float(np.sum(fl.cross_entropy(logits, target, reduction="none"), dtype=np.float64))
    n_ignored = int(np.sum(target == -100))
    assert r["tokens"] == target.size
    assert r["ignored_tokens"] == n_ignored
    assert r["evaluated_tokens"] == target.size - n_ignored
    assert r["total_loss"] == pytest.approx(ref_sum, rel=1e-12)
    assert r["mean_loss"] == pytest.approx(float(fl.cross_entropy(logits, target)), rel=1e-6)
    assert r["perplexity"] == pytest.approx(float(fl.perplexity(logits, target)), rel=1e-6)
    assert r["bits_per_byte"] is None
    assert r["dtype"] == np.dtype(dtype).name and r["vocab"] == 11 and r["shape"] == [3, 7, 11]
    assert r["io"] == io
    assert r["chunks"] == math.ceil(target.size / r["chunk_rows"])


@pytest.mark.parametrize("io", IO_MODES)
@pytest.mark.parametrize(
    "opts",
    [dict(ignore_index=-1), dict(ignore_index=3), dict(label_smoothing=0.1),
     dict(softcap=2.0), dict(label_smoothing=0.25, softcap=5.0, ignore_index=0)],
    ids=["ignore=-1", "ignore=3", "smoothing", "softcap", "all"],
)
def test_options_and_per_token(tmp_path, rng, opts, io):
    ii = opts.get("ignore_index", -100)
    logits, target = _problem(rng, shape=(4, 6), vocab=9, ignore_index=ii)
    lp, tp = _save(tmp_path, logits, target)
    out = tmp_path / "losses.npy"
    r = fl.eval_file(lp, tp, chunk_rows=5, per_token=out, _io=io, **opts)
    ref = fl.cross_entropy(logits, target, reduction="none", **opts)
    per = np.load(out)
    assert per.shape == target.shape and per.dtype == np.float32
    np.testing.assert_allclose(per, ref, rtol=1e-6, atol=0)
    assert np.all(per[target == ii] == 0)
    assert r["ignored_tokens"] == int(np.sum(target == ii))
    assert r["mean_loss"] == pytest.approx(float(fl.cross_entropy(logits, target, **opts)),
                                           rel=1e-6)
    assert r["per_token"] == os.fspath(out) and r["per_token_dtype"] == "float32"


def test_per_token_float64_and_shapes(tmp_path, rng):
    # float64 logits give float64 losses; 1-d logits are one token; 4-d logits keep (a, b, c)
    logits, target = _problem(rng, shape=(2, 3, 4), vocab=5, dtype=np.float64)
    lp, tp = _save(tmp_path, logits, target)
    out = tmp_path / "o.npy"
    fl.eval_file(lp, tp, chunk_rows=7, per_token=out)
    per = np.load(out)
    assert per.dtype == np.float64 and per.shape == (2, 3, 4)
    np.testing.assert_allclose(per, fl.cross_entropy(logits, target, reduction="none"),
                               rtol=1e-13)
    lp, tp = _save(tmp_path, np.array([0.5, 2.0, -1.0], np.float32), np.array(1), "one")
    r = fl.eval_file(lp, tp, per_token=out)
    assert r["tokens"] == 1 and r["shape"] == [3]
    assert r["mean_loss"] == pytest.approx(float(fl.cross_entropy([[0.5, 2.0, -1.0]], [1])))
    assert np.load(out).shape == ()


def test_bits_per_byte(tmp_path, rng):
    logits, target = _problem(rng, shape=(5, 4), vocab=256)
    lp, tp = _save(tmp_path, logits, target)
    r = fl.eval_file(lp, tp, n_bytes=77, chunk_rows=3)
    assert r["bits_per_byte"] == pytest.approx(
        float(fl.bits_per_byte(logits, target, n_bytes=77)), rel=1e-6)
    assert r["bits_per_byte"] == pytest.approx(r["total_loss"] / (math.log(2) * 77), rel=1e-15)
    # uniform logits over 256 classes: 8 bits per token, one byte per token -> 8 bits/byte
    lp, tp = _save(tmp_path, np.zeros((10, 256), np.float16), np.arange(10), "u")
    assert fl.eval_file(lp, tp, n_bytes=10)["bits_per_byte"] == pytest.approx(8.0, rel=1e-6)


def test_all_ignored_and_empty(tmp_path):
    lp, tp = _save(tmp_path, np.zeros((4, 3), np.float32), np.full(4, -100))
    r = fl.eval_file(lp, tp)
    assert r["evaluated_tokens"] == 0 and r["ignored_tokens"] == 4 and r["total_loss"] == 0
    assert math.isnan(r["mean_loss"]) and math.isnan(r["perplexity"])
    lp, tp = _save(tmp_path, np.zeros((0, 3), np.float32), np.zeros(0, np.int64), "e")
    r = fl.eval_file(lp, tp, per_token=tmp_path / "pe.npy")
    assert r["tokens"] == 0 and math.isnan(r["mean_loss"])
    assert np.load(tmp_path / "pe.npy").shape == (0,)


def test_target_dtypes_and_progress(tmp_path, rng):
    logits, target = _problem(rng, shape=(30,), vocab=7, ignore_frac=0.0)
    calls = []
    for tdt in (np.uint8, np.int16, np.uint64, ">i8"):
        lp, tp = _save(tmp_path, logits, target.astype(tdt))
        calls.clear()
        r = fl.eval_file(lp, tp, chunk_rows=8, progress=lambda d, t: calls.append((d, t)))
        assert r["mean_loss"] == pytest.approx(float(fl.cross_entropy(logits, target)), rel=1e-6)
    assert calls[0] == (0, logits.nbytes) and calls[-1] == (logits.nbytes, logits.nbytes)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 1 + 4


def test_bad_input_raises_before_writing(tmp_path, rng):
    logits, target = _problem(rng, shape=(10,), vocab=4, ignore_frac=0.0)
    target[7] = 4
    lp, tp = _save(tmp_path, logits, target)
    out = tmp_path / "never.npy"
    with pytest.raises(IndexError, match=r"targets\[7\] = 4 is out of range"):
        fl.eval_file(lp, tp, per_token=out)
    assert not out.exists()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        fl.eval_file(lp, tp, per_token=lp)
    with pytest.raises(ValueError, match="chunk_rows"):
        fl.eval_file(lp, tp, chunk_rows=0)
    with pytest.raises(ValueError, match="n_bytes"):
        fl.eval_file(lp, tp, n_bytes=-3)


# --- the command line -------------------------------------------------------------------------

def test_cli_human_and_json(tmp_path, rng, capsys):
    logits, target = _problem(rng, shape=(6, 5), vocab=50)
    lp, tp = _save(tmp_path, logits, target)
    jp, pp = tmp_path / "r.json", tmp_path / "pt.npy"
    assert main(["eval", str(lp), str(tp), "--bytes", "123", "--chunk-rows", "4", "--quiet",
                 "--per-token", str(pp), "--json", str(jp), "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "cross-entropy" in out and "perplexity" in out and "bits per byte" in out
    assert "GB/s" in out and "tokens/s" in out and f"wrote {jp}" in out
    r = json.loads(jp.read_text())
    assert r["mean_loss"] == pytest.approx(float(fl.cross_entropy(logits, target)), rel=1e-6)
    assert r["bits_per_byte"] == pytest.approx(
        float(fl.bits_per_byte(logits, target, n_bytes=123)), rel=1e-6)
    assert r["threads"] == 1 and r["chunk_rows"] == 4 and r["per_token"] == str(pp)
    np.testing.assert_allclose(np.load(pp), fl.cross_entropy(logits, target, reduction="none"),
                               rtol=1e-6)
    # --json -: only the JSON on stdout (strict JSON: NaN as null)
    lp2, tp2 = _save(tmp_path, logits, np.full(target.shape, 5), "ign")
    assert main(["eval", str(lp2), str(tp2), "--ignore-index", "5", "--json", "-",
                 "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mean_loss"] is None and r["perplexity"] is None and r["ignored_tokens"] == 30


def test_cli_plain_progress_without_rich(tmp_path, rng, capsys, monkeypatch):
    lp, tp = _save(tmp_path, *_problem(rng, shape=(40,), vocab=3))
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich... raises ImportError
    assert main(["eval", str(lp), str(tp), "--chunk-rows", "3"]) == 0
    err = capsys.readouterr().err
    assert "fastloss eval" in err and "100%" in err


def _bad_inputs(tmp_path):
    d = tmp_path
    x = np.zeros((3, 4, 5), np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "t.npy", np.zeros((3, 4), np.int64))
    np.save(d / "t_range.npy", np.full((3, 4), 5))
    np.save(d / "t_neg.npy", np.full((3, 4), -2))
    np.save(d / "t_float.npy", np.zeros((3, 4)))
    np.save(d / "t_bool.npy", np.zeros((3, 4), bool))
    np.save(d / "t_shape.npy", np.zeros((3, 5), np.int64))
    np.save(d / "x_int.npy", np.zeros((3, 4, 5), np.int32))
    np.save(d / "x_fortran.npy", np.asfortranarray(x))
    np.save(d / "x_obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    np.save(d / "x_empty_v.npy", np.zeros((3, 4, 0), np.float32))
    (d / "x_text.npy").write_bytes(b"not an array")
    (d / "x_trunc.npy").write_bytes((d / "x.npy").read_bytes()[:-8])
    return {
        "missing logits": (["nope.npy", "t.npy"], "does not exist"),
        "missing targets": (["x.npy", "nope.npy"], "does not exist"),
        "out of range": (["x.npy", "t_range.npy"], "out of range"),
        "negative": (["x.npy", "t_neg.npy"], "out of range"),
        "float targets": (["x.npy", "t_float.npy"], "must be integers"),
        "bool targets": (["x.npy", "t_bool.npy"], "must be integers"),
        "shape mismatch": (["x.npy", "t_shape.npy"], "need targets of shape (3, 4)"),
        "int logits": (["x_int.npy", "t.npy"], "expected float16, float32"),
        "fortran": (["x_fortran.npy", "t.npy"], "Fortran order"),
        "object": (["x_obj.npy", "t.npy"], "Python objects"),
        "no classes": (["x_empty_v.npy", "t.npy"], "class axis is empty"),
        "not npy": (["x_text.npy", "t.npy"], "not a .npy file"),
        "truncated": (["x_trunc.npy", "t.npy"], "truncated"),
        "directory": ([".", "t.npy"], "is a directory"),
        "softcap": (["x.npy", "t.npy", "--softcap", "-1"], "softcap"),
        "smoothing": (["x.npy", "t.npy", "--label-smoothing", "1.5"], "label_smoothing"),
        "per-token dir": (["x.npy", "t.npy", "--per-token", "no/such/dir/o.npy"],
                          "does not exist"),
        "per-token input": (["x.npy", "t.npy", "--per-token", "t.npy"], "refusing to overwrite"),
        "chunk rows": (["x.npy", "t.npy", "--chunk-rows", "0"], "--chunk-rows must be >= 1"),
        "bytes": (["x.npy", "t.npy", "--bytes", "0"], "--bytes must be >= 1"),
        "threads": (["x.npy", "t.npy", "--threads", "0"], "--threads must be >= 1"),
    }


def _run(argv):
    """main(argv)'s exit status, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_cli_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, (args, msg) in _bad_inputs(tmp_path).items():
        rc = _run(["eval", *args, "--quiet"])
        out, err = capsys.readouterr()
        assert rc == 2, name
        assert out == "" and msg in err, (name, err)
        assert "Traceback" not in err, name
        last = err.strip().splitlines()[-1]
        if last.startswith("fastloss eval: error:"):
            assert len(err.strip().splitlines()) == 1, (name, err)
        else:  # argparse: usage line, then the error
            assert last.startswith("fastloss: error:"), (name, err)
    assert np.load(tmp_path / "t.npy").shape == (3, 4)  # the input was not overwritten


def test_cli_subprocess_exit_status(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "t.npy", np.array([0, 3]))
    cmd = [sys.executable, "-m", "fastloss.cli", "eval", "x.npy", "t.npy", "--quiet"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "targets[1] = 3 is out of range" in p.stderr
    np.save(tmp_path / "t.npy", np.array([0, 2]))
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "perplexity     3" in p.stdout


# --- resident memory stays bounded by the chunk size -------------------------------------------

_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import fastloss as fl

    small_l, small_t, big_l, big_t, out, chunk_rows = sys.argv[1:7]
    chunk_rows = int(chunk_rows)

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise OSError(key)

    def reset():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return "clear_refs", status("VmRSS:")
        except OSError:
            return "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    fl.eval_file(small_l, small_t, per_token=out)  # imports and first-call set-up
    res = {}
    for io in ("mmap", "read"):
        how, before = reset()
        r = fl.eval_file(big_l, big_t, chunk_rows=chunk_rows, per_token=out, _io=io)
        peak = (status("VmHWM:") if how == "clear_refs"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        res[io] = dict(how=how, growth=peak - before, chunks=r["chunks"], tokens=r["tokens"],
                       mean=r["mean_loss"], chunk_bytes=r["chunk_bytes"])
    print(json.dumps(res))
""")


def _write_big(path, rows, vocab, block_rows, fill):
    """A C-order float32 .npy of (rows, vocab) written block by block (bounded memory)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, vocab)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for i in range(0, rows, block_rows):
            n = min(block_rows, rows - i)
            f.write(fill[: n * vocab].tobytes())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc (Linux)")
def test_peak_rss_bounded_by_chunk(tmp_path, rng):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("/proc/self/status is not available")
    vocab, rows = 8, 12_500_000  # 400 MB of float32 logits, 100 MB of int64 targets
    need = rows * vocab * 4 + rows * 8 + rows * 4 + (64 << 20)
    if shutil.disk_usage(tmp_path).free < need + (256 << 20):
        pytest.skip(f"the temporary directory has less than {need / 1e9:.1f} GB free")
    chunk_rows = (16 << 20) // (vocab * 4)  # 16 MB of logits a chunk, 24 chunks
    block = 1 << 20
    fill = rng.normal(0, 2, block * vocab).astype(np.float32)
    big_l, big_t = tmp_path / "big_logits.npy", tmp_path / "big_targets.npy"
    _write_big(big_l, rows, vocab, block, fill)
    tfill = rng.integers(0, vocab, block)
    tfill[::7] = -100
    with open(big_t, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<i8", "fortran_order": False, "shape": (rows,)})
        for i in range(0, rows, block):
            f.write(tfill[: min(block, rows - i)].tobytes())
    small_l, small_t = _save(tmp_path, fill[:80].reshape(10, 8), tfill[:10], "small")
    out = tmp_path / "per_token.npy"
    p = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(small_l), str(small_t),
                        str(big_l), str(big_t), str(out), str(chunk_rows)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    chunk_bytes = chunk_rows * vocab * 4
    bound = 4 * chunk_bytes + (60 << 20)
    for io, r in res.items():
        assert r["tokens"] == rows and r["chunks"] == math.ceil(rows / chunk_rows)
        assert r["chunk_bytes"] == chunk_bytes
        # 400 MB of logits, 100 MB of targets and 50 MB of per-token losses went through
        assert r["growth"] < bound, (io, r, bound)
    assert res["mmap"]["mean"] == pytest.approx(res["read"]["mean"], rel=1e-12)
    per = np.load(out, mmap_mode="r")
    assert per.shape == (rows,) and per.dtype == np.float32
    head = fl.cross_entropy(fill[: 1000 * vocab].reshape(1000, vocab), tfill[:1000],
                            reduction="none")
    np.testing.assert_allclose(per[:1000], head, rtol=1e-6)
