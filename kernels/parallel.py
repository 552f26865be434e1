"""Data-parallel ``loss_and_grads`` over threads.

numba kernels run with ``nogil=True``, so worker threads compute the loss and
gradients of contiguous slices of the batch at the same time; the results are
merged in slice order with weights ``rows_i / rows``, which makes the outcome
deterministic for a given worker count (it differs in the last bits from the
single-call result, whose sums run in another order).

This is how the engine uses more than one thread (:func:`engine_threads`):
BLAS runs single-threaded inside each worker, and the workers split the batch.
On 2 cores that beats one call with two-threaded BLAS because every kernel,
not only the matmuls, runs in parallel, and small matmuls do not pay for
OpenBLAS's thread hand-off (``benchmarks/core_speed.py`` measures both).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numba import njit

from .config import JIT

BLAS_OWNERS = ("numpy", "scipy")  # numpy's OpenBLAS, and scipy's, which numba's np.dot calls


def set_blas_threads(n: int, owners: tuple[str, ...] = BLAS_OWNERS) -> None:
    """Pin the bundled OpenBLAS copies of ``owners`` (numpy's, scipy's) to n threads."""
    for pkg in owners:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.origin:
            continue
        libdir = Path(spec.origin).parent.parent / f"{pkg}.libs"
        for lib in glob.glob(str(libdir / "libscipy_openblas*.so*")):
            try:
                handle = ctypes.CDLL(lib)
            except OSError:
                continue
            for fn in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads"):
                if hasattr(handle, fn):
                    getattr(handle, fn)(int(n))
                    break


def limit_threads(n: int) -> None:
    """Pin numba and both bundled OpenBLAS copies (numpy's, scipy's for numba) to n threads."""
    set_blas_threads(n)
    try:
        import numba

        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass


def engine_threads(n: int) -> None:
    """Set up the engine to use n threads: ``DataParallel(model, n)`` over single-threaded BLAS.

    A result depends on n (merge order), never on timing.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive int (got {n!r})")
    limit_threads(1)


@njit(**JIT)
def _scaled_sum_kernel(parts, weights, out):
    """out[:] = sum_i weights[i] * parts[i], in part order (flat arrays)."""
    w0 = out.dtype.type(weights[0])
    first = parts[0]
    for j in range(out.size):
        out[j] = first[j] * w0
    for i in range(1, len(parts)):
        wi = out.dtype.type(weights[i])
        pi = parts[i]
        for j in range(out.size):
            out[j] += pi[j] * wi


class DataParallel:
    """``DataParallel(model, n_workers).loss_and_grads(params, *batch)``.

    ``batch`` is what ``model.loss_and_grads`` takes after ``params``: tokens
    int[B, T+1] for the transformers, ``(x, y)`` for the MLP classifier. Every
    batch array is split along its first axis.

    ``min_rows`` (default: the model's ``min_rows_per_worker``, else 1) is the
    fewest rows worth a worker: a batch of fewer than ``2 * min_rows`` rows
    runs in one call on the calling thread (for a model as small as the
    digits MLP, handing rows to another thread costs more than it saves).
    """

    def __init__(self, model, n_workers: int = 2, min_rows: int | None = None):
        if min_rows is None:
            min_rows = getattr(model, "min_rows_per_worker", 1)
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive int (got {n_workers!r})")
        if not isinstance(min_rows, int) or min_rows < 1:
            raise ValueError(f"min_rows must be a positive int (got {min_rows!r})")
        self.model = model
        self.n_workers = n_workers
        self.min_rows = min_rows
        self._pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None

    def loss_and_grads(self, params: dict, *batch) -> tuple[float, dict]:
        if not batch:
            raise ValueError("loss_and_grads needs the batch after params")
        rows = len(batch[0])
        if any(len(b) != rows for b in batch):
            raise ValueError(
                f"batch arrays must share their first axis (got {[len(b) for b in batch]})"
            )
        n = min(self.n_workers, rows // self.min_rows)
        if n <= 1 or self._pool is None:
            return self.model.loss_and_grads(params, *batch)
        bounds = np.linspace(0, rows, n + 1).astype(np.int64)
        parts = [tuple(b[bounds[i] : bounds[i + 1]] for b in batch) for i in range(n)]
        results = list(self._pool.map(lambda part: self.model.loss_and_grads(params, *part), parts))
        weights = [(bounds[i + 1] - bounds[i]) / rows for i in range(n)]
        loss = 0.0
        for w, (part_loss, _) in zip(weights, results, strict=True):
            loss += w * part_loss
        grads = {}
        w = np.array(weights, dtype=np.float64)
        for name, g0 in results[0][1].items():
            parts = tuple(np.ascontiguousarray(r[1][name]).reshape(-1) for r in results)
            acc = np.empty_like(g0)
            _scaled_sum_kernel(parts, w, acc.reshape(-1))
            grads[name] = acc
        return float(loss), grads

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
