"""Generic checks on a project's files."""

from __future__ import annotations

from typing import Any

from harness.context import CheckContext


def files_exist(ctx: CheckContext) -> dict[str, Any]:
    """params: paths (list, relative to the project root), min_bytes (default 1),
    contains: {path: [strings that must appear]} (optional).
    observations: missing (count), empty (count), missing_text (count), checked."""
    paths = list(ctx.params.get("paths", []))
    min_bytes = int(ctx.params.get("min_bytes", 1))
    contains: dict[str, list[str]] = dict(ctx.params.get("contains", {}))
    missing, empty, missing_text = [], [], []
    for rel in paths:
        p = ctx.root / rel
        if not p.is_file():
            missing.append(rel)
        elif p.stat().st_size < min_bytes:
            empty.append(rel)
    for rel, needles in contains.items():
        p = ctx.root / rel
        text = p.read_text(encoding="utf-8", errors="replace") if p.is_file() else ""
        missing_text += [f"{rel}: {n!r}" for n in needles if n.lower() not in text.lower()]
    return {
        "missing": len(missing),
        "empty": len(empty),
        "missing_text": len(missing_text),
        "checked": len(paths),
        "missing_paths": missing,
        "missing_texts": missing_text,
    }
