"""Mutants of the harness's own loader (for the meta contract): bugs an engineer
could write into harness/loader.py."""

from __future__ import annotations

from typing import Any

from harness import loader as _loader

_ORIGINAL_DIAGNOSTIC = _loader._schema_diagnostic


def draft7_validator() -> Any:
    """The contract schema (JSON Schema 2020-12) checked by a Draft 7 validator: the
    keywords Draft 7 does not know (``dependentRequired``) are silently ignored
    (harness.loader:_validator)."""
    from jsonschema import Draft7Validator

    return Draft7Validator(_loader.contract_schema())


class _EnclosingPositions:
    def __init__(self, pos: Any) -> None:
        self._pos = pos

    def of(self, path: Any, key: bool = False) -> Any:
        path = tuple(path)
        return self._pos.of(path[:-1] if len(path) > 1 else path, key=key)


def schema_diagnostic_at_enclosing_line(file: str, err: Any, pos: Any) -> Any:
    """A schema error located at the line of the mapping that holds the offending key,
    not of the key itself (the key path cut one level short;
    harness.loader:_schema_diagnostic)."""
    return _ORIGINAL_DIAGNOSTIC(file, err, _EnclosingPositions(pos))
