"""Markdown helpers shared by the document checks (``acceptance.release_docs``) and the
edits that attack them (``falsifiers.doc_edits``), so both see one front matter."""

from __future__ import annotations

import re

_FRONT_MATTER = re.compile(r"---[ \t]*\n(.*?\n)---[ \t]*(?:\n|$)", re.S)


def front_matter_block(text: str) -> re.Match[str] | None:
    """The YAML front matter block of a Markdown file: a first line ``---`` up to the next
    line ``---``, its closing newline included (group 1 is the YAML), or None."""
    return _FRONT_MATTER.match(text)
