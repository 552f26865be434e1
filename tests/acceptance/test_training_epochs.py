"""The independent optimizer and cursor arithmetic of INV-TRAIN-010."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from acceptance.training_epochs import expected_cursor, reference_adamw_step
from kernels.optim import AdamW
from kernels.train import DataCursor, new_rng, next_indices


def test_the_reference_adamw_matches_the_kernel_with_and_without_clipping():
    rng = np.random.default_rng(0)
    cfg = SimpleNamespace(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0)
    for grad_scale in (0.01, 10.0):  # below and above the clip norm
        params = {"w": rng.normal(size=(5, 4)).astype(np.float32), "b": np.ones(4, np.float32)}
        ref = {k: v.copy() for k, v in params.items()}
        moments = {f"{w}.{k}": np.zeros(v.shape) for k, v in params.items() for w in "mv"}
        opt = AdamW(lr=1e-2, betas=cfg.betas, eps=cfg.eps, weight_decay=0.1, clip_norm=1.0)
        for t in range(1, 4):
            grads = {k: (grad_scale * rng.normal(size=v.shape)).astype(np.float32)
                     for k, v in params.items()}  # fmt: skip
            norm = opt.step(params, grads, lr=1e-2)
            assert np.isclose(reference_adamw_step(ref, grads, moments, t, 1e-2, cfg), norm)
            for k in params:
                np.testing.assert_allclose(ref[k], params[k], rtol=0, atol=1e-6)


def test_expected_cursor_follows_the_stream_across_epoch_boundaries():
    for n, per_step in ((10, 3), (10, 5), (7, 7)):
        rng, cursor = new_rng(0), DataCursor()
        for step in range(1, 12):
            _, cursor = next_indices(rng, cursor, n, per_step)
            assert (cursor.epoch, cursor.pos) == expected_cursor(step, per_step, n)
