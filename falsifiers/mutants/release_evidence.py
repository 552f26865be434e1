"""Realistic bugs in ``harness verify`` that the bundle-tampering check must catch.

Each is a change an engineer could make to harness/verify.py (or to the manifest
builder it shares with the writer) while the writer's own tests stay green.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import verify as _verify
from harness.evidence import SEALS
from harness.fsutil import sha256_file


def build_manifest_skipping_seals_and_dotfiles(folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest builder as it was: every file named like a seal, at any depth,
    and every dotfile left out (harness.verify:build_manifest)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in SEALS and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def check_run_files_exist_only(run_dir: Path, run_files: dict[str, str], found: Any) -> None:
    """The run-level files signed in the verdict are checked to exist, but their
    digests are never compared (harness.verify:_check_run_files)."""
    for name in sorted(run_files):
        path = run_dir / name
        if not os.path.isfile(path):
            found.add(path, "missing (listed in the signed verdict)")


def check_manifest_listed_only(folder: Path, found: Any) -> None:
    """A criterion's manifest entries are checked, but files not in the manifest are
    never looked for (harness.verify:_check_manifest)."""
    path = folder / "manifest.json"
    manifest = _verify._read_json(path, found)
    if manifest is _verify.UNREAD or not isinstance(manifest, dict):
        return
    actual = _verify.build_manifest(folder)
    for rel, entry in manifest.items():
        if rel not in actual:
            found.add(folder / rel, "missing (listed in manifest.json)")
        elif actual[rel] != entry:
            found.add(folder / rel, "sha256 or size differs from manifest.json")
