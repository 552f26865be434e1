"""Where a contract line is, as CI tools want it: relative to the repository root.

GitHub annotations, SARIF results and JUnit cases name a file relative to the root
of the checkout (the git toplevel), wherever ``harness run`` was started from; a project
that is not in git gets paths relative to its root (the nearest pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

from harness.config import find_project_root
from harness.model import ContractSet, CriterionResult, Location


def repository_root(path: Path) -> Path | None:
    """The nearest directory upward from ``path`` holding ``.git`` (a folder, or the
    file of a worktree or submodule), else None."""
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def repo_path(file: str) -> str:
    """``file`` (as a Location names it: relative to the working directory, or
    absolute) relative to its repository root, with forward slashes; unchanged when
    it lies outside that root."""
    path = Path(file)
    absolute = (path if path.is_absolute() else Path.cwd() / path).resolve()
    root = repository_root(absolute.parent) or find_project_root(absolute.parent)
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def waiver_location(c: CriterionResult, contracts: ContractSet | None) -> Location:
    """The line of a criterion's waiver (its ``expires``), else the criterion's own."""
    try:
        declared = contracts.find(c.criterion_id) if contracts else None
    except KeyError:
        declared = None
    waiver = getattr(declared, "waiver", None)
    return waiver.location if waiver is not None and waiver.location else c.location
