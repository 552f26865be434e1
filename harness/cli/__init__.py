"""The ``harness`` command. Commands parse arguments and call the library.

``group`` holds the command group and the one place exit codes are chosen;
``cmd_run`` (run, rerun), ``cmd_author`` (lint, list, schema, explain, init,
new), ``cmd_evidence`` (keygen, verify, promote, signoff, report, diff, history),
``cmd_runs`` (gc) and ``cmd_regressions`` (the counterexample store) hold the
commands; ``streams`` keeps a command going when its output's reader goes away.
"""

from __future__ import annotations

import signal
from typing import Any

from harness.cli import (  # noqa: F401  (they register commands)
    cmd_author,
    cmd_evidence,
    cmd_regressions,
    cmd_run,
    cmd_runs,
)
from harness.cli.group import cli
from harness.cli.streams import guard_standard_streams

__all__ = ["cli", "main"]


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The console script: exit codes follow harness.exitcodes.ExitCode. Output whose
    reader went away (``| head``) is dropped; the command goes on (harness.cli.streams)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    guard_standard_streams()
    cli.main(args=argv, prog_name="harness")
