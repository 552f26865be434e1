"""Load the core's compiled kernels into this process before it is needed.

A fresh process pays about a second before its first training step: numba's CPU
target registers its lowerings (~0.5 s) and every kernel's compiled code is read
back from the on-disk cache. ``warm()`` pays that once, on throw-away inputs of the
types the trainer, evaluation and generation pass (float32 parameters, int32
tokens), so that a process forked afterwards (the harness's fork server names it
in ``[tool.harness] preload`` as ``kernels.warm:warm``) starts its checks warm.

It reads no dataset, writes no file, starts no thread and leaves no module state
behind but numba's compiled code: a model's per-thread workspace is dropped with
the model.
"""

from __future__ import annotations

import time


def warm() -> dict[str, float]:
    """Run each kernel once on tiny inputs; return the seconds spent per part."""
    import numpy as np

    from kernels.config import MLPConfig, micro_config
    from kernels.infer import generate, nll
    from kernels.models.mlp import MLPClassifier
    from kernels.models.registry import build_model
    from kernels.optim import AdamW

    spent: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for family in ("gpt2", "llama"):
        t0 = time.perf_counter()
        cfg = micro_config(family)
        model = build_model(cfg)
        params = model.init_params(0)
        tokens = rng.integers(0, cfg.vocab_size, size=(2, 5), dtype=np.int32)
        _, grads = model.loss_and_grads(params, tokens)
        AdamW().step(params, grads)
        nll(model, params, tokens)
        generate(model, params, tokens[0, :2], 2)
        generate(model, params, tokens[:, :2], 2, temperature=1.0, top_k=3)
        spent[family] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mlp = MLPClassifier(MLPConfig(n_in=4, hidden=(3,), n_out=2))
    params = mlp.init_params(0)
    x = rng.random((4, 4), dtype=np.float32)
    y = np.array([0, 1, 0, 1], dtype=np.int64)
    _, grads = mlp.loss_and_grads(params, x, y)
    AdamW().step(params, grads)
    mlp.forward(params, x)
    spent["mlp"] = time.perf_counter() - t0
    return spent


if __name__ == "__main__":
    print({k: round(v, 3) for k, v in warm().items()})
