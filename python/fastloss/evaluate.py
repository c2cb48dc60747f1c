"""Streaming evaluation of saved logits: :func:`eval_file` (the core of ``fastloss eval``).

The logits ``.npy`` file may be far larger than memory. It is read in chunks of rows, and the
resident memory stays bounded by the chunk size whatever the file size:

- On Linux the whole file is mapped read-only (``mmap``) and the kernels read the chunk straight
  from the page cache (no copy). Pages of a mapped file count towards the process's resident set
  while they are mapped, so once a chunk is done its pages are unmapped from the process with
  ``madvise(MADV_DONTNEED)`` (they stay in the page cache; nothing is written or lost). At any
  time at most one chunk of logits (and of targets) is mapped.
- Elsewhere (no ``madvise``, or ``MADV_DONTNEED`` that only hints) each chunk is read with
  ``readinto`` into one reusable buffer of the chunk size (one extra copy).

Per-token losses (``per_token=``) are written to the output ``.npy`` file with ordinary
sequential writes after its header, so they live in the page cache, not in the process.
"""

from __future__ import annotations

import math
import mmap
import operator
import os
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["eval_file"]

#: Default chunk: about this many bytes of logits (and targets, and per-row temporaries).
CHUNK_BYTES = 64 << 20

_USE_MMAP = (sys.platform.startswith("linux") and hasattr(mmap, "MADV_DONTNEED")
             and hasattr(mmap.mmap, "madvise"))


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


