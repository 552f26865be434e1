"""``--output github``: GitHub Actions workflow annotations on contract lines."""

from __future__ import annotations

import sys
from typing import IO, Any

from harness.hooks import Listener
from harness.model import RunResult, Verdict


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _escape(text).replace(":", "%3A").replace(",", "%2C")


class GithubAnnotations(Listener):
    def __init__(self, stream: Any = None) -> None:
        self.stream: IO[str] = stream or sys.stdout

    def run_finished(self, result: RunResult) -> None:
        for c in result.criteria:
            if c.verdict is Verdict.GO:
                continue
            level = "error" if c.verdict is Verdict.NO_GO else "warning"
            title = f"{c.criterion_id} {c.verdict.value}"
            message = "; ".join(c.reasons) or c.verdict.value
            print(
                f"::{level} file={_prop(c.location.file)},line={c.location.line},"
                f"title={_prop(title)}::{_escape(message)}",
                file=self.stream,
            )
