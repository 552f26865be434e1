"""MLP classifier (ReLU hidden layers, softmax cross-entropy), e.g. for 8x8 digits.

Parameters: ``layers.{i}.weight[in, out]`` and ``layers.{i}.bias[out]``;
the last layer gives the class logits. One fused numba call computes the
loss and all gradients.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config import JIT, MLPConfig
from ..ops._check import FLOATS
from ..ops.linear import _colsum_kernel
from ..ops.xent import _xent_fwd_bwd_kernel


@njit(**JIT)
def _dense_kernel(h, w, b, relu):
    z = np.dot(h, w)
    n, m = z.shape
    for i in range(n):
        zi = z[i]
        for j in range(m):
            v = zi[j] + b[j]
            if relu and v < 0.0:
                v = 0.0
            zi[j] = v
    return z


@njit(**JIT)
def _mlp_forward_kernel(x, ws, bs):
    n_layers = len(ws)
    h = x
    for i in range(n_layers):
        h = _dense_kernel(h, ws[i], bs[i], i < n_layers - 1)
    return h


@njit(**JIT)
def _mlp_loss_grad_kernel(x, y, ws, bs):
    """Return ``(mean loss, [dW_i], [db_i])`` for labels y[N]."""
    n_layers = len(ws)
    acts = [x]
    h = x
    for i in range(n_layers):
        h = _dense_kernel(h, ws[i], bs[i], i < n_layers - 1)
        acts.append(h)
    loss = _xent_fwd_bwd_kernel(h, y, h)  # h now holds dlogits
    dws = [ws[0]] * n_layers
    dbs = [bs[0]] * n_layers
    d = h
    for i in range(n_layers - 1, -1, -1):
        a = acts[i]
        dws[i] = np.dot(a.T, d)
        dbs[i] = _colsum_kernel(d)
        if i > 0:
            dprev = np.dot(d, ws[i].T)
            n, k = dprev.shape
            for r in range(n):
                ar = a[r]
                pr = dprev[r]
                for j in range(k):
                    if ar[j] <= 0.0:
                        pr[j] = 0.0
            d = dprev
    return loss, dws, dbs


class MLPClassifier:
    """``MLPClassifier(MLPConfig(n_in=64, hidden=(128, 64), n_out=10))``."""

    family = "mlp"
    # DataParallel splits a batch only when each worker gets this many examples:
    # at 64-128-64-10, 2 workers x 128 rows still lose to one call (thread
    # hand-off ~0.1 ms vs a 0.3 ms step); 2 x 256 win by ~1.5x.
    min_rows_per_worker = 256

    def __init__(self, cfg: MLPConfig):
        if not isinstance(cfg, MLPConfig):
            raise ValueError(f"MLPClassifier needs an MLPConfig (got {type(cfg).__name__})")
        self.config = cfg
        self.sizes = (cfg.n_in, *cfg.hidden, cfg.n_out)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def param_shapes(self) -> dict[str, tuple]:
        shapes: dict[str, tuple] = {}
        for i in range(self.n_layers):
            shapes[f"layers.{i}.weight"] = (self.sizes[i], self.sizes[i + 1])
            shapes[f"layers.{i}.bias"] = (self.sizes[i + 1],)
        return shapes

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """He-normal weights (std sqrt(2/fan_in)), zero biases, from one PCG64 stream."""
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int (got {seed!r})")
        rng = np.random.default_rng(int(seed))
        out = {}
        for name, shape in self.param_shapes().items():
            if name.endswith(".bias"):
                out[name] = np.zeros(shape, dtype=np.float32)
            else:
                w = rng.standard_normal(shape, dtype=np.float32)
                w *= np.float32(math.sqrt(2.0 / shape[0]))
                out[name] = w
        return out

    def _unpack(self, params):
        shapes = self.param_shapes()
        dtype = None
        for name, shape in shapes.items():
            if name not in params:
                raise ValueError(f"params is missing {name!r}")
            a = params[name]
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype not in FLOATS:
                raise ValueError(
                    f"params[{name!r}] must be a float32/float64 array of shape "
                    f"{shape} (got {getattr(a, 'dtype', type(a))} "
                    f"{getattr(a, 'shape', '')})"
                )
            if dtype is None:
                dtype = a.dtype
            elif a.dtype != dtype or not a.flags.c_contiguous:
                raise ValueError(f"params[{name!r}] must be C-contiguous {dtype}")
        ws = tuple(params[f"layers.{i}.weight"] for i in range(self.n_layers))
        bs = tuple(params[f"layers.{i}.bias"] for i in range(self.n_layers))
        return ws, bs, dtype

    def _check_x(self, x, dtype):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.config.n_in:
            raise ValueError(
                f"x must be a 2-D array [n, {self.config.n_in}] "
                f"(got shape {getattr(x, 'shape', type(x).__name__)})"
            )
        if x.shape[0] < 1:
            raise ValueError("x must have at least one row")
        if not np.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        return np.ascontiguousarray(x, dtype=dtype)

    def forward(self, params: dict, x: np.ndarray) -> np.ndarray:
        """Class logits [n, n_out]."""
        ws, bs, dtype = self._unpack(params)
        return _mlp_forward_kernel(self._check_x(x, dtype), ws, bs)

    def loss_and_grads(self, params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        """Mean cross-entropy of labels y[n] and its gradients."""
        ws, bs, dtype = self._unpack(params)
        x = self._check_x(x, dtype)
        y = np.asarray(y)
        if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
            raise ValueError(f"y must be int[{x.shape[0]}] (got {y.dtype} shape {y.shape})")
        if y.min() < 0 or y.max() >= self.config.n_out:
            raise ValueError(f"labels must lie in [0, {self.config.n_out})")
        loss, dws, dbs = _mlp_loss_grad_kernel(x, np.ascontiguousarray(y, dtype=np.int64), ws, bs)
        grads = {}
        for i in range(self.n_layers):
            grads[f"layers.{i}.weight"] = dws[i]
            grads[f"layers.{i}.bias"] = dbs[i]
        return float(loss), grads

    def predict(self, params: dict, x: np.ndarray) -> np.ndarray:
        """Predicted class ids int64[n]."""
        return np.argmax(self.forward(params, x), axis=1).astype(np.int64)