class _NpyRows:
    """A C-order ``.npy`` file read as consecutive chunks of rows of ``row_items`` elements,
    with at most one chunk resident at a time."""

    def __init__(self, path: Any, what: str):
        self.path, self.what = os.fspath(path), what
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{what} file {self.path!r} does not exist")
        if os.path.isdir(self.path):
            raise ValueError(f"{what} file {self.path!r} is a directory, not a .npy file")
        try:
            with open(self.path, "rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    raise ValueError(f"{what} file {self.path!r} is not a .npy file (no .npy "
                                     "magic string at its start)")
                f.seek(0)
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(f)
                self.offset = f.tell()
                size = os.fstat(f.fileno()).st_size
        except Exception as e:  # a corrupt header: numpy raises ValueError, EOFError, and also
            # tokenize.TokenError or SyntaxError (found by the fuzzer, tests/fuzz)
            if isinstance(e, OSError):
                raise
            if str(e).startswith(f"{what} file"):
                raise
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{what} file {self.path!r} has an unreadable .npy header "
                             f"({msg})") from None
        self.shape, self.dtype = tuple(shape), dtype
        if dtype.hasobject:
            raise TypeError(f"{what} file {self.path!r} holds Python objects (dtype {dtype}); "
                            "expected numbers")
        need = self.offset + math.prod(self.shape) * dtype.itemsize
        if size < need:
            raise ValueError(f"{what} file {self.path!r} is truncated: its header says "
                             f"{need - self.offset:,} bytes of data, it holds "
                             f"{max(size - self.offset, 0):,}")
        if fortran and sum(n > 1 for n in self.shape) > 1:
            raise ValueError(f"{what} file {self.path!r} is stored in Fortran order; rows must be "
                             "contiguous: save np.ascontiguousarray(a) instead")
        self.file = self.mm = self.buf = None
        self.released = 0

    def open(self, row_items: int, max_rows: int, use_mmap: bool) -> None:
        self.row_items = row_items
        self.row_bytes = row_items * self.dtype.itemsize
        self.file = open(self.path, "rb", buffering=0)
        size = os.fstat(self.file.fileno()).st_size
        if use_mmap and size > 0:
            self.mm = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        else:
            self.buf = np.empty(max(max_rows, 1) * row_items, dtype=self.dtype)

    def rows(self, start: int, n: int) -> np.ndarray:
        """Rows ``start .. start + n`` as a 1-d array of ``n * row_items`` elements."""
        pos = self.offset + start * self.row_bytes
        if self.mm is not None:
            return np.frombuffer(self.mm, dtype=self.dtype, count=n * self.row_items, offset=pos)
        out = self.buf[: n * self.row_items]
        view = memoryview(out.view(np.uint8))
        self.file.seek(pos)
        got = 0
        while got < len(view):
            k = self.file.readinto(view[got:])
            if not k:
                raise ValueError(f"{self.what} file {self.path!r} ended early (truncated?)")
            got += k
        return out

    def release(self, end_row: Optional[int] = None) -> None:
        """Unmap from this process the pages of every row before ``end_row`` (all with None)."""
        if self.mm is None:
            return
        if end_row is None:
            end = len(self.mm)
        else:
            end = (self.offset + end_row * self.row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > self.released:
            self.mm.madvise(mmap.MADV_DONTNEED, self.released, end - self.released)
            self.released = end

    def rewind(self) -> None:
        self.release()
        self.released = 0

    def close(self) -> None:
        if self.mm is not None:
            self.release()
            try:
                self.mm.close()
            except BufferError:  # a view is still alive somewhere (an exception's traceback)
                pass
            self.mm = None
        if self.file is not None:
            self.file.close()
            self.file = None
        self.buf = None


def _logits_dtype(f: _NpyRows) -> np.dtype:
    dt = f.dtype
    if dt.kind == "V" and dt.itemsize == 2 and dt.names is None:
        bf16 = _bfloat16()  # np.save writes ml_dtypes.bfloat16 arrays with descr '|V2'
        if bf16 is None:
            raise TypeError(f"logits file {f.path!r} has dtype |V2, which is how np.save stores "
                            "ml_dtypes.bfloat16; install ml_dtypes to read it")
        return bf16.newbyteorder("=")
    if dt.name == "bfloat16" or (dt.kind == "f" and dt.itemsize in (2, 4, 8)):
        return dt
    raise TypeError(f"logits file {f.path!r} has dtype {dt}; expected float16, float32, float64 "
                    "or bfloat16")


def _loss_dtype_of(ldtype: np.dtype) -> np.dtype:
    """What the losses of logits of this dtype are computed in."""
    return np.dtype(np.float64 if ldtype.kind == "f" and ldtype.itemsize == 8 else np.float32)


def _check_options(ignore_index, label_smoothing, softcap, n_bytes, chunk_rows):
    from ._validation import check_int, check_real
    from .classification import _check_z_softcap

    ignore_index = check_int(ignore_index, "ignore_index")
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    _, cap = _check_z_softcap(0.0, softcap)
    nb = None
    if n_bytes is not None:
        number = isinstance(n_bytes, (int, float, np.number))
        if isinstance(n_bytes, (bool, np.bool_)) or not number:
            raise TypeError(f"n_bytes must be a positive number, got {type(n_bytes).__name__}")
        nb = float(n_bytes)
        if not (0 < nb < math.inf):
            raise ValueError(f"n_bytes must be a positive finite number of bytes, got {n_bytes!r}")
    if chunk_rows is not None:
        if isinstance(chunk_rows, (bool, np.bool_)):
            raise TypeError("chunk_rows must be a positive integer, got a bool")
        try:
            chunk_rows = operator.index(chunk_rows)
        except TypeError:
            raise TypeError(f"chunk_rows must be a positive integer, got "
                            f"{type(chunk_rows).__name__}") from None
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows}")
    return ignore_index, eps, (cap if softcap is not None else None), nb, chunk_rows


def _int64_targets(t: np.ndarray) -> np.ndarray:
    if t.dtype.kind == "u" and t.dtype.itemsize == 8:
        big = t > np.iinfo(np.int64).max
        if big.any():
            return np.where(big, np.int64(np.iinfo(np.int64).max), t.astype(np.int64))
    return t.astype(np.int64, copy=False)


