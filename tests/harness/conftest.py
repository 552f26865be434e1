"""A throwaway project with its own pyproject, contracts and checks module."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

CHECKS = """
import os, signal, time


def ok(ctx):
    return {"value": ctx.params.get("value", 1), "flag": True, "name": "alpha"}


def flaky_value(ctx):
    return {"value": ctx.params["value"]}


def boom(ctx):
    raise RuntimeError("the check blew up")


def segfault(ctx):
    os.kill(os.getpid(), signal.SIGSEGV)


def sleepy(ctx):
    time.sleep(60)
    return {"value": 1}


def skipper(ctx):
    ctx.skip("needs a GPU")


def noisy(ctx):
    print("to stdout")
    os.write(2, b"to stderr at fd level\\n")
    ctx.attach(b"artifact bytes", "thing.bin")
    ctx.metric("loss", 0.5, step=1)
    ctx.metric("loss", 0.25, step=2)
    return {"value": 1}


def square_is_nonneg(ctx):
    x = ctx.params.get("x", 2)
    return {"square": x * x}


def positive_only(ctx):
    return {"x": ctx.params.get("x", 1)}


GLOBAL = {"poisoned": False}


def poisoned(ctx):
    return {"poisoned": GLOBAL["poisoned"]}


def poison(ctx):
    GLOBAL["poisoned"] = True
    return {"poisoned": True}


def reads_file(ctx):
    p = ctx.scratch / "data.bin"
    p.write_bytes(b"0123456789" * 10)
    if ctx.fault is not None:
        ctx.fault.inject(path=p)
    data = p.read_bytes()
    return {"intact": data == b"0123456789" * 10}


def ignores_fault(ctx):
    return {"value": 1}


def strategy_ints():
    from hypothesis import strategies as st
    return st.fixed_dictionaries({"x": st.integers(-1000, 1000)})


def strategy_positive():
    from hypothesis import strategies as st
    return st.fixed_dictionaries({"x": st.integers(-5, 5)})


def strategy_broken():
    raise ValueError("strategy exploded")


def always_value_2(ctx):
    return {"value": 2}
"""

PYPROJECT = """
[project]
name = "demo"
version = "0"

[tool.harness]
contracts = ["contracts"]
evidence-dir = "evidence"
default-timeout = 30
"""


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root

    def contract(self, name: str, body: str) -> Path:
        path = self.root / "contracts" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body).lstrip("\n"))
        return path

    def commit(self, message: str = "project") -> str:
        """Commit everything (a git repo on first use; evidence and caches ignored), so a
        run made now is from a clean checkout. Returns the commit."""
        return commit_all(self.root, message)


GIT = [
    "git",
    "-c",
    "user.name=test",
    "-c",
    "user.email=test@localhost",
    "-c",
    "init.defaultBranch=main",
]


def commit_all(root: Path, message: str = "project") -> str:
    if not (root / ".git").exists():
        subprocess.run([*GIT, "init", "-q"], cwd=root, check=True)
        (root / ".gitignore").write_text("evidence/\nev/\n__pycache__/\n.harness/\n.hypothesis/\n")
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True)
    out = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True)
    return out.stdout.decode().strip()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "demochecks.py").write_text(CHECKS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return Project(tmp_path)


def simple_contract(
    check: str = "demochecks:ok",
    expect: str = "value: {eq: 1}",
    falsifiers: str | None = None,
    params: str = "{}",
    timeout: float | None = None,
    cid: str = "AC-DEMO-001",
    inv: str = "INV-DEMO-001",
    tags: str = "[demo]",
    title: str = "demo criterion",
) -> str:
    if falsifiers is None:
        falsifiers = f"""
falsifiers:
  - id: FALSIFY-{inv[4:]}
    title: value 2 is not 1
    kind: mutant
    target: {inv}
    mutant:
      patch: {{"{check}": "demochecks:always_value_2"}}
"""
    t = f"\n    timeout: {timeout}" if timeout else ""
    return f"""
version: 1
contract: {{name: {cid.lower()}, title: demo}}
criteria:
  - id: {cid}
    title: "{title}"
    severity: blocker
    references: [test]
    tags: {tags}
    invariants: [{inv}]
invariants:
  - id: {inv}
    title: an invariant
    check:
      python: {check}
      params: {params}
    expect:
      {expect}{t}
{falsifiers}
"""
