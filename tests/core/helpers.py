"""Helpers for the core's training/checkpoint tests: tiny configs only (2 shared cores)."""

from __future__ import annotations

import json

from kernels import checkpoint as ck

MICRO = {"n_layer": 1, "d_model": 16, "n_head": 2, "n_ctx": 16}


def micro_model(family: str = "gpt2", vocab_size: int = 32):
    from kernels.config import ModelConfig
    from kernels.models.registry import build_model

    return build_model(ModelConfig(family=family, vocab_size=vocab_size, **MICRO))


def full_stamps(family: str, model) -> dict[str, str]:
    tok = json.dumps({"format": "test-tokenizer", "merges": []})
    return {
        **ck.identity_stamps(family),
        "config": json.dumps(model.config.to_dict()),
        "tokenizer": tok,
        "tokenizer_sha256": ck.sha256_bytes(tok.encode()),
        "datasets": json.dumps([{"name": "pystdlib", "sha256": "ab" * 32, "license": "PSF-2.0"}]),
        "code_version": "0123456789abcdef",
        "train_config": json.dumps({"seed": 0}),
        "step": "5",
        "val_loss": "3.25",
        "purpose": "ablation",
    }