def _npy_header(path: str, dtype: np.dtype, shape: tuple) -> int:
    """Write the header of a C-order ``.npy`` file of ``dtype`` and ``shape``, size the file
    (sparse) and return the offset of the data."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + math.prod(shape) * dtype.itemsize)
    return offset


def eval_file(
    logits_path: Any,
    targets_path: Any,
    *,
    chunk_rows: Optional[int] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    softcap: Optional[float] = None,
    n_bytes: Optional[float] = None,
    per_token: Any = None,
    progress: Optional[Callable[[int, int], None]] = None,
    _io: Optional[str] = None,
) -> dict:
    """Cross-entropy, perplexity and bits-per-byte of saved logits, streamed from disk.

    ``logits_path`` is a ``.npy`` file of shape ``(..., V)`` (float32, float16, float64 or
    ``ml_dtypes.bfloat16``, which ``np.save`` stores as ``|V2``), ``targets_path`` a ``.npy``
    file of integer class indices with the logits' shape without the last axis. The files are
    read in chunks of ``chunk_rows`` rows (default: about 64 MB a chunk) and the resident
    memory stays bounded by the chunk size whatever the file size (see the module notes);
    every chunk goes through ``fl.cross_entropy(..., reduction="none")`` and the losses are
    summed in float64.

    Parameters
    ----------
    ignore_index, label_smoothing, softcap
        As :func:`fastloss.cross_entropy`. Ignored tokens have loss 0 and are left out of the
        mean, the perplexity and the evaluated count.
    n_bytes : number, optional
        Number of bytes of text the tokens cover; gives ``bits_per_byte`` = total nats /
        (ln 2 * n_bytes).
    per_token : path, optional
        Also write the per-token losses (the targets' shape; float32, float64 for float64
        logits; 0 for ignored tokens) to this ``.npy`` file, chunk by chunk. It is removed if
        the evaluation fails part way.
    progress : callable, optional
        Called as ``progress(bytes_done, bytes_total)`` (bytes of logits) after every chunk.

    Returns
    -------
    dict
        ``mean_loss`` (nats per evaluated token), ``perplexity``, ``bits_per_byte`` (None
        without ``n_bytes``), ``total_loss`` (nats), ``tokens``, ``evaluated_tokens``,
        ``ignored_tokens``, the inputs (``logits``, ``targets``, ``shape``, ``vocab``,
        ``dtype``, options), and ``seconds``, ``gb_per_s`` (logits bytes a second),
        ``tokens_per_s``, ``threads``, ``chunk_rows``, ``chunks``, ``io`` ("mmap" or "read").
        ``mean_loss`` and ``perplexity`` are NaN when every token is ignored.

    Errors: ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is not a
    C-order ``.npy`` array or shapes that do not match, ``TypeError`` for unsupported dtypes,
    ``IndexError`` for a target out of range (naming its position); all before any loss is
    computed or any output written.

    Examples
    --------
    >>> import os, tempfile, numpy as np, fastloss as fl
    >>> folder = tempfile.mkdtemp()
    >>> logits = np.log([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]])  # (1, 2, 3)
    >>> np.save(os.path.join(folder, "logits.npy"), logits)
    >>> np.save(os.path.join(folder, "targets.npy"), np.array([[0, 1]]))
    >>> r = fl.eval_file(os.path.join(folder, "logits.npy"),
    ...                  os.path.join(folder, "targets.npy"))
    >>> r["evaluated_tokens"], round(r["perplexity"], 6)  # exp(-(log 0.5 + log 0.8) / 2)
    (2, 1.581139)
    >>> import shutil; shutil.rmtree(folder)
    """
    from . import get_num_threads
    from .classification import cross_entropy

    t0 = time.perf_counter()
    ignore_index, eps, cap, nb, chunk_rows = _check_options(
        ignore_index, label_smoothing, softcap, n_bytes, chunk_rows)
    use_mmap = _USE_MMAP if _io is None else (_io == "mmap")

    lf = _NpyRows(logits_path, "logits")
    tf = _NpyRows(targets_path, "targets")
    ldtype = _logits_dtype(lf)
    lf.dtype = ldtype
    if cap is not None:  # (finite in the compute type: float32 for 16- and 32-bit logits)
        from .classification import _check_z_softcap
        _check_z_softcap(0.0, cap, _loss_dtype_of(ldtype))
    if len(lf.shape) == 0:
        raise ValueError(f"logits file {lf.path!r} holds a scalar; expected shape (..., V)")
    vocab = lf.shape[-1]
    if vocab == 0:
        raise ValueError(f"logits file {lf.path!r} has shape {lf.shape}: the class axis is empty")
    if tf.dtype.kind not in "iu":
        raise TypeError(f"targets file {tf.path!r} has dtype {tf.dtype}; class indices must be "
                        "integers")
    if tf.shape != lf.shape[:-1]:
        raise ValueError(f"targets file {tf.path!r} has shape {tf.shape}, but the logits "
                         f"{lf.shape} need targets of shape {lf.shape[:-1]}")
    loss_dtype = _loss_dtype_of(ldtype)
    if per_token is not None:
        per_token = os.fspath(per_token)
        for f in (lf, tf):
            if os.path.exists(per_token) and os.path.samefile(per_token, f.path):
                raise ValueError(f"per_token {per_token!r} is the {f.what} file; refusing to "
                                 "overwrite an input")
        if os.path.isdir(per_token):
            raise ValueError(f"per_token {per_token!r} is a directory")
        parent = os.path.dirname(os.path.abspath(per_token))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"per_token: directory {parent!r} does not exist")

    rows = math.prod(tf.shape)
    if chunk_rows is None:
        row_cost = vocab * ldtype.itemsize + tf.dtype.itemsize + 8 + 8 + loss_dtype.itemsize + 2
        chunk_rows = max(1, CHUNK_BYTES // row_cost)
    chunk_rows = max(1, min(chunk_rows, rows))
    total_bytes = rows * vocab * ldtype.itemsize

    result = {"logits": lf.path, "targets": tf.path, "shape": list(lf.shape), "vocab": vocab,
              "dtype": ldtype.name, "targets_dtype": tf.dtype.name,
              "ignore_index": ignore_index, "label_smoothing": eps, "softcap": cap,
              "n_bytes": n_bytes}
    out = None
    try:
        lf.open(vocab, chunk_rows, use_mmap)
        tf.open(1, chunk_rows, use_mmap)
        # Pass 1 over the (small) targets: range check and ignored count, before any work.
        ignored = 0
        for i in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - i)
            t = _int64_targets(tf.rows(i, n))
            keep = t != ignore_index
            bad = keep & ((t < 0) | (t >= vocab))
            if bad.any():
                k = i + int(np.flatnonzero(bad)[0])
                pos = tuple(int(j) for j in np.unravel_index(k, tf.shape)) if tf.shape else ()
                raise IndexError(
                    f"targets[{', '.join(map(str, pos))}] = {tf.rows(k, 1)[0]} is out of range: "
                    f"class indices must be in [0, {vocab - 1}] (the logits have {vocab} "
                    f"classes) or equal ignore_index={ignore_index}")
            ignored += n - int(np.count_nonzero(keep))
            del t, keep, bad
            tf.release(i + n)
        tf.rewind()

        if per_token is not None:
            offset = _npy_header(per_token, loss_dtype, tf.shape)
            out = open(per_token, "r+b")  # noqa: SIM115 (closed below)
            out.seek(offset)
        if progress is not None:
            progress(0, total_bytes)
        total, chunks = 0.0, 0
        for i in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - i)
            x = lf.rows(i, n).reshape(n, vocab)
            losses = cross_entropy(x, tf.rows(i, n), reduction="none",
                                   ignore_index=ignore_index, label_smoothing=eps, softcap=cap)
            del x
            total += float(np.sum(losses, dtype=np.float64))
            if out is not None:
                out.write(memoryview(np.ascontiguousarray(losses, dtype=loss_dtype)).cast("B"))
            del losses
            lf.release(i + n)
            tf.release(i + n)
            chunks += 1
            if progress is not None:
                progress(min((i + n) * vocab * ldtype.itemsize, total_bytes), total_bytes)
    except BaseException:
        if out is not None:
            out.close()
            out = None
            try:
                os.remove(per_token)
            except OSError:
                pass
        raise
    finally:
        if out is not None:
            out.close()
        lf.close()
        tf.close()

    seconds = time.perf_counter() - t0
    evaluated = rows - ignored
    mean = total / evaluated if evaluated else math.nan
    try:
        ppl = math.exp(mean)
    except OverflowError:
        ppl = math.inf
    result.update({
        "tokens": rows, "evaluated_tokens": evaluated, "ignored_tokens": ignored,
        "total_loss": total, "mean_loss": mean, "perplexity": ppl,
        "bits_per_byte": None if nb is None else total / (math.log(2) * nb),
        "per_token": per_token, "per_token_dtype": loss_dtype.name if per_token else None,
        "bytes": total_bytes, "seconds": seconds,
        "gb_per_s": total_bytes / seconds / 1e9 if seconds > 0 else math.inf,
        "tokens_per_s": rows / seconds if seconds > 0 else math.inf,
        "threads": get_num_threads(), "chunk_rows": chunk_rows, "chunks": chunks,
        "chunk_bytes": chunk_rows * vocab * ldtype.itemsize,
        "io": "mmap" if use_mmap else "read",
    })
    return result
