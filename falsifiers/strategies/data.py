"""Strategies for the data-governance contract (contracts/data.yaml).

Each returns a strategy of JSON-able params dicts merged into the invariant's params.
"""

from __future__ import annotations

from typing import Any

PII_KINDS = ["email", "phone", "card", "ipv4", "ssn"]


def pii_plant_params() -> Any:
    """Which PII to plant in a copy of the corpus, how many and where (seeded)."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "plant_seed": st.integers(0, 2**31 - 1),
            "per_kind": st.integers(1, 4),
            "kinds": st.lists(st.sampled_from(PII_KINDS), min_size=1, max_size=5, unique=True),
        }
    )


def pii_gate_params() -> Any:
    """One kind of PII planted in a copy of the corpus, which the gate must block."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "plant_seed": st.integers(0, 2**31 - 1),
            "plant_kinds": st.lists(st.sampled_from(PII_KINDS), min_size=1, max_size=1),
        }
    )


def contamination_params() -> Any:
    """Eval passages planted in train documents: how many, how long, how spaced."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "plant_seed": st.integers(0, 2**31 - 1),
            "plant_count": st.integers(1, 4),
            "passage_words": st.integers(13, 40),
            "whitespace": st.sampled_from(["space", "newline", "original", "mixed"]),
            "with_tokens": st.just(False),
        }
    )


def drift_shift_params() -> Any:
    """A brightness shift of one digits pixel block, somewhere between the declared
    minimum detectable size and the maximum (both in the contract's params)."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            # where in [shift_min, shift_max] (declared in the contract's params)
            "shift_position": st.floats(0.0, 1.0, allow_nan=False).map(lambda x: round(x, 4)),
            "blocks": st.lists(st.integers(0, 15), min_size=1, max_size=1),
            "seeds": st.integers(1, 2),
            "split_seed": st.integers(0, 2**31 - 1),
            "power_curve": st.just([]),
        }
    )
