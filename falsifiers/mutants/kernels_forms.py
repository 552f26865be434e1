"""Known-bad variants of the core that differ only on a form every real run uses but
the kernel checks did not exercise before (issue 13, class 1: oracles narrower than
the spec; contracts/kernels.yaml):

- AdamW with global-norm clipping on (every training run: ``TrainConfig.clip = 1.0``),
  where the kernel-correctness reference ran with ``clip_norm=None``;
- prompts given as ``str`` (the CLI's ``--prompt``, the service's requests), where the
  robustness check fed ``bytes`` only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernels.optim import _adamw_kernel, _sumsq_kernel

# ----------------------------------------------------------------------------- AdamW


def adamw_step_clipping_per_tensor(
    self: Any, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float | None = None
) -> float:
    """``AdamW.step`` that clips each gradient tensor to ``clip_norm`` by its own norm
    (clip_grad_norm_ called once per parameter) instead of scaling all of them by the
    global norm; it still returns the global norm, so the logged grad_norm looks right
    (kernels.optim:AdamW.step). Identical to the real step whenever no norm exceeds
    the clip, i.e. whenever clipping is switched off."""
    self._ensure_state(params)
    lr = self.lr if lr is None else float(lr)
    self.t += 1
    b1, b2 = self.betas
    bc1, bc2 = 1.0 - b1**self.t, 1.0 - b2**self.t
    total = 0.0
    for name in sorted(params):
        g = np.ascontiguousarray(grads[name]).reshape(-1)
        sq = _sumsq_kernel(g)
        total += sq
        own = math.sqrt(sq)
        scale = 1.0
        if self.clip_norm is not None and own > self.clip_norm:
            scale = self.clip_norm / (own + 1e-6)
        wd = self.weight_decay if self.decay(name, params[name].shape) else 0.0
        _adamw_kernel(
            params[name].reshape(-1), g, self.state["m." + name].reshape(-1),
            self.state["v." + name].reshape(-1), lr, b1, b2, self.eps, wd, bc1, bc2, scale,
        )  # fmt: skip
    return math.sqrt(total)


# --------------------------------------------------------------------------- prompts


def prompt_ids_empty_bytes_only(tok: Any, prompt: str | bytes, n_ctx: int) -> np.ndarray:
    """The server's prompt handling with the empty prompt recognised as ``b""`` only: an
    empty ``str`` prompt (what the CLI and the service pass) encodes to no tokens
    instead of a newline (kernels.serving:prompt_ids)."""
    if prompt == b"":
        prompt = b"\n"
    return tok.encode(prompt)[-(n_ctx - 1) :]


def prompt_ids_keeping_the_head(tok: Any, prompt: str | bytes, n_ctx: int) -> np.ndarray:
    """A long prompt cut to its first ``n_ctx - 1`` tokens (``[: n_ctx - 1]``, the
    slice written the other way round): the model continues the wrong text, with no
    crash and a perfectly finite distribution (kernels.serving:prompt_ids)."""
    return tok.encode(prompt or "\n")[: n_ctx - 1]
