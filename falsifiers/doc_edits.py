"""Edits a real engineer could commit to the release documents (the mutants of AC-REL-003).

The documents are the product the release checks judge, so a mutant of them is an
edit of their text: ``apply_doc_edit(name, root)`` edits, in place, the copy of the
repository's files under ``root`` (never the repository itself; the check makes the
copy and reads from it). An edit whose target text is no longer there raises
``EditNotApplied``: a falsifier must never pass because the documents moved on and
its edit silently did nothing.

- ``extra-renamed``: the ``oracle`` extra renamed to ``hf`` in pyproject.toml while the
  README and CONTRIBUTING still install ``.[core,dev,oracle,dask]`` (pip only warns, and the
  oracle's torch is silently not installed);
- ``limitations-renamed``: the model card's "Limitations" heading renamed "Known issues"
  and its body dropped;
- ``limitations-stub``: the "Limitations" heading kept, its body replaced by a TODO
  (a check that looks for the word "limitations" stays green);
- ``license-apache``: the model card's front matter says ``license: apache-2.0`` while
  LICENSE and pyproject.toml say MIT;
- ``licence-typo``: the front matter's key spelt ``licence`` (the Hub then shows no
  license at all);
- ``dataset-hub-id``: the front matter names the digits data by a Hub-style id
  (``scikit-learn/digits``) the dataset manifest does not have.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.checks.markdown import front_matter_block

CARD = "MODEL_CARD.md"


class EditNotApplied(RuntimeError):
    """The text an edit changes is not in the copy: the documents changed, update the edit."""


def _sub(root: Path, rel: str, pattern: str, repl: str, *, front_matter: bool = False) -> dict:
    """Replace the first match of ``pattern`` (multiline regex) in ``root/rel``; with
    ``front_matter`` only inside the YAML front matter of a Markdown file (the block the
    check reads: ``front_matter_block``, which ``acceptance.release_docs`` uses too)."""
    path = root / rel
    if not path.is_file():
        raise EditNotApplied(f"{rel}: not in the copy at {root}")
    text = path.read_text(encoding="utf-8")
    target, rest = text, ""
    if front_matter:
        m = front_matter_block(text)
        if not m:
            raise EditNotApplied(f"{rel}: no YAML front matter to edit")
        target, rest = m.group(0), text[m.end() :]
    new, n = re.subn(pattern, repl, target, count=1, flags=re.M)
    if n != 1 or new == target:
        raise EditNotApplied(f"{rel}: {pattern!r} not found")
    path.write_text(new + rest, encoding="utf-8")
    return {"file": rel, "pattern": pattern, "replacement": repl}


def _section(heading: str) -> str:
    """A regex for a level-2 Markdown section and its body, up to the next heading."""
    return rf"^## {re.escape(heading)}[ \t]*\n(?:(?!^#{{1,2}} ).*\n?)*"


DOC_EDITS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "extra-renamed": lambda root: _sub(root, "pyproject.toml", r"^oracle = \[", "hf = ["),
    "limitations-renamed": lambda root: _sub(
        root, CARD, _section("Limitations"), "## Known issues\n\n"
    ),
    "limitations-stub": lambda root: _sub(
        root, CARD, _section("Limitations"), "## Limitations\n\nTODO: fill in before the release.\n"
    ),
    "license-apache": lambda root: _sub(
        root, CARD, r"^license: mit$", "license: apache-2.0", front_matter=True
    ),
    "licence-typo": lambda root: _sub(
        root, CARD, r"^license: mit$", "licence: mit", front_matter=True
    ),
    "dataset-hub-id": lambda root: _sub(
        root, CARD, r"^(\s*- )digits$", r"\1scikit-learn/digits", front_matter=True
    ),
}


def apply_doc_edit(name: str, root: Path) -> dict[str, Any]:
    """Apply the edit ``name`` to the copy of the documents under ``root``; its report."""
    if name not in DOC_EDITS:
        raise ValueError(f"doc edit must be one of {', '.join(sorted(DOC_EDITS))} (got {name!r})")
    return {"edit": name, **DOC_EDITS[name](Path(root))}
