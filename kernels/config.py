"""Model configurations and the numba flags, in one place.

This module must stay importable without numba: it holds plain data only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Every @njit kernel in kernels/ uses exactly these flags (see PERF-NOTES.md:
# error_model="numpy" keeps arithmetic loops vectorized; cache=True makes a new
# process load compiled kernels instead of recompiling; fastmath stays off so
# results are reproducible bit for bit).
JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)

FAMILIES = ("gpt2", "llama")


def _round_up(x: int, multiple: int) -> int:
    return ((x + multiple - 1) // multiple) * multiple


@dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer hyper-parameters.

    ``d_ff`` defaults to ``4 * d_model`` for gpt2 and to the SwiGLU hidden size
    ``round_up(8 * d_model / 3, 32)`` for llama.
    """

    family: str
    n_layer: int
    d_model: int
    n_head: int
    n_ctx: int
    vocab_size: int
    eps: float = 1e-5
    rope_theta: float = 10000.0
    d_ff: int = 0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)} (got {self.family!r})")
        for name in ("n_layer", "d_model", "n_head", "n_ctx", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int (got {value!r})")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if self.family == "llama" and (self.d_model // self.n_head) % 2:
            raise ValueError(
                f"llama head size d_model/n_head must be even for rotary embedding "
                f"(got {self.d_model // self.n_head})"
            )
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0 (got {self.eps!r})")
        if not self.d_ff:
            if self.family == "gpt2":
                d_ff = 4 * self.d_model
            else:
                d_ff = _round_up(int(8 * self.d_model / 3), 32)
            object.__setattr__(self, "d_ff", d_ff)
        elif not isinstance(self.d_ff, int) or self.d_ff < 1:
            raise ValueError(f"d_ff must be a positive int (got {self.d_ff!r})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class MLPConfig:
    """MLP classifier: ``n_in`` inputs, ReLU hidden layers, ``n_out`` classes."""

    n_in: int = 64
    hidden: tuple[int, ...] = field(default=(128, 64))
    n_out: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name, value in (("n_in", self.n_in), ("n_out", self.n_out)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int (got {value!r})")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive (got {self.hidden!r})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPConfig:
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def tiny_config(family: str, vocab_size: int) -> ModelConfig:
    """The default "tiny" model: trains in minutes on 2 cores."""
    return ModelConfig(
        family=family, n_layer=2, d_model=128, n_head=4, n_ctx=64, vocab_size=vocab_size
    )


def micro_config(family: str, vocab_size: int = 23) -> ModelConfig:
    """A very small model for finite-difference gradient tests."""
    return ModelConfig(
        family=family,
        n_layer=2,
        d_model=8,
        n_head=2,
        n_ctx=8,
        vocab_size=vocab_size,
        d_ff=12,
    )
