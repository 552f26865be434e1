"""Data-parallel ``loss_and_grads`` over threads.

numba kernels run with ``nogil=True``, so worker threads compute the loss and
gradients of contiguous slices of the batch at the same time; the results are
merged in slice order with weights ``rows_i / rows``, which makes the outcome
deterministic for a given worker count (it differs in the last bits from the
single-call result, whose sums run in another order).

Use it with BLAS limited to one thread (``kernels.train.limit_threads(1)``):
on 2 cores, two workers with single-threaded BLAS beat one call with
two-threaded BLAS because every kernel, not only the matmuls, runs in parallel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np


class DataParallel:
    """``DataParallel(model, n_workers).loss_and_grads(params, *batch)``.

    ``batch`` is what ``model.loss_and_grads`` takes after ``params``: tokens
    int[B, T+1] for the transformers, ``(x, y)`` for the MLP classifier. Every
    batch array is split along its first axis.
    """

    def __init__(self, model, n_workers: int = 2):
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive int (got {n_workers!r})")
        self.model = model
        self.n_workers = n_workers
        self._pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None

    def loss_and_grads(self, params: dict, *batch) -> tuple[float, dict]:
        if not batch:
            raise ValueError("loss_and_grads needs the batch after params")
        rows = len(batch[0])
        if any(len(b) != rows for b in batch):
            raise ValueError(
                f"batch arrays must share their first axis (got {[len(b) for b in batch]})"
            )
        n = min(self.n_workers, rows)
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
        for name, g0 in results[0][1].items():
            acc = np.multiply(g0, g0.dtype.type(weights[0]))
            for w, (_, g) in zip(weights[1:], results[1:], strict=True):
                acc += g[name] * g0.dtype.type(w)
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
