"""AdamW with bias correction, decoupled weight decay and global-norm clipping.

The optimizer state is a flat dict of arrays (``m.<name>``, ``v.<name>`` and a
0-d int64 ``step``) so it can be written as safetensors and read back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numba import njit

from .config import JIT


@njit(**JIT)
def _sumsq_kernel(g):
    """float64 sum of squares with 8 interleaved accumulators (fixed order)."""
    n = g.size
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for i in range(0, n8, 8):
        a0 += g[i] * g[i]
        a1 += g[i + 1] * g[i + 1]
        a2 += g[i + 2] * g[i + 2]
        a3 += g[i + 3] * g[i + 3]
        a4 += g[i + 4] * g[i + 4]
        a5 += g[i + 5] * g[i + 5]
        a6 += g[i + 6] * g[i + 6]
        a7 += g[i + 7] * g[i + 7]
    for i in range(n8, n):
        a0 += g[i] * g[i]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(**JIT)
def _adamw_kernel(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2, gscale):
    """One AdamW update of flat arrays p, m, v (in place) from flat gradient g.

    Follows torch.optim.AdamW: ``p *= 1 - lr*wd`` then
    ``p -= lr * mhat / (sqrt(vhat) + eps)`` with bias-corrected moments.
    """
    t = p.dtype.type
    b1f = t(b1)
    b2f = t(b2)
    c1 = t(1.0 - b1)
    c2 = t(1.0 - b2)
    step = t(lr / bc1)
    inv_sqrt_bc2 = t(1.0 / math.sqrt(bc2))
    epsf = t(eps)
    decay = t(1.0 - lr * wd)
    gs = t(gscale)
    for i in range(p.size):
        gi = g[i] * gs
        mi = b1f * m[i] + c1 * gi
        vi = b2f * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step * mi / (math.sqrt(vi) * inv_sqrt_bc2 + epsf)


@njit(**JIT)
def _sumsq_all_kernel(gs):
    """Sum of squares over a tuple of flat arrays, in tuple order."""
    total = 0.0
    for k in range(len(gs)):
        total += _sumsq_kernel(gs[k])
    return total


@njit(**JIT)
def _adamw_all_kernel(ps, gs, ms, vs, wds, lr, b1, b2, eps, bc1, bc2, gscale):
    """:func:`_adamw_kernel` over tuples of flat arrays (one call per step)."""
    for k in range(len(ps)):
        _adamw_kernel(ps[k], gs[k], ms[k], vs[k], lr, b1, b2, eps, wds[k], bc1, bc2, gscale)


def global_grad_norm(grads: dict[str, np.ndarray]) -> float:
    """L2 norm over all gradients (float64 sums, names in sorted order)."""
    total = 0.0
    for name in sorted(grads):
        g = grads[name]
        total += _sumsq_kernel(np.ascontiguousarray(g).reshape(-1))
    return math.sqrt(total)


def default_decay(name: str, shape: tuple) -> bool:
    """Decay matrices and embeddings; never biases or norm gains (1-D tensors)."""
    return len(shape) >= 2


class AdamW:
    """AdamW(lr, betas, eps, weight_decay, clip_norm).

    ``step(params, grads, lr=None)`` updates params in place and returns the
    global gradient norm before clipping. ``clip_norm=None`` disables clipping.
    """

    def __init__(
        self,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        clip_norm: float | None = 1.0,
        decay: Callable[[str, tuple], bool] = default_decay,
    ):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0 (got {lr})")
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1) (got {betas})")
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (got {eps})")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0 (got {weight_decay})")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None (got {clip_norm})")
        self.lr = float(lr)
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.decay = decay
        self.t = 0
        self.state: dict[str, np.ndarray] = {}

    def _ensure_state(self, params):
        for name, p in params.items():
            for key in ("m." + name, "v." + name):
                s = self.state.get(key)
                if s is None:
                    self.state[key] = np.zeros_like(p)
                elif s.shape != p.shape or s.dtype != p.dtype:
                    raise ValueError(
                        f"optimizer state {key!r} has shape {s.shape} {s.dtype}, "
                        f"parameter has {p.shape} {p.dtype}"
                    )

    def step(
        self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float | None = None
    ) -> float:
        missing = [n for n in params if n not in grads]
        if missing:
            raise ValueError(f"grads is missing {', '.join(missing[:5])}")
        for name, p in params.items():
            g = grads[name]
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"grads[{name!r}] is {g.shape} {g.dtype}, param is {p.shape} {p.dtype}"
                )
            if not p.flags.c_contiguous:
                raise ValueError(f"params[{name!r}] must be C-contiguous")
        self._ensure_state(params)
        lr = self.lr if lr is None else float(lr)
        names = sorted(params)
        ps = tuple(params[n].reshape(-1) for n in names)
        gs = tuple(np.ascontiguousarray(grads[n]).reshape(-1) for n in names)
        ms = tuple(self.state["m." + n].reshape(-1) for n in names)
        vs = tuple(self.state["v." + n].reshape(-1) for n in names)
        wds = np.array(
            [self.weight_decay if self.decay(n, params[n].shape) else 0.0 for n in names],
            dtype=np.float64,
        )
        one_dtype = len({p.dtype for p in ps}) == 1
        if one_dtype and ps:
            norm = math.sqrt(_sumsq_all_kernel(gs))
        else:
            norm = math.sqrt(sum(_sumsq_kernel(g) for g in gs))
        scale = 1.0
        if self.clip_norm is not None and norm > self.clip_norm:
            scale = self.clip_norm / (norm + 1e-6)
        self.t += 1
        b1, b2 = self.betas
        bc1 = 1.0 - b1**self.t
        bc2 = 1.0 - b2**self.t
        if one_dtype and ps:
            _adamw_all_kernel(ps, gs, ms, vs, wds, lr, b1, b2, self.eps, bc1, bc2, scale)
        else:
            for k in range(len(ps)):
                _adamw_kernel(
                    ps[k], gs[k], ms[k], vs[k], lr, b1, b2, self.eps, wds[k], bc1, bc2, scale
                )
        return norm

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat dict: ``m.<name>``, ``v.<name>`` and ``step`` (0-d int64)."""
        out = dict(self.state)
        out["step"] = np.array(self.t, dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if "step" not in state:
            raise ValueError("optimizer state has no 'step' entry")
        bad = [k for k in state if k != "step" and not k.startswith(("m.", "v."))]
        if bad:
            raise ValueError(f"unexpected optimizer state entries: {', '.join(bad[:5])}")
        step = np.asarray(state["step"]).reshape(-1)
        if step.size != 1:
            raise ValueError(f"optimizer 'step' must hold one integer (got shape {step.shape})")
        self.t = int(step[0])
        self.state = {k: np.array(v, copy=True, order="C") for k, v in state.items() if k != "step"}


def lr_at(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Linear warmup over ``warmup_steps`` then cosine decay to ``min_lr`` at ``total_steps``.

    ``step`` counts from 0; the first step uses ``base_lr / warmup_steps``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0 (got {step})")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * frac))
