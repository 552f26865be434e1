"""Forward and backward kernels with validating wrappers (imports numba)."""

from .._jitcache import refresh as _refresh_jit_cache

_refresh_jit_cache()

# ruff: noqa: E402

from .activations import gelu, gelu_backward, silu, silu_backward, swiglu, swiglu_backward
from .attention import causal_attention, causal_attention_backward
from .embedding import embedding, embedding_backward
from .linear import linear, linear_backward
from .norms import layernorm, layernorm_backward, rmsnorm, rmsnorm_backward
from .rope import rope, rope_backward, rope_tables
from .xent import cross_entropy, cross_entropy_backward, cross_entropy_rows

__all__ = [
    "causal_attention",
    "causal_attention_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_rows",
    "embedding",
    "embedding_backward",
    "gelu",
    "gelu_backward",
    "layernorm",
    "layernorm_backward",
    "linear",
    "linear_backward",
    "rmsnorm",
    "rmsnorm_backward",
    "rope",
    "rope_backward",
    "rope_tables",
    "silu",
    "silu_backward",
    "swiglu",
    "swiglu_backward",
]
