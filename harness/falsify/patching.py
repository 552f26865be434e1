"""Mutant patching: replace a dotted name in this process, and remember it.

A mutant falsifier runs in a worker of its own, so what it patches ends with
that worker. A check that starts a child process (a training run, a rerun) asks
``active_patches()`` which replacements are in force and hands them to the
child, which calls ``apply_patches`` before it runs: the child then runs the
same mutant code as the worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.bindings import resolve_allowed, resolve_patch_target

_ACTIVE: dict[str, str] = {}


def apply_patch(target: str, replacement: str, allowed: Sequence[str] = ()) -> None:
    """Replace ``module:attr`` with the object named by ``replacement`` (this process only).

    Both names are checked against ``allowed`` (``[tool.harness] allowed-packages``;
    empty allows anything) before anything is imported, as at lint time: the
    target's holder and the replacement must be code of an allowed package.
    Raises BindingError, and patches nothing, when either is refused or missing."""
    owner, name = resolve_patch_target(target, allowed, "mutant target")
    value = resolve_allowed(replacement, allowed, "mutant replacement")
    setattr(owner, name, value)
    _ACTIVE[target] = replacement


def apply_patches(patches: Mapping[str, str], allowed: Sequence[str] = ()) -> None:
    """Apply several patches (e.g. those a parent process reported), in order."""
    for target, replacement in patches.items():
        apply_patch(target, replacement, allowed)


def active_patches() -> dict[str, str]:
    """``{target: replacement}`` of every patch applied in this process so far."""
    return dict(_ACTIVE)
