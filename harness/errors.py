"""The harness's exceptions: one root, user mistakes apart from internal errors.

Every exception class of the harness derives from ``HarnessError``, and each
says which exit code it ends a command with (``exit_code``, a class attribute,
as click's exceptions do): the CLI maps an error to its code in one place with
no isinstance chain. An exception that is not a ``HarnessError`` is a bug in
the harness (exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.exitcodes import ExitCode


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a contract, pointing at its source."""

    file: str
    line: int
    col: int
    message: str
    keypath: str = ""
    hint: str = ""
    severity: str = "error"  # "error" or "warning"

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        text = f"{where}: {self.severity}: {self.message}"
        if self.keypath:
            text += f" [at {self.keypath}]"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE_ERROR

    def report_lines(self) -> list[str]:
        """What the command line prints for this error (stderr), one problem a line."""
        return [f"harness: error: {self}"]


class UsageError(HarnessError):
    """The command line or configuration asks for something impossible."""

    exit_code = ExitCode.USAGE_ERROR


class ContractError(HarnessError):
    """One or more contracts are malformed; each problem has a location."""

    exit_code = ExitCode.USAGE_ERROR

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))

    def report_lines(self) -> list[str]:
        n = len(self.diagnostics)
        return [d.format() for d in self.diagnostics] + [
            f"{n} contract error{'s' if n != 1 else ''}; nothing was run "
            "(`harness lint` shows the same)"
        ]


class NothingSelected(HarnessError):
    """A selection (-k, --tag, --criterion) matched no criterion."""

    exit_code = ExitCode.NO_SELECTION

    def report_lines(self) -> list[str]:
        return [f"harness: {self}"]


class Interrupted(HarnessError):
    """The run was interrupted (Ctrl-C); partial evidence is marked incomplete."""

    exit_code = ExitCode.INTERRUPTED

    def report_lines(self) -> list[str]:
        return [f"harness: {self or 'interrupted'}"]


class Refused(HarnessError):
    """A gate said no for a stated reason (e.g. a promotion): not GO, not a crash."""

    exit_code = ExitCode.NOT_GO


class SkipCheck(HarnessError):
    """Raised by a check (through ``ctx.skip``) when a declared precondition is unmet."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
