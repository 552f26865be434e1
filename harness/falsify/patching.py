"""Mutant patching: replace a dotted name in this process, and remember it.

A mutant falsifier runs in a worker of its own, so what it patches ends with
that worker. A check that starts a child process (a training run, a rerun) asks
``active_patches()`` which replacements are in force and hands them to the
child, which calls ``apply_patches`` before it runs: the child then runs the
same mutant code as the worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.bindings import resolve_allowed, resolve_patch_target

_ACTIVE: dict[str, str] = {}
_ALLOWED_SEEN: list[str] = []  # the allowed packages the active patches were checked against


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
    _ALLOWED_SEEN[:] = list(allowed)


def apply_patches(patches: Mapping[str, str], allowed: Sequence[str] = ()) -> None:
    """Apply several patches (e.g. those a parent process reported), in order."""
    for target, replacement in patches.items():
        apply_patch(target, replacement, allowed)


def active_patches() -> dict[str, str]:
    """``{target: replacement}`` of every patch applied in this process so far."""
    return dict(_ACTIVE)


PATCHES_ENV = "HARNESS_PATCHES"  # JSON: {"patches": {...}, "allowed": [...], "root": "..."}
_BOOT = Path(__file__).resolve().parent / "boot"  # holds the sitecustomize that applies them


def patch_environment(
    patches: Mapping[str, str],
    env: Mapping[str, str],
    allowed: Sequence[str] = (),
    root: str | Path | None = None,
) -> dict[str, str]:
    """``env`` for a Python process (and every Python process it starts) that runs
    with ``patches`` applied before its own code: a service under test, a child
    trainer. ``PYTHONPATH`` gets the harness's ``sitecustomize`` first; it applies
    ``$HARNESS_PATCHES`` at interpreter start, and a patch that cannot be applied
    ends that process (exit 70, the reason on stderr) rather than run unpatched.
    With no patches, ``env`` is returned as it is (a copy)."""
    out = dict(env)
    if not patches:
        return out
    spec = {"patches": dict(patches), "allowed": list(allowed)}
    if root is not None:
        spec["root"] = str(root)
    out[PATCHES_ENV] = json.dumps(spec, sort_keys=True)
    rest = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(_BOOT)]
    out["PYTHONPATH"] = os.pathsep.join([str(_BOOT), *rest])
    return out


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process of a check: ``env`` (default: this
    process's) plus every patch in force here (``active_patches``), so a mutant
    reaches the service or trainer the check starts."""
    base = dict(os.environ) if env is None else dict(env)
    return patch_environment(active_patches(), base, _ALLOWED_SEEN, os.getcwd())
