"""Strategies for the kernels-and-inference contract (contracts/kernels.yaml).

Each returns a strategy of JSON-able params dicts merged into the invariant's params.
Shapes stay tiny: every example runs finite differences over every input entry.
"""

from __future__ import annotations

from typing import Any

# The kernels the correctness check has cases for (``KERNELS`` in
# acceptance/kernel_cases.py), in the same order. Listed here, not imported: the attack
# library never imports the checks. tests/acceptance/test_kernels.py keeps them equal.
KERNEL_NAMES = [
    "embedding",
    "linear_io",
    "linear_oi",
    "layernorm",
    "rmsnorm",
    "gelu",
    "silu",
    "swiglu",
    "rope",
    "attention",
    "cross_entropy",
    "adamw",
]

SCALES = [1e-3, 0.1, 1.0, 30.0, 1e3, 1e4]


def kernel_params() -> Any:
    """One kernel, a small shape, a value scale (logits up to 1e4) and a seed."""
    from hypothesis import strategies as st

    shapes = st.fixed_dictionaries(
        {
            "b": st.integers(1, 2),
            "t": st.integers(1, 6),
            "h": st.integers(1, 3),
            "hd": st.integers(1, 4),
            "d": st.integers(1, 8),
            "v": st.integers(2, 24),
        }
    )
    return st.fixed_dictionaries(
        {
            "kernel": st.sampled_from(KERNEL_NAMES),
            "shape": shapes,
            "scale": st.sampled_from(SCALES),
            "seed": st.integers(0, 2**31 - 1),
        }
    )


def causality_params() -> Any:
    """A family, a sequence length, a position t before its end, and a seed."""
    from hypothesis import strategies as st

    def with_t(d: dict[str, Any]) -> Any:
        return st.integers(0, d["seq_len"] - 2).map(lambda t: {**d, "t": [t]})

    return st.fixed_dictionaries(
        {
            "families": st.sampled_from([["gpt2"], ["llama"]]),
            "seq_len": st.integers(2, 16),
            "seed": st.integers(0, 2**31 - 1),
        }
    ).flatmap(with_t)


def byte_input_params() -> Any:
    """Arbitrary byte strings (hex), tiled up to far past the context window, at a
    logit scale from ordinary to ~1e4."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "inputs_hex": st.lists(st.binary(max_size=300).map(bytes.hex), min_size=1, max_size=3),
            "repeat": st.sampled_from([1, 1, 2, 10]),
            "logit_scale": st.sampled_from([1.0, 300.0, 2e4]),
        }
    )
