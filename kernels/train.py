"""Deterministic training with checkpoints and exact resume.

``train(cfg, out_dir)`` trains a tiny LM (gpt2 or llama family) on a shipped
text dataset, or the MLP classifier on the digits set, and writes into
``out_dir``: ``train_config.json``, ``provenance.json``, ``metrics.jsonl``,
``ckpt-NNNNNN/`` checkpoints with a ``latest`` pointer, and ``result.json``.

Determinism: the only randomness is one seeded ``numpy.random.Generator``
(PCG64) whose state is saved in every checkpoint together with the data
cursor, so a resumed run draws exactly what the uninterrupted run would have.

Data order (LM): the training tokens are cut into windows of ``n_ctx + 1``
tokens; each epoch visits the windows in the order ``shuffle_order`` gives for
a seed drawn from the generator; each step also draws a phase offset
(0..n_ctx-1) that shifts all its windows, so every alignment is seen. A step
takes ``batch_size * grad_accum`` windows, split into ``grad_accum``
micro-batches, so (k, b) and (1, k*b) see the same tokens. The classifier
visits its training examples the same way (without the phase offset).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels import checkpoint as ckpt_io

PURPOSES = ("ship", "ablation")
MIN_TOKENS_PER_PARAM = 20.0
EVAL_CHUNK = 16
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
PROVENANCE_FILE = "provenance.json"
RESULT_FILE = "result.json"
RESOURCES_FILE = "resources.jsonl"  # one line per process that trained (wall, CPU, peak RSS)
DIGITS_NAME = "digits"


class TrainError(Exception):
    """A training request that cannot run as asked; the message says what to change."""


class PreflightError(TrainError):
    """The pre-flight gate refused the config (e.g. too few tokens per parameter)."""


# ---------------------------------------------------------------- config


DATA_FAULTS = ("", "shuffle_labels", "corrupt_text")


def apply_data_fault(fault: str, seed: int, train: Any) -> Any:
    """A corrupted copy of the training split: shuffled labels (classifier) or
    uniformly random tokens (LM). Evaluation data is never touched."""
    rng = np.random.default_rng([seed, 0xFA17])
    if fault == "shuffle_labels":
        x, y = train
        return x, y[rng.permutation(len(y))]
    if fault == "corrupt_text":
        return rng.integers(0, int(train.max()) + 1, size=train.shape).astype(train.dtype)
    return train


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's weights (plus ``threads``, which must match too)."""

    family: str = "gpt2"  # gpt2 | llama | mlp
    model: Mapping[str, Any] | None = None  # ModelConfig/MLPConfig fields; None -> tiny preset
    seed: int = 0
    steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-3
    warmup: int = 10
    min_lr: float = 3e-4
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 50
    ckpt_every: int = 50
    eval_windows: int = 64
    purpose: str = "ablation"  # ship | ablation
    dataset: str = ""  # "" -> the family's default: pystdlib (LM) or digits (mlp)
    threads: int = 1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    # A deliberately broken candidate (release gates): "" | shuffle_labels | corrupt_text
    data_fault: str = ""

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise TrainError(f"purpose must be one of ship, ablation (got {self.purpose!r})")
        if self.data_fault not in DATA_FAULTS:
            raise TrainError(
                f"data_fault must be one of {', '.join(repr(f) for f in DATA_FAULTS)} "
                f"(got {self.data_fault!r})"
            )
        if self.family not in ("gpt2", "llama", "mlp"):
            raise TrainError(f"family must be one of gpt2, llama, mlp (got {self.family!r})")
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "eval_every",
            "ckpt_every",
            "eval_windows",
            "threads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TrainError(f"{name} must be a positive integer (got {value!r})")
        if self.warmup < 0 or not self.lr > 0 or self.min_lr < 0 or self.clip < 0:
            raise TrainError("warmup, min_lr and clip must be >= 0 and lr > 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.dataset:
            default = DIGITS_NAME if self.family == "mlp" else "pystdlib"
            object.__setattr__(self, "dataset", default)
        if self.model is not None:
            object.__setattr__(self, "model", dict(self.model))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TrainError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        fields = dict(d)
        if "betas" in fields:
            fields["betas"] = tuple(fields["betas"])
        return cls(**fields)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    val_loss: float | None
    checkpoint: Path | None
    weights_sha256: str
    purpose: str
    tokens_per_param: float
    n_params: int
    resources: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- pre-flight


def count_params(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return int(sum(math.prod(s) for s in shapes.values()))


def tokens_per_step(cfg: TrainConfig, n_ctx: int) -> int:
    """Training tokens (LM) or examples (MLP) one optimizer step consumes."""
    per_example = n_ctx if cfg.family != "mlp" else 1
    return cfg.batch_size * cfg.grad_accum * per_example


def preflight(cfg: TrainConfig, n_params: int, n_ctx: int) -> tuple[str, float]:
    """Return (label, tokens per parameter); refuse a "ship" run below 20 tokens/param."""
    ratio = cfg.steps * tokens_per_step(cfg, n_ctx) / max(n_params, 1)
    if cfg.purpose == "ship" and ratio < MIN_TOKENS_PER_PARAM:
        need = math.ceil(MIN_TOKENS_PER_PARAM * n_params / tokens_per_step(cfg, n_ctx))
        raise PreflightError(
            f"pre-flight: a 'ship' run needs >= {MIN_TOKENS_PER_PARAM:g} training tokens per "
            f"parameter, this config gives {ratio:.2f} ({n_params} params); raise steps to "
            f">= {need} or set purpose 'ablation'"
        )
    label = "ship" if cfg.purpose == "ship" else "ablation (not for release)"
    return label, ratio


# ---------------------------------------------------------------- threads


def limit_threads(n: int) -> None:
    """Pin numba and both bundled OpenBLAS copies to n threads (see kernels.parallel)."""
    from kernels.parallel import limit_threads as _limit_threads

    _limit_threads(n)


# ---------------------------------------------------------------- RNG and data cursor


def new_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def restore_rng(state: Mapping[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = dict(state)
    return rng


def shuffle_order(order_seed: int, n: int) -> np.ndarray:
    """The seeded order in which one epoch visits ``n`` windows/examples."""
    return np.random.Generator(np.random.PCG64(order_seed)).permutation(n)


def draw_order_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


@dataclass
class DataCursor:
    """Where the data stream stands: epoch, position in its order, the order's seed."""

    epoch: int = 0
    pos: int = 0
    order_seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataCursor:
        return cls(int(d["epoch"]), int(d["pos"]), d.get("order_seed"))


def next_indices(
    rng: np.random.Generator, cursor: DataCursor, n: int, count: int
) -> tuple[np.ndarray, DataCursor]:
    """Take the next ``count`` indices of the shuffled stream, starting epochs as needed."""
    out: list[np.ndarray] = []
    epoch, pos, order_seed = cursor.epoch, cursor.pos, cursor.order_seed
    need = count
    while need:
        if order_seed is None or pos >= n:
            if order_seed is not None:
                epoch, pos = epoch + 1, 0
            order_seed = draw_order_seed(rng)
        order = shuffle_order(order_seed, n)
        take = min(need, n - pos)
        out.append(order[pos : pos + take])
        pos += take
        need -= take
    return np.concatenate(out), DataCursor(epoch, pos, order_seed)


def draw_phase(rng: np.random.Generator, n_ctx: int) -> int:
    """A per-step offset (0..n_ctx-1) shifting every window of the step."""
    return int(rng.integers(0, n_ctx))


def count_windows(n_tokens: int, n_ctx: int) -> int:
    """Windows of n_ctx+1 tokens at stride n_ctx that still fit after any phase shift."""
    return max((n_tokens - 1) // n_ctx - 1, 0)


def gather_windows(tokens: np.ndarray, idx: np.ndarray, offset: int, n_ctx: int) -> np.ndarray:
    """int32[len(idx), n_ctx+1]: window i covers tokens[i*n_ctx+offset : ... + n_ctx + 1]."""
    starts = idx.astype(np.int64) * n_ctx + offset
    return tokens[starts[:, None] + np.arange(n_ctx + 1)].astype(np.int32)


# ---------------------------------------------------------------- tasks


@dataclass
class LMData:
    train: np.ndarray  # int32 tokens
    val: np.ndarray
    tokenizer_json: str
    tokenizer_sha256: str
    datasets: list[dict[str, Any]]


class LMTask:
    """Next-token training on a token stream."""

    def __init__(self, model: Any, data: LMData, n_ctx: int, eval_windows: int):
        self.model, self.data, self.n_ctx = model, data, n_ctx
        self.grads_by: Any = model  # or a kernels.parallel.DataParallel over it
        self.n_units = count_windows(len(data.train), n_ctx)
        if self.n_units < 1:
            raise TrainError(
                f"training split has {len(data.train)} tokens, too few for n_ctx={n_ctx}"
            )
        n_val = min(eval_windows, (len(data.val) - 1) // n_ctx)
        if n_val < 1:
            raise TrainError(f"val split has {len(data.val)} tokens, too few for n_ctx={n_ctx}")
        self.val_windows = gather_windows(data.val, np.arange(n_val), 0, n_ctx)

    def draw_step(self, rng: np.random.Generator, cursor: DataCursor, count: int):
        idx, cursor = next_indices(rng, cursor, self.n_units, count)
        offset = draw_phase(rng, self.n_ctx)
        return gather_windows(self.data.train, idx, offset, self.n_ctx), cursor

    def split(self, batch: np.ndarray, k: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(b) for b in np.split(batch, k)]

    def loss_and_grads(self, params, batch):
        return self.grads_by.loss_and_grads(params, batch)

    def units_in(self, batch) -> int:
        return int(batch.shape[0] * (batch.shape[1] - 1))

    def evaluate(self, params) -> dict[str, float]:
        return {"val_loss": evaluate_lm(self.model, params, self.val_windows)}


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
        idx, cursor = next_indices(rng, cursor, self.n_units, count)
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
        loss = classifier_loss(logits, self.y_val)
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


# ---------------------------------------------------------------- metrics


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (left by a killed run) before resuming from ``step``."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("step", 0) <= step:
            keep.append(line)
    ckpt_io.atomic_write_text(path, "".join(line + "\n" for line in keep))


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- setup


def build_task(cfg: TrainConfig, init_ckpt: ckpt_io.Checkpoint | None):
    """Model, task, stamps-relevant data records and resolved model config for ``cfg``."""
    from kernels.models.registry import build_model

    if cfg.family == "mlp":
        from kernels.data.digits import digits_splits
        from kernels.models.mlp import MLPClassifier

        splits = dict(digits_splits(verify=True))
        if cfg.data_fault == "shuffle_labels":
            splits["train"] = apply_data_fault(cfg.data_fault, cfg.seed, splits["train"])
        elif cfg.data_fault:
            raise TrainError(f"data_fault {cfg.data_fault!r} does not apply to the classifier")
        if cfg.dataset != DIGITS_NAME:
            raise TrainError(f"the mlp classifier trains on {DIGITS_NAME!r} (got {cfg.dataset!r})")
        mcfg = resolve_model_config(cfg, 0, init_ckpt)
        model = MLPClassifier(mcfg)
        task = ClassifierTask(model, splits)
        records = dataset_records(DIGITS_NAME)
        return model, task, mcfg, records, None

    data = load_lm_data(cfg.dataset)
    if cfg.data_fault == "corrupt_text":
        data = dataclasses.replace(
            data, train=apply_data_fault(cfg.data_fault, cfg.seed, data.train)
        )
    elif cfg.data_fault:
        raise TrainError(f"data_fault {cfg.data_fault!r} does not apply to a language model")
    vocab = len_vocab(data.tokenizer_json)
    mcfg = resolve_model_config(cfg, vocab, init_ckpt)
    if mcfg.vocab_size < vocab:
        raise TrainError(f"model vocab_size {mcfg.vocab_size} < tokenizer vocab {vocab}")
    model = build_model(mcfg)
    task = LMTask(model, data, mcfg.n_ctx, cfg.eval_windows)
    return model, task, mcfg, data.datasets, data


def resolve_model_config(cfg: TrainConfig, vocab: int, init_ckpt: ckpt_io.Checkpoint | None):
    """The model config: the init checkpoint's or the tiny preset, overridden by ``cfg.model``."""
    from kernels.config import MLPConfig, ModelConfig, tiny_config

    if init_ckpt is not None:
        base = dict(init_ckpt.config)
    elif cfg.family == "mlp":
        base = MLPConfig().to_dict()
    else:
        base = tiny_config(cfg.family, vocab).to_dict()
    fields = {**base, **(cfg.model or {})}
    fields.pop("family", None)
    if cfg.family != "mlp" and "d_ff" not in (cfg.model or {}) and init_ckpt is None:
        fields.pop("d_ff", None)  # re-derive the preset's d_ff from the overridden d_model
    try:
        if cfg.family == "mlp":
            return MLPConfig.from_dict(fields)
        return ModelConfig.from_dict({**fields, "family": cfg.family})
    except TypeError as exc:
        raise TrainError(f"model config: {exc}") from None


def len_vocab(tokenizer_json: str) -> int:
    from kernels.data.tokenizer import ByteBPE

    return int(ByteBPE.from_json(tokenizer_json).vocab_size)


def dataset_records(*names: str) -> list[dict[str, Any]]:
    """[{name, sha256, license, source}] of manifest datasets, each digest verified."""
    from kernels.data.manifest import dataset_entry, dataset_path

    records = []
    for name in names:
        entry = dataset_entry(name)
        dataset_path(name, verify=True)
        records.append(
            {"name": name, "sha256": entry.sha256, "license": entry.license, "source": entry.source}
        )
    return records


def load_lm_data(name: str) -> LMData:
    """Tokenized train/val splits of the shipped corpus, its tokenizer and digest records."""
    from kernels.data import pipeline

    if name != pipeline.CORPUS_NAME:
        raise TrainError(f"LM training supports dataset {pipeline.CORPUS_NAME!r} (got {name!r})")
    tok = pipeline.shipped_tokenizer(verify=True)
    records = dataset_records(name, pipeline.TOKENIZER_NAME)
    train_tokens, val_tokens = cached_token_arrays(records, tok)
    tok_json = tok.to_json()
    return LMData(
        train=train_tokens,
        val=val_tokens,
        tokenizer_json=tok_json,
        tokenizer_sha256=ckpt_io.sha256_bytes(tok_json.encode("utf-8")),
        datasets=records,
    )


def token_cache_dir() -> Path:
    root = os.environ.get("KERNELS_CACHE_DIR") or Path.home() / ".cache" / "kernels"
    return Path(root) / "tokens"


def cached_token_arrays(records: list[dict[str, Any]], tok: Any) -> tuple[np.ndarray, np.ndarray]:
    """``pipeline.lm_token_arrays`` memoized on disk by data, tokenizer and code digests."""
    import io

    from kernels.data import pipeline, tokenizer

    h = hashlib.sha256(json.dumps(records, sort_keys=True).encode())
    for mod in (pipeline, tokenizer):
        h.update(Path(mod.__file__).read_bytes())
    path = token_cache_dir() / f"{h.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["train"].astype(np.int32), z["val"].astype(np.int32)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    train_tokens, val_tokens = pipeline.lm_token_arrays(tok, verify=False)
    buf = io.BytesIO()
    np.savez(buf, train=train_tokens, val=val_tokens)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt_io.atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # an unwritable cache only costs time

    return train_tokens.astype(np.int32), val_tokens.astype(np.int32)


def build_optimizer(cfg: TrainConfig):
    from kernels.optim import AdamW

    return AdamW(
        lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
        clip_norm=cfg.clip if cfg.clip > 0 else None,
    )  # fmt: skip


def read_init_checkpoint(path: Path | str) -> ckpt_io.Checkpoint:
    """The ``--init`` checkpoint, its stamps checked against its tensor names."""
    return ckpt_io.load_checkpoint(path)


def init_weights(loaded: ckpt_io.Checkpoint, model: Any, family: str) -> dict[str, np.ndarray]:
    """Weights from ``--init``, checked to cover ``model``; never falls back to random init."""
    if loaded.family != family:
        raise ckpt_io.CheckpointError(
            f"{loaded.path}: checkpoint architecture {loaded.family!r} does not match the "
            f"requested family {family!r}"
        )
    ckpt_io.check_coverage(loaded.params, model.param_shapes(), str(loaded.path))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}


# ---------------------------------------------------------------- stamps and state


def build_stamps(
    cfg: TrainConfig,
    mcfg: Any,
    data: LMData | None,
    records: list[dict[str, Any]],
    step: int,
    val_loss: float | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The metadata stamped into every weights file (no wall-clock values: bytes reproduce)."""
    stamps = ckpt_io.identity_stamps(cfg.family)
    stamps.update(
        config=json.dumps(mcfg.to_dict(), sort_keys=True),
        datasets=json.dumps(records, sort_keys=True),
        code_version=ckpt_io.code_version(),
        source_sha256=ckpt_io.source_digest(),
        train_config=json.dumps(cfg.to_dict(), sort_keys=True),
        seed=str(cfg.seed),
        step=str(step),
        val_loss=repr(float(val_loss)) if val_loss is not None else "",
        purpose=cfg.purpose,
        eval_spec=json.dumps(eval_spec(cfg, mcfg), sort_keys=True),
    )
    if data is not None:
        stamps["tokenizer"] = data.tokenizer_json
        stamps["tokenizer_sha256"] = data.tokenizer_sha256
    for key, value in (extra or {}).items():
        stamps[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return stamps


def eval_spec(cfg: TrainConfig, mcfg: Any) -> dict[str, Any]:
    """What the stamped val loss was computed on (init compares it before trusting)."""
    if cfg.family == "mlp":
        return {"dataset": DIGITS_NAME, "split": "val"}
    return {
        "dataset": cfg.dataset,
        "split": "val",
        "windows": cfg.eval_windows,
        "n_ctx": mcfg.n_ctx,
        "chunk": EVAL_CHUNK,
    }


def trainer_state(
    cfg: TrainConfig,
    step: int,
    rng: np.random.Generator,
    cursor: DataCursor,
    tokens_seen: int,
    val_history: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "step": step,
        "rng_state": rng_state(rng),
        "cursor": cursor.to_dict(),
        "schedule": {
            "kind": "warmup+cosine",
            "lr": cfg.lr,
            "warmup": cfg.warmup,
            "steps": cfg.steps,
            "min_lr": cfg.min_lr,
        },
        "tokens_seen": tokens_seen,
        "val_history": val_history,
        "train_config": cfg.to_dict(),
    }


def optimizer_arrays(opt: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The optimizer's state as safetensors arrays (m.*, v.*, step) and metadata."""
    return dict(opt.state_dict()), {"optimizer": type(opt).__name__}


def restore_optimizer(opt: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> None:
    state = dict(arrays)
    if "step" in state:  # accept a step saved as shape (1,) as well as 0-d
        state["step"] = np.asarray(state["step"]).reshape(())
    opt.load_state_dict(state)


def write_checkpoint(
    out_dir: Path,
    cfg: TrainConfig,
    step: int,
    params: Mapping[str, np.ndarray],
    opt: Any,
    stamps: Mapping[str, str],
    state: Mapping[str, Any],
) -> Path:
    arrays, meta = optimizer_arrays(opt)
    return ckpt_io.save_checkpoint(
        out_dir, step, params, stamps, optimizer=arrays, optimizer_meta=meta, trainer=state
    )


def load_resume_state(out_dir: Path, cfg: TrainConfig) -> ckpt_io.Checkpoint | None:
    """The latest checkpoint of ``out_dir`` with optimizer and trainer state, checked."""
    latest = ckpt_io.latest_checkpoint(out_dir)
    if latest is None:
        return None
    loaded = ckpt_io.load_checkpoint(latest, with_state=True)
    if loaded.optimizer is None or loaded.trainer is None:
        raise ckpt_io.CheckpointError(
            f"{latest}: cannot resume exactly: optimizer or trainer state missing"
        )
    for key in ("rng_state", "cursor", "step"):
        if key not in loaded.trainer:
            raise ckpt_io.CheckpointError(
                f"{latest / ckpt_io.TRAINER_FILE}: no {key}; cannot resume"
            )
    saved = loaded.trainer.get("train_config")
    if saved is not None and TrainConfig.from_dict(saved) != cfg:
        raise TrainError(
            f"{latest}: was trained with a different config; resume with the run's own "
            f"{CONFIG_FILE} (`core resume {out_dir}`)"
        )
    return loaded


def provenance(cfg: TrainConfig, records: list[dict[str, Any]], init: str | None) -> dict[str, Any]:
    import platform
    import sys
    from importlib import metadata

    deps: dict[str, str | None] = {}
    for dist in ("numpy", "numba", "llvmlite", "scipy", "safetensors", "click"):
        try:
            deps[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            deps[dist] = None
    return {
        "code_version": ckpt_io.code_version(),
        "source_sha256": ckpt_io.source_digest(),
        "dependencies": deps,
        "dependency_sha256": ckpt_io.sha256_bytes(json.dumps(deps, sort_keys=True).encode()),
        "datasets": records,
        "train_config": cfg.to_dict(),
        "seed": cfg.seed,
        "init": init,
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": cfg.threads,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
        },
    }


def resource_usage(t0_wall: float) -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - t0_wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024.0,
    }


def record_usage(
    out_dir: Path,
    process: str,
    from_step: int,
    to_step: int,
    resumed: bool,
    t0: float,
    final: bool,
    usage: dict[str, float] | None = None,
) -> None:
    """Append this process's cumulative usage to resources.jsonl (at each checkpoint and
    at the end); a process's last line is its total, ``final`` when it finished."""
    record = {
        "process": process,
        "from_step": from_step,
        "to_step": to_step,
        "resumed": resumed,
        "final": final,
        **(usage or resource_usage(t0)),
    }
    append_metrics(out_dir / RESOURCES_FILE, record)


# ---------------------------------------------------------------- the loop


ProgressFn = Callable[[int, int, Mapping[str, Any]], None]


@dataclass
class LoopState:
    """What the loop carries from step to step (all of it goes into each checkpoint)."""

    params: dict[str, np.ndarray]
    step: int
    rng: np.random.Generator
    cursor: DataCursor
    tokens_seen: int
    val_history: list[dict[str, Any]]
    last_val: float | None


def resumed_state(resumed: ckpt_io.Checkpoint, model: Any, opt: Any, metrics_path: Path):
    """Loop state, optimizer state and metrics file exactly as at the resumed checkpoint."""
    assert resumed.optimizer is not None and resumed.trainer is not None  # load_resume_state
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in resumed.params.items()}
    ckpt_io.check_coverage(params, model.param_shapes(), str(resumed.path))
    restore_optimizer(opt, resumed.optimizer, resumed.optimizer_meta)
    state = resumed.trainer
    step = int(state["step"])
    truncate_metrics(metrics_path, step)
    return LoopState(
        params=params, step=step, rng=restore_rng(state["rng_state"]),
        cursor=DataCursor.from_dict(state["cursor"]),
        tokens_seen=int(state.get("tokens_seen", 0)),
        val_history=list(state.get("val_history", [])), last_val=resumed.val_loss,
    )  # fmt: skip


def fresh_state(cfg: TrainConfig, model: Any, task: Any, init_ckpt, spec, metrics_path: Path):
    """Initial (or ``--init``) weights, the seeded generator, and the step-0 evaluation."""
    params = (
        init_weights(init_ckpt, model, cfg.family) if init_ckpt else model.init_params(cfg.seed)
    )
    ev = task.evaluate(params)
    if init_ckpt is not None:
        check_init_val_loss(init_ckpt, ev["val_loss"], spec)
    metrics_path.write_text("")
    append_metrics(metrics_path, {"step": 0, **ev, "purpose": cfg.purpose})
    return LoopState(
        params=params, step=0, rng=new_rng(cfg.seed), cursor=DataCursor(), tokens_seen=0,
        val_history=[{"step": 0, **ev}], last_val=ev["val_loss"],
    )  # fmt: skip


def train_step(cfg: TrainConfig, task: Any, opt: Any, st: LoopState) -> dict[str, Any]:
    """Draw a step's data, accumulate gradients, update; return its metrics record."""
    t_step = time.perf_counter()
    batch, st.cursor = task.draw_step(st.rng, st.cursor, cfg.batch_size * cfg.grad_accum)
    loss, grads = accumulate_gradients(task, st.params, task.split(batch, cfg.grad_accum))
    lr = learning_rate(cfg, st.step)
    grad_norm = apply_update(opt, st.params, grads, lr)
    st.step += 1
    units = task.units_in(batch)
    st.tokens_seen += units
    return {
        "step": st.step, "loss": float(loss), "lr": lr, "grad_norm": float(grad_norm),
        "tokens_per_s": units / max(time.perf_counter() - t_step, 1e-9),
    }  # fmt: skip


def authorize_data(records: list[dict[str, Any]]) -> Any:
    """Data governance before step 1 (policy, PII approval); every decision is an audit
    event (``kernels.data.governance``). A refusal leaves nothing written."""
    from kernels.data.governance import GovernanceError, authorize_training

    try:
        return authorize_training([r["name"] for r in records])
    except GovernanceError as exc:
        raise TrainError(f"refused by data governance: {exc}") from exc


def train(
    cfg: TrainConfig,
    out_dir: Path | str,
    init: Path | str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train per ``cfg`` into ``out_dir``; ``resume`` continues from ``out_dir/latest``."""
    from kernels.parallel import DataParallel, engine_threads

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    engine_threads(cfg.threads)
    resumed = load_resume_state(out_dir, cfg) if resume else None
    if not resume and ckpt_io.latest_checkpoint(out_dir) is not None:
        raise TrainError(f"{out_dir} already holds a run; use resume or another directory")
    init_ckpt = read_init_checkpoint(init) if init is not None and resumed is None else None
    model, task, mcfg, records, data = build_task(cfg, init_ckpt)
    n_params = count_params(model.param_shapes())
    label, ratio = preflight(cfg, n_params, getattr(mcfg, "n_ctx", 1))
    authorize_data(records)
    out_dir.mkdir(parents=True, exist_ok=True)

    opt = build_optimizer(cfg)
    metrics_path = out_dir / METRICS_FILE
    extra_stamps: dict[str, Any] = {"purpose_label": label, "tokens_per_param": f"{ratio:.4f}"}
    if resumed is not None:
        st = resumed_state(resumed, model, opt, metrics_path)
        if "init_sha256" in resumed.stamps:
            extra_stamps["init_sha256"] = resumed.stamps["init_sha256"]
    else:
        ckpt_io.atomic_write_text(out_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=1))
        prov = provenance(cfg, records, str(init) if init else None)
        ckpt_io.atomic_write_text(out_dir / PROVENANCE_FILE, json.dumps(prov, indent=1))
        st = fresh_state(cfg, model, task, init_ckpt, eval_spec(cfg, mcfg), metrics_path)
        if init_ckpt is not None:
            extra_stamps["init_sha256"] = ckpt_io.sha256_file(ckpt_io.resolve_model_file(init))

    start_step = st.step
    process = f"{os.getpid()}-{time.time_ns()}"
    task.grads_by = DataParallel(model, cfg.threads)
    try:
        while st.step < cfg.steps:
            record = train_step(cfg, task, opt, st)
            do_ckpt = st.step % cfg.ckpt_every == 0 or st.step == cfg.steps
            if st.step % cfg.eval_every == 0 or do_ckpt:
                ev = task.evaluate(st.params)
                st.last_val = ev["val_loss"]
                record.update(ev)
                st.val_history.append({"step": st.step, **ev})
            append_metrics(metrics_path, record)
            if do_ckpt:
                stamps = build_stamps(cfg, mcfg, data, records, st.step, st.last_val, extra_stamps)
                state = trainer_state(
                    cfg, st.step, st.rng, st.cursor, st.tokens_seen, st.val_history
                )
                write_checkpoint(out_dir, cfg, st.step, st.params, opt, stamps, state)
                # usage so far, so that a process killed later still has a record
                record_usage(out_dir, process, start_step, st.step, resumed is not None, t0, False)
            if progress is not None:
                progress(st.step, cfg.steps, record)
    finally:
        task.grads_by.close()

    final = ckpt_io.latest_checkpoint(out_dir)
    usage = resource_usage(t0)
    result = TrainResult(
        out_dir=out_dir, step=st.step, val_loss=st.last_val, checkpoint=final,
        weights_sha256=ckpt_io.sha256_file(final / ckpt_io.MODEL_FILE) if final else "",
        purpose=cfg.purpose, tokens_per_param=ratio, n_params=n_params, resources=usage,
        extra={"label": label, "tokens_seen": st.tokens_seen},
    )  # fmt: skip
    summary = {**asdict(result), "out_dir": str(out_dir), "checkpoint": str(final)}
    ckpt_io.atomic_write_text(out_dir / RESULT_FILE, json.dumps(summary, indent=1))
    record_usage(out_dir, process, start_step, st.step, resumed is not None, t0, True, usage)
    return result


def apply_update(opt: Any, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                 lr: float) -> float:  # fmt: skip
    """One AdamW step in place (clipping by global norm inside); return the pre-clip norm."""
    return float(opt.step(params, grads, lr=lr))


def check_init_val_loss(
    loaded: ckpt_io.Checkpoint, val_loss: float, spec: Mapping[str, Any]
) -> None:
    """Refuse init weights whose step-0 eval differs from the loss stamped with them."""
    recorded = loaded.val_loss
    stamped_spec = loaded.stamps.get("eval_spec")
    if recorded is None or stamped_spec is None or json.loads(stamped_spec) != dict(spec):
        return  # not comparable: different eval set
    if not math.isclose(val_loss, recorded, rel_tol=1e-5, abs_tol=1e-6):
        raise ckpt_io.CheckpointError(
            f"{loaded.path}: step-0 eval loss {val_loss:.6f} differs from the checkpoint's "
            f"recorded val loss {recorded:.6f}; the weights did not load as trained"
        )
