"""Writers that listen to run events: terminal, json, junit, markdown, github."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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


def make_writers(
    specs: Iterable[str], *, environ: Mapping[str, str] | None = None
) -> list[Listener]:
    """The writers of ``--output`` specs, and in a GitHub Actions job (where
    ``$GITHUB_STEP_SUMMARY`` names the step's summary file) one writer that appends
    the Markdown summary to it when ``github`` or ``markdown`` output is asked for:
    appended once, never overwriting earlier steps' content, also when a
    ``markdown=FILE`` names that same file."""
    specs = list(specs)
    writers = [make_writer(spec) for spec in specs]
    env = os.environ if environ is None else environ
    summary = env.get("GITHUB_STEP_SUMMARY")
    if not summary or not {s.partition("=")[0] for s in specs} & {"github", "markdown"}:
        return writers
    from harness.reporters.markdown import MarkdownWriter, StepSummaryWriter, same_file

    step = StepSummaryWriter(Path(summary))
    # a markdown=FILE naming the step summary would replace what earlier steps wrote
    kept = [
        w for w in writers if not (isinstance(w, MarkdownWriter) and same_file(w.path, step.path))
    ]
    return [*kept, step]
