"""The falsifier engine: the generic machinery that attacks invariants.

- ``engine``: runs one declared falsifier (mutant, property search, fault) in a worker;
- ``patching``: mutant patches by dotted name, and which are active in this process;
- ``faults``: the ``Injector`` base class and the generic injectors.

The attacks on a particular code base (its mutants, strategies and special
injectors) live in that project; ours are in the repository's ``falsifiers/``.
"""

from __future__ import annotations

from harness.falsify.engine import run_falsifier
from harness.falsify.faults import INJECTORS, InjectionFailed, Injector, make_injector, wait_for
from harness.falsify.patching import active_patches, apply_patch, apply_patches

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
