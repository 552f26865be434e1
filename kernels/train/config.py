"""What a run is asked to do: ``TrainConfig``, ``TrainResult``, the run-directory file
names, the trainer's errors, and the pre-flight gate (tokens per parameter)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kernels.train as _t  # calls to trainer functions go through the package
from kernels.errors import KernelsError

PURPOSES = ("ship", "ablation")
MIN_TOKENS_PER_PARAM = 20.0
EVAL_CHUNK = 16
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
PROVENANCE_FILE = "provenance.json"
RESULT_FILE = "result.json"
RESOURCES_FILE = "resources.jsonl"  # one line per process that trained (wall, CPU, peak RSS)
DIGITS_NAME = "digits"

# A field TrainConfig no longer has (data faults live in falsifiers/data_faults.py); an
# empty value in a run directory written before is accepted, so the run still resumes.
RETIRED_FIELDS = ("data_fault",)


class TrainError(KernelsError):
    """A training request that cannot run as asked; the message says what to change."""


class PreflightError(TrainError):
    """The pre-flight gate refused the config (e.g. too few tokens per parameter)."""


# ---------------------------------------------------------------- config


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

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise TrainError(f"purpose must be one of ship, ablation (got {self.purpose!r})")
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
        fields = dict(d)
        for name in RETIRED_FIELDS:
            if name in fields and fields[name] in ("", None):
                del fields[name]  # written (empty) by runs before the field was retired
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise TrainError(f"unknown TrainConfig fields: {', '.join(unknown)}")
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
    stopped: bool = False  # a stop request ended the run early, at checkpoint ``step``


# ---------------------------------------------------------------- pre-flight


def count_params(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return int(sum(math.prod(s) for s in shapes.values()))


def tokens_per_step(cfg: TrainConfig, n_ctx: int) -> int:
    """Training tokens (LM) or examples (MLP) one optimizer step consumes."""
    per_example = n_ctx if cfg.family != "mlp" else 1
    return cfg.batch_size * cfg.grad_accum * per_example


def preflight(cfg: TrainConfig, n_params: int, n_ctx: int) -> tuple[str, float]:
    """Return (label, tokens per parameter); refuse a "ship" run below 20 tokens/param."""
    ratio = cfg.steps * _t.tokens_per_step(cfg, n_ctx) / max(n_params, 1)
    if cfg.purpose == "ship" and ratio < MIN_TOKENS_PER_PARAM:
        need = math.ceil(MIN_TOKENS_PER_PARAM * n_params / _t.tokens_per_step(cfg, n_ctx))
        raise PreflightError(
            f"pre-flight: a 'ship' run needs >= {MIN_TOKENS_PER_PARAM:g} training tokens per "
            f"parameter, this config gives {ratio:.2f} ({n_params} params); raise steps to "
            f">= {need} or set purpose 'ablation'"
        )
    label = "ship" if cfg.purpose == "ship" else "ablation (not for release)"
    return label, ratio
