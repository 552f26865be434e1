"""What one step computes: the LM and classifier tasks (their batches, losses and
evaluation), gradient accumulation, the learning rate, the optimizer and its update,
and building the model and task a config asks for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import kernels.train as _t  # calls to trainer functions go through the package
from kernels import checkpoint as ckpt_io
from kernels.train.config import DIGITS_NAME, EVAL_CHUNK, TrainConfig, TrainError
from kernels.train.data import DataCursor, LMData

# ---------------------------------------------------------------- tasks


class LMTask:
    """Next-token training on a token stream."""

    def __init__(self, model: Any, data: LMData, n_ctx: int, eval_windows: int):
        self.model, self.data, self.n_ctx = model, data, n_ctx
        self.grads_by: Any = model  # or a kernels.parallel.DataParallel over it
        self.n_units = _t.count_windows(len(data.train), n_ctx)
        if self.n_units < 1:
            raise TrainError(
                f"training split has {len(data.train)} tokens, too few for n_ctx={n_ctx}"
            )
        n_val = min(eval_windows, (len(data.val) - 1) // n_ctx)
        if n_val < 1:
            raise TrainError(f"val split has {len(data.val)} tokens, too few for n_ctx={n_ctx}")
        self.val_windows = _t.gather_windows(data.val, np.arange(n_val), 0, n_ctx)

    def draw_step(self, rng: np.random.Generator, cursor: DataCursor, count: int):
        idx, cursor = _t.next_indices(rng, cursor, self.n_units, count)
        offset = _t.draw_phase(rng, self.n_ctx)
        return _t.gather_windows(self.data.train, idx, offset, self.n_ctx), cursor

    def split(self, batch: np.ndarray, k: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(b) for b in np.split(batch, k)]

    def loss_and_grads(self, params, batch):
        return self.grads_by.loss_and_grads(params, batch)

    def units_in(self, batch) -> int:
        return int(batch.shape[0] * (batch.shape[1] - 1))

    def evaluate(self, params) -> dict[str, float]:
        return {"val_loss": _t.evaluate_lm(self.model, params, self.val_windows)}


def evaluate_lm(model: Any, params: Mapping[str, np.ndarray], windows: np.ndarray) -> float:
    """Mean next-token loss over fixed val windows, in fixed chunks (batch-size independent)."""
    from kernels.infer import nll

    total, count = nll(model, dict(params), windows, batch_size=EVAL_CHUNK)
    return total / count


class ClassifierTask:
    """MLP classification on the digits set (``digits_splits``: fixed train/val/test)."""

    def __init__(self, model: Any, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]):
        self.model = model
        self.grads_by: Any = model  # or a kernels.parallel.DataParallel over it
        self.X_train, self.y_train = splits["train"]
        self.X_val, self.y_val = splits["val"]
        self.n_units = len(self.X_train)

    def draw_step(self, rng: np.random.Generator, cursor: DataCursor, count: int):
        idx, cursor = _t.next_indices(rng, cursor, self.n_units, count)
        return (self.X_train[idx], self.y_train[idx]), cursor

    def split(self, batch, k: int):
        xs, ys = np.split(batch[0], k), np.split(batch[1], k)
        return [
            (np.ascontiguousarray(x), np.ascontiguousarray(y)) for x, y in zip(xs, ys, strict=True)
        ]

    def loss_and_grads(self, params, batch):
        return self.grads_by.loss_and_grads(params, batch[0], batch[1])

    def units_in(self, batch) -> int:
        return int(len(batch[1]))

    def evaluate(self, params) -> dict[str, float]:
        logits = self.model.forward(params, self.X_val)
        loss = _t.classifier_loss(logits, self.y_val)
        acc = float(np.mean(np.argmax(logits, axis=1) == self.y_val))
        return {"val_loss": loss, "val_accuracy": acc}


def classifier_loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


# ---------------------------------------------------------------- one step


def accumulate_gradients(
    task: Any, params: Mapping[str, np.ndarray], micro_batches: list[Any]
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean loss and mean gradient over equally sized micro-batches."""
    k = len(micro_batches)
    if k == 1:
        loss, only = task.loss_and_grads(params, micro_batches[0])
        return float(loss), only
    loss_sum = 0.0
    grads: dict[str, np.ndarray] = {}
    for batch in micro_batches:
        loss, g = task.loss_and_grads(params, batch)
        loss_sum += float(loss)
        for name, value in g.items():
            if name in grads:
                grads[name] += value
            else:
                grads[name] = np.array(value, copy=True)
    scale = np.float32(1.0 / k)
    for value in grads.values():
        value *= scale
    return loss_sum / k, grads


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Warmup + cosine learning rate for 0-based optimizer step ``step``."""
    from kernels.optim import lr_at

    return float(lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr))


def build_optimizer(cfg: TrainConfig):
    from kernels.optim import AdamW

    return AdamW(
        lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
        clip_norm=cfg.clip if cfg.clip > 0 else None,
    )  # fmt: skip


def apply_update(opt: Any, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                 lr: float) -> float:  # fmt: skip
    """One AdamW step in place (clipping by global norm inside); return the pre-clip norm."""
    return float(opt.step(params, grads, lr=lr))


# ---------------------------------------------------------------- setup


def build_task(cfg: TrainConfig, init_ckpt: ckpt_io.Checkpoint | None):
    """Model, task, stamps-relevant data records and resolved model config for ``cfg``."""
    from kernels.models.registry import build_model

    if cfg.family == "mlp":
        from kernels.models.mlp import MLPClassifier

        splits = _t.load_digits_splits()
        if cfg.dataset != DIGITS_NAME:
            raise TrainError(f"the mlp classifier trains on {DIGITS_NAME!r} (got {cfg.dataset!r})")
        mcfg = _t.resolve_model_config(cfg, 0, init_ckpt)
        model = MLPClassifier(mcfg)
        task = ClassifierTask(model, splits)
        records = _t.dataset_records(DIGITS_NAME)
        return model, task, mcfg, records, None

    data = _t.load_lm_data(cfg.dataset)
    vocab = _t.len_vocab(data.tokenizer_json)
    mcfg = _t.resolve_model_config(cfg, vocab, init_ckpt)
    if mcfg.vocab_size < vocab:
        raise TrainError(f"model vocab_size {mcfg.vocab_size} < tokenizer vocab {vocab}")
    model = build_model(mcfg)
    task = LMTask(model, data, mcfg.n_ctx, cfg.eval_windows)
    return model, task, mcfg, data.datasets, data


def resolve_model_config(cfg: TrainConfig, vocab: int, init_ckpt: ckpt_io.Checkpoint | None):
    """The model config: the init checkpoint's stamped one (else the tiny preset),
    overridden by ``cfg.model``. An init checkpoint without a config stamp gets the
    preset too; ``init_weights`` then checks its tensors against that model."""
    from kernels.config import MLPConfig, ModelConfig, tiny_config

    stamped = dict(init_ckpt.config) if init_ckpt is not None else {}
    if stamped:
        base = stamped
    elif cfg.family == "mlp":
        base = MLPConfig().to_dict()
    else:
        base = tiny_config(cfg.family, vocab).to_dict()
    fields = {**base, **(cfg.model or {})}
    fields.pop("family", None)
    if cfg.family != "mlp" and "d_ff" not in (cfg.model or {}) and not stamped:
        fields.pop("d_ff", None)  # re-derive the preset's d_ff from the overridden d_model
    try:
        if cfg.family == "mlp":
            return MLPConfig.from_dict(fields)
        return ModelConfig.from_dict({**fields, "family": cfg.family})
    except TypeError as exc:
        raise TrainError(f"model config: {exc}") from None
