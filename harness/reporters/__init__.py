"""Writers that listen to run events: terminal, json, junit, markdown, github."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.hooks import Listener

FORMATS = ("json", "junit", "markdown", "github", "html", "sarif")


def make_writer(spec: str, *, stream: object = None) -> Listener:
    """``json=FILE``, ``junit=FILE``, ``markdown=FILE``, ``html=FILE``, ``sarif=FILE``
    or ``github``."""
    kind, _, target = spec.partition("=")
    if kind not in FORMATS:
        raise UsageError(
            f"--output {spec!r}: unknown format {kind!r} "
            f"(use one of: json=FILE, junit=FILE, markdown=FILE, html=FILE, sarif=FILE, github)"
        )
    if kind == "github":
        from harness.reporters.github import GithubAnnotations

        return GithubAnnotations(stream)
    if not target:
        raise UsageError(f"--output {kind} needs a file: --output {kind}=FILE")
    path = Path(target)
    if kind == "json":
        from harness.reporters.json_report import JsonWriter

        return JsonWriter(path)
    if kind == "junit":
        from harness.reporters.junit import JunitWriter

        return JunitWriter(path)
    if kind == "markdown":
        from harness.reporters.markdown import MarkdownWriter

        return MarkdownWriter(path)
    if kind == "html":
        from harness.reporters.html import HtmlWriter

        return HtmlWriter(path)
    from harness.reporters.sarif import SarifWriter

    return SarifWriter(path)
