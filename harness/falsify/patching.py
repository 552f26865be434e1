"""Mutant patching: replace a dotted name in this process, and remember it.

A mutant falsifier runs in a worker of its own, so what it patches ends with
that worker. A check that starts a child process (a training run, a rerun) asks
``active_patches()`` which replacements are in force and hands them to the
child, which calls ``apply_patches`` before it runs: the child then runs the
same mutant code as the worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from harness.bindings import BindingError, import_dotted

_ACTIVE: dict[str, str] = {}


def apply_patch(target: str, replacement: str) -> None:
    """Replace ``module:attr`` with the object named by ``replacement`` (this process only)."""
    mod_name, _, attr = target.partition(":")
    try:
        owner: Any = importlib.import_module(mod_name)
    except Exception as exc:
        raise BindingError(f"mutant target module '{mod_name}' cannot be imported: {exc}") from exc
    parts = attr.split(".")
    for part in parts[:-1]:
        if not hasattr(owner, part):
            raise BindingError(f"mutant target '{target}' does not exist")
        owner = getattr(owner, part)
    if not hasattr(owner, parts[-1]):
        raise BindingError(f"mutant target '{target}' does not exist")
    setattr(owner, parts[-1], import_dotted(replacement))
    _ACTIVE[target] = replacement


def apply_patches(patches: Mapping[str, str]) -> None:
    """Apply several patches (e.g. those a parent process reported), in order."""
    for target, replacement in patches.items():
        apply_patch(target, replacement)


def active_patches() -> dict[str, str]:
    """``{target: replacement}`` of every patch applied in this process so far."""
    return dict(_ACTIVE)
