"""The harness's exceptions: one root, user mistakes apart from internal errors."""

from __future__ import annotations

from dataclasses import dataclass


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


class UsageError(HarnessError):
    """The command line or configuration asks for something impossible."""


class ContractError(HarnessError):
    """One or more contracts are malformed; each problem has a location."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class NothingSelected(HarnessError):
    """A selection (-k, --tag, --criterion) matched no criterion."""


class Interrupted(HarnessError):
    """The run was interrupted (Ctrl-C); partial evidence is marked incomplete."""


class SkipCheck(Exception):
    """Raised by a check (through ``ctx.skip``) when a declared precondition is unmet."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
