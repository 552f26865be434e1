"""Mutants of the service's generation, canary router and resume (contracts/service.yaml,
AC-SVC-006..008): bugs a real engineer could commit, each silent in a unit test of the
happy path.

- ``generate_text_without_kv_cache``: generation that recomputes the whole prefix for
  every new token (``use_cache=False``: "simpler, and the same text"). The answers are
  right; only the latency under load gives it away.
- ``WeightOnlyRollbackRouter``: a rollback that sets the candidate's weight to zero and
  records the decision, but leaves the candidate in the pool and running: new sessions go
  to the current model, while every session pinned to the candidate stays on it.
- ``train_run_from_scratch``: a "resume" that retries the run from step 0 (clearing the
  trainer's checkpoints so it may start again). Training is deterministic, so the final
  bytes even match an uninterrupted run; every step since the start is trained again.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from kernels.service.router import CanaryRouter, Rollout


def generate_text_without_kv_cache(
    ckpt: Path,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """``kernels.service.generation.generate_text`` with ``use_cache=False``."""
    import numpy as np

    from kernels.infer import generate
    from kernels.service.generation import MODELS
    from kernels.serving import prompt_ids

    m = MODELS.get(ckpt)
    n_ctx = m.model.config.n_ctx
    ids = prompt_ids(m.tokenizer, prompt, n_ctx)
    max_new = max(0, min(max_new_tokens, n_ctx - len(ids)))
    out = generate(m.model, m.params, ids, max_new, temperature=temperature, top_k=top_k,
                   seed=seed, use_cache=False)  # fmt: skip
    return str(m.tokenizer.decode(np.asarray(out)).decode("utf-8", errors="replace"))


class WeightOnlyRollbackRouter(CanaryRouter):
    """``CanaryRouter`` whose rollback only shifts the weights back."""

    def rollback(self, result: Rollout) -> None:
        with self.lock:
            result.decided_at = self.decided_at = time.monotonic()
            self.set_weight(0.0)  # no new session goes to the candidate...
        self.record(result)  # ...and the decision is audited; the pool is left as it was


def train_run_from_scratch(cfg: Any, run_dir: Path, resume: bool, progress: Any, stop: Any) -> Any:
    """``kernels.service.child.train_run`` whose resume starts the run over."""
    from kernels.train import train

    if resume:  # "retry the job": the trainer refuses a folder that holds a run, so clear it
        for ckpt in run_dir.glob("ckpt-*"):
            shutil.rmtree(ckpt)
        (run_dir / "latest").unlink(missing_ok=True)
    return train(cfg, run_dir, resume=False, progress=progress, stop=stop)
