"""Strategies for the meta contract (the contract loader itself).

Each returns a strategy of params dicts that is merged into the invariant's
params. Keep the values JSON-able so counterexamples can be saved and replayed.
"""

from __future__ import annotations

from typing import Any


def malformed_contract_params() -> Any:
    """A valid contract with one seeded defect: a key misspelled, a required key
    deleted, or a value of the wrong type, at a random criterion field."""
    from hypothesis import strategies as st

    fields = ["id", "title", "severity", "references", "invariants"]
    defect = st.sampled_from(["misspell", "delete", "wrong_type"])
    return st.fixed_dictionaries(
        {
            "field": st.sampled_from(fields),
            "defect": defect,
            "junk": st.text(min_size=1, max_size=8),
        }
    )
