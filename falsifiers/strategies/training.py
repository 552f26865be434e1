"""Strategies for the training contract (contracts/training.yaml).

Each returns a strategy of params dicts merged into the invariant's params.
Configurations stay TINY (one layer, d_model <= 32, a dozen steps): every
example trains real models.
"""

from __future__ import annotations

from typing import Any


def reproducibility_params() -> Any:
    """A seed and a small config: family, width, batch size, accumulation, learning rate."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**31 - 1),
            "family": st.sampled_from(["gpt2", "llama"]),
            "model": st.sampled_from(
                [
                    {"n_layer": 1, "d_model": 16, "n_head": 2, "n_ctx": 16},
                    {"n_layer": 1, "d_model": 32, "n_head": 4, "n_ctx": 16},
                    {"n_layer": 2, "d_model": 16, "n_head": 2, "n_ctx": 8},
                ]
            ),
            "batch_size": st.integers(1, 4),
            "grad_accum": st.integers(1, 2),
            "lr": st.sampled_from([1e-4, 1e-3, 3e-3, 1e-2]),
        }
    )


def accumulation_params() -> Any:
    """k micro-batches of b windows, a family and a seed."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "k": st.integers(2, 4),
            "micro_batch": st.integers(1, 3),
            "family": st.sampled_from(["gpt2", "llama"]),
            "seed": st.integers(0, 2**31 - 1),
        }
    )
