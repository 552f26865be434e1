"""Use a saved checkpoint: rebuild its model, evaluate it, generate from it.

Everything is rebuilt from the checkpoint alone (its stamped config and
embedded tokenizer), so these functions also check that a checkpoint is
self-sufficient, and ``evaluate_checkpoint`` on the stamped eval set
recomputes the stamped val loss exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from kernels import checkpoint as ckpt_io


def model_from_checkpoint(loaded: ckpt_io.Checkpoint) -> tuple[Any, Any]:
    """(model, model config) built from the stamped config of a loaded checkpoint."""
    from kernels.config import MLPConfig, ModelConfig

    cfg = loaded.config
    if not cfg:
        raise ckpt_io.CheckpointError(f"{loaded.path}: no stamped model config; cannot rebuild")
    if loaded.family == "mlp":
        from kernels.models.mlp import MLPClassifier

        mcfg = MLPConfig.from_dict(cfg)
        return MLPClassifier(mcfg), mcfg
    from kernels.models.registry import build_model

    mcfg = ModelConfig.from_dict({**cfg, "family": loaded.family})
    return build_model(mcfg), mcfg


def evaluate_checkpoint(
    path: Path | str, split: str = "val", windows: int | None = None
) -> dict[str, Any]:
    """Loss (and perplexity or accuracy) of a checkpoint on a split of its dataset."""
    from kernels.train import ClassifierTask, evaluate_lm, gather_windows, load_lm_data

    loaded = ckpt_io.load_checkpoint(path)
    model, mcfg = model_from_checkpoint(loaded)
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
    out: dict[str, Any] = {"checkpoint": str(loaded.path), "step": loaded.step, "split": split}
    if loaded.family == "mlp":
        from kernels.data.digits import digits_splits

        splits = digits_splits(verify=True)
        task = ClassifierTask(model, {"train": splits["train"], "val": splits[split]})
        out.update({k.replace("val_", ""): v for k, v in task.evaluate(params).items()})
    else:
        spec = json.loads(loaded.stamps.get("eval_spec", "{}"))
        dataset = spec.get("dataset") or train_dataset(loaded)
        data = load_lm_data(dataset)
        if split not in ("val", "train"):
            raise ckpt_io.CheckpointError(f"LM checkpoints evaluate on val or train (got {split})")
        tokens = data.val if split == "val" else data.train
        n = windows or int(spec.get("windows", 64))
        n = min(n, (len(tokens) - 1) // mcfg.n_ctx)
        wins = gather_windows(tokens, np.arange(n), 0, mcfg.n_ctx)
        loss = evaluate_lm(model, params, wins)
        out.update(loss=loss, perplexity=math.exp(loss), windows=n, tokens=n * mcfg.n_ctx)
    stamped = loaded.val_loss
    out["stamped_val_loss"] = stamped
    if split == "val" and stamped is not None and windows is None:
        out["matches_stamp"] = bool(math.isclose(out["loss"], stamped, rel_tol=1e-6))
    return out


def train_dataset(loaded: ckpt_io.Checkpoint) -> str:
    cfg = json.loads(loaded.stamps.get("train_config", "{}"))
    return str(cfg.get("dataset", "pystdlib"))


def generate_from_checkpoint(
    path: Path | str,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Text generated from ``prompt`` with only the checkpoint (weights + embedded tokenizer)."""
    from kernels.data.tokenizer import ByteBPE
    from kernels.infer import generate

    loaded = ckpt_io.load_checkpoint(path)
    if loaded.family == "mlp":
        raise ckpt_io.CheckpointError(f"{loaded.path}: a classifier checkpoint cannot generate")
    if not loaded.tokenizer_json:
        raise ckpt_io.CheckpointError(f"{loaded.path}: no embedded tokenizer; cannot generate")
    tok = ByteBPE.from_json(loaded.tokenizer_json)
    model, _ = model_from_checkpoint(loaded)
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
    n_ctx = model.config.n_ctx
    ids = prompt_ids(tok, prompt, n_ctx)
    max_new = max(0, min(max_new_tokens, n_ctx - len(ids)))
    out = generate(model, params, ids, max_new, temperature=temperature, top_k=top_k, seed=seed)
    return tok.decode(np.asarray(out)).decode("utf-8", errors="replace")


def prompt_ids(tok: Any, prompt: str | bytes, n_ctx: int) -> np.ndarray:
    """The token ids a prompt is served as: an empty prompt is a newline, and a prompt
    longer than the context keeps its last ``n_ctx - 1`` tokens (its end, with room
    for one new token). A module-level function so a contract can mutate it."""
    return tok.encode(prompt or "\n")[-(n_ctx - 1) :]
