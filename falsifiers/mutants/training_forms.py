"""Known-bad variants of the trainer's engine that differ only on a form a documented
option allows but the training checks did not exercise before (issue 13, class 1:
oracles narrower than the spec; contracts/training.yaml).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.parallel import _scaled_sum_kernel


def data_parallel_equal_weights(self: Any, params: dict, *batch: Any) -> tuple[float, dict]:
    """``DataParallel.loss_and_grads`` that averages the workers' mean losses and
    gradients with equal weights 1/n instead of rows_i / rows: right whenever the
    workers get equal slices (a batch size the thread count divides), wrong on an
    uneven split (kernels.parallel:DataParallel.loss_and_grads)."""
    rows = len(batch[0])
    n = min(self.n_workers, rows // self.min_rows)
    if n <= 1 or self._pool is None:
        return self.model.loss_and_grads(params, *batch)
    bounds = np.linspace(0, rows, n + 1).astype(np.int64)
    parts = [tuple(b[bounds[i] : bounds[i + 1]] for b in batch) for i in range(n)]
    results = list(self._pool.map(lambda part: self.model.loss_and_grads(params, *part), parts))
    w = np.full(n, 1.0 / n)
    loss = float(sum(w[i] * results[i][0] for i in range(n)))
    grads = {}
    for name, g0 in results[0][1].items():
        flat = tuple(np.ascontiguousarray(r[1][name]).reshape(-1) for r in results)
        acc = np.empty_like(g0)
        _scaled_sum_kernel(flat, w, acc.reshape(-1))
        grads[name] = acc
    return loss, grads
