"""Build a model from its config; tell a checkpoint's family from its tensor names."""

from __future__ import annotations

from collections.abc import Iterable

from ..config import ModelConfig
from .gpt2 import GPT2
from .llama import Llama

MODELS = {"gpt2": GPT2, "llama": Llama}

# A family is recognised by tensor-name prefixes that only its checkpoints use.
_MARKERS = {
    "gpt2": ("transformer.wte.", "transformer.wpe.", "transformer.h.", "transformer.ln_f."),
    "llama": ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head."),
}


def build_model(cfg: ModelConfig) -> GPT2 | Llama:
    """Return the model of ``cfg.family``."""
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig (got {type(cfg).__name__})")
    return MODELS[cfg.family](cfg)


def detect_family(names: Iterable[str]) -> str:
    """Return "gpt2" or "llama" from tensor names; raise ValueError if unclear."""
    names = list(names)
    hits = {fam: sum(1 for n in names if n.startswith(pre)) for fam, pre in _MARKERS.items()}
    found = [fam for fam, n in hits.items() if n]
    if len(found) == 1:
        return found[0]
    if not found:
        sample = ", ".join(sorted(names)[:3]) or "no tensors"
        raise ValueError(
            f"cannot tell the architecture from tensor names ({sample}): "
            f"expected gpt2 names like 'transformer.h.0.attn.c_attn.weight' "
            f"or llama names like 'model.layers.0.self_attn.q_proj.weight'"
        )
    raise ValueError(
        f"tensor names mix architectures: {hits['gpt2']} gpt2-style and "
        f"{hits['llama']} llama-style names"
    )
