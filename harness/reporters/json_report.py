"""``--output json=FILE``: the RunResult, results schema v1 (round-trips)."""

from __future__ import annotations

from pathlib import Path

from harness.fsutil import atomic_write_json
from harness.hooks import Listener
from harness.model import RunResult


class JsonWriter(Listener):
    def __init__(self, path: Path) -> None:
        self.path = path

    def run_finished(self, result: RunResult) -> None:
        atomic_write_json(self.path, result.to_dict())


def read_results(path: Path) -> RunResult:
    import json

    return RunResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
