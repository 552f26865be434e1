"""Mutants of the harness's own loader (for the meta contract)."""

from __future__ import annotations

from typing import Any


class _AcceptEverything:
    def iter_errors(self, instance: Any) -> list[Any]:
        return []


def permissive_validator() -> Any:
    """A schema validator that finds no error in anything."""
    return _AcceptEverything()
