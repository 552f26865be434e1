"""An outside team's repository, as a new user would make one from docs/adopting.md:
its own package (mylib), its own checks and one contract with a mutant and a property.
Shared by the CI-integration and adoption tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE = '''"""A tiny numeric library of an outside team."""


def clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)
'''

CHECKS = """import mylib


def clip_in_range(ctx):
    x = ctx.params.get("x", 5.0)
    y = mylib.clip(x, 0.0, 1.0)
    return {"inside": 0.0 <= y <= 1.0, "fixed_point": mylib.clip(0.5, 0.0, 1.0) == 0.5}


def clip_lower_only(x, lo, hi):
    return max(x, lo)


def values():
    from hypothesis import strategies as st

    return st.fixed_dictionaries({"x": st.floats(-1e6, 1e6)})
"""

CONTRACT = """version: 1
contract: {name: clip, title: Clipping}
criteria:
  - id: AC-CLIP-001
    title: clip keeps values in range
    severity: blocker
    references: [README]
    invariants: [INV-CLIP-001]
invariants:
  - id: INV-CLIP-001
    title: clip's output lies in [lo, hi]
    check: {python: "checks.clip:clip_in_range", params: {x: 5.0}}
    expect:
      inside: {eq: true}
      fixed_point: {eq: true}
falsifiers:
  - id: FALSIFY-CLIP-001
    title: a clip that forgets the upper bound must be caught
    kind: mutant
    target: INV-CLIP-001
    mutant:
      patch: {"mylib:clip": "checks.clip:clip_lower_only"}
  - id: FALSIFY-CLIP-002
    title: any float stays in range
    kind: property
    target: INV-CLIP-001
    property: {strategy: "checks.clip:values", max_examples: 30}
"""

PYPROJECT = """[tool.harness]
contracts = ["contracts"]
allowed-packages = ["checks", "mylib"]
jobs = 1
"""


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-c",
         "init.defaultBranch=main", *args], cwd=cwd, check=True, capture_output=True,
    )  # fmt: skip


def outside_project(path: Path) -> Path:
    """An outside team's repository: its own package, checks and one contract."""
    (path / "mylib").mkdir(parents=True)
    (path / "mylib" / "__init__.py").write_text(PACKAGE)
    (path / "checks").mkdir()
    (path / "checks" / "__init__.py").write_text("")
    (path / "checks" / "clip.py").write_text(CHECKS)
    (path / "contracts").mkdir()
    (path / "contracts" / "clip.yaml").write_text(CONTRACT)
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / ".gitignore").write_text("evidence/\n.harness/\n__pycache__/\n")
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "outside project")
    return path
