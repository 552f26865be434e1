"""The falsifier engine: the generic machinery that attacks invariants.

- ``engine``: runs one declared falsifier (mutant, property search, fault) in a worker;
- ``patching``: mutant patches by dotted name, and which are active in this process;
- ``faults``: the ``Injector`` base class and the generic injectors.

The attacks on a particular code base (its mutants, strategies and special
injectors) live in that project; ours are in the repository's ``falsifiers/``.

The names below are imported lazily: a service under a mutant imports
``harness.falsify.patching`` at interpreter start (``boot/sitecustomize.py``), and
should not pay for the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.falsify.engine import run_falsifier
    from harness.falsify.faults import (
        INJECTORS,
        InjectionFailed,
        Injector,
        make_injector,
        wait_for,
    )
    from harness.falsify.patching import active_patches, apply_patch, apply_patches

_LAZY = {
    "run_falsifier": "harness.falsify.engine",
    "INJECTORS": "harness.falsify.faults",
    "InjectionFailed": "harness.falsify.faults",
    "Injector": "harness.falsify.faults",
    "make_injector": "harness.falsify.faults",
    "wait_for": "harness.falsify.faults",
    "active_patches": "harness.falsify.patching",
    "apply_patch": "harness.falsify.patching",
    "apply_patches": "harness.falsify.patching",
}

__all__ = [
    "INJECTORS",
    "InjectionFailed",
    "Injector",
    "active_patches",
    "apply_patch",
    "apply_patches",
    "make_injector",
    "run_falsifier",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.falsify' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
