"""ML contract harness: YAML acceptance contracts in, GO/NO-GO evidence out.

The public API is re-exported here lazily, so that ``import harness`` (and the
``harness`` command's start-up) stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "CheckContext",
    "ContractError",
    "ExitCode",
    "HarnessError",
    "UsageError",
    "load_contract",
    "load_contract_set",
    "run_contracts",
    "__version__",
]

_LAZY = {
    "CheckContext": "harness.context",
    "ContractError": "harness.errors",
    "HarnessError": "harness.errors",
    "UsageError": "harness.errors",
    "ExitCode": "harness.exitcodes",
    "load_contract": "harness.loader",
    "load_contract_set": "harness.loader",
    "run_contracts": "harness.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
