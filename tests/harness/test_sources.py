"""The digests of the project source files the checks imported (issue 14): named by
the worker, digested by the coordinator, sealed in the bundle, compared by rerun."""

from __future__ import annotations

import hashlib
import json
import os
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.evidence import EvidenceWriter
from harness.loader import load_contract_set
from harness.plan import Observed
from harness.runner import run_contracts
from harness.signing import generate_keypair, load_public_key, load_signer
from harness.sources import MAX_SOURCES, SourceDigests, loaded_sources, source_diff
from harness.verify import verify_run

from .conftest import simple_contract

IMPORTING = '''
import sys


def imports_helpers(ctx):
    """Imports a package of the project, a module from a hidden folder and one
    planted in the evidence folder: only the first is a project source."""
    import demohelpers.values

    sys.path.insert(0, str(ctx.root / ".hidden"))
    sys.path.insert(0, str(ctx.root / "evidence"))
    import hiddenmod  # noqa: F401
    import planted  # noqa: F401

    return {"value": demohelpers.values.ONE}
'''


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def newest_run(evidence: Path) -> Path:
    return max(p for p in evidence.iterdir() if p.name[0].isdigit())


@pytest.fixture
def importing(project):
    (project.root / "demoimports.py").write_text(IMPORTING)
    (project.root / "demohelpers").mkdir()
    (project.root / "demohelpers" / "__init__.py").write_text("")
    (project.root / "demohelpers" / "values.py").write_text("ONE = 1\n")
    (project.root / ".hidden").mkdir()
    (project.root / ".hidden" / "hiddenmod.py").write_text("X = 1\n")
    (project.root / "evidence").mkdir()
    (project.root / "evidence" / "planted.py").write_text("X = 1\n")
    project.contract("a", simple_contract(check="demoimports:imports_helpers", falsifiers=""))
    return project


def test_the_bundle_seals_the_digest_of_every_project_source_a_check_imported(importing, tmp_path):
    priv, pub = generate_keypair(tmp_path / "keys" / "signing.key")
    contracts = load_contract_set([importing.root / "contracts"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=1,
        seed=3,
        root=importing.root,
        evidence_root=importing.root / "evidence",
        signer=load_signer(priv),
    )
    run_dir = Path(result.evidence_dir)
    recorded = json.loads((run_dir / "sources.json").read_text())
    root = importing.root
    expected = {
        name: sha(root / name)
        for name in ("demoimports.py", "demohelpers/__init__.py", "demohelpers/values.py")
    }
    # the project's own modules, nothing hidden, nothing in the evidence, not the tool
    assert recorded["files"] == expected, recorded
    assert recorded["checks"] == {"INV-DEMO-001": sorted(expected)}
    # a run file like the others: sealed by the signed verdict, and it verifies
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["run_files"]["sources.json"] == sha(run_dir / "sources.json")
    assert verify_run(run_dir, [load_public_key(pub)]) == []
    (run_dir / "sources.json").write_text(json.dumps({**recorded, "files": {}}))
    assert any(
        "sources.json: sha256 differs from the signed verdict" in p
        for p in verify_run(run_dir, [load_public_key(pub)])
    )


def test_a_worker_may_only_name_relative_project_source_files():
    good = Observed.from_wire(
        json.dumps({"status": "returned", "sources": ["b.py", "a/x.py", "b.py"]}).encode()
    )
    assert good.sources == ("a/x.py", "b.py")
    assert Observed.from_wire(b'{"status": "returned"}').sources == ()
    for bad in (
        "a.py",
        ["../outside.py"],
        ["/etc/passwd.py"],
        [".venv/lib/x.py"],
        ["lib/site-packages/x.py"],
        ["a//b.py"],
        ["notes.txt"],
        [1],
        ["x.py"] * (MAX_SOURCES + 1),
    ):
        with pytest.raises(ValueError, match="sources"):
            Observed.from_wire(json.dumps({"status": "returned", "sources": bad}).encode())


def test_the_worker_names_loaded_modules_inside_the_project_only(tmp_path):
    root = tmp_path / "proj"
    for rel in ("pkg/mod.py", "venv/lib/vendored.py", "top.py", "conda/lib/c.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "conda" / "conda-meta").mkdir()
    (tmp_path / "outside.py").write_text("")
    (root / "linked.py").symlink_to(tmp_path / "outside.py")
    modules = {
        f"m{i}": types.SimpleNamespace(__file__=f)
        for i, f in enumerate(
            [
                str(root / "pkg" / "mod.py"),
                str(root / "venv" / "lib" / "vendored.py"),  # a virtualenv in the project
                str(root / "conda" / "lib" / "c.py"),  # a conda environment
                str(root / "linked.py"),  # a link out of the project
                str(tmp_path / "outside.py"),
                str(root / "pkg" / "mod.pyc"),
                "top.py",  # relative: to the project root
            ]
        )
    }
    modules["none"] = types.SimpleNamespace(__file__=None)
    modules["builtin"] = types.SimpleNamespace()
    assert loaded_sources(root, modules) == ["pkg/mod.py", "top.py"]


WARMED = """
import importlib.util, os, sys
from harness.sources import _imported_since_warm, loaded_sources, warm

root = sys.argv[1]
sys.path.insert(0, root)
import preloaded  # the fork server's preload

warm(root)  # then a worker: what it imports, the preloads, and a module set by hand
import imported
assert loaded_sources(root) == ["imported.py", "preloaded.py"], loaded_sources(root)
assert _imported_since_warm(os.path.realpath(root)) is not None  # the quick way
spec = importlib.util.spec_from_file_location("by_hand", root + "/by_hand.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["by_hand"] = module  # not through the import system: every module is read
assert _imported_since_warm(os.path.realpath(root)) is None
print(loaded_sources(root) == loaded_sources(root, dict(sys.modules)), loaded_sources(root))
"""


def test_a_forked_worker_names_what_it_imported_and_the_preloads(tmp_path):
    # after warm (the fork server), a worker names its sources from the imports it made
    # and the preloads' names, not by reading every module object; one put in
    # sys.modules by hand, not imported, is found by reading them all as before
    import subprocess
    import sys

    for name in ("preloaded", "imported", "by_hand"):
        (tmp_path / f"{name}.py").write_text("X = 1\n")
    out = subprocess.run([sys.executable, "-c", WARMED, str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True ['by_hand.py', 'imported.py', 'preloaded.py']"


def test_the_coordinator_digests_regular_files_inside_the_project_once(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("A = 1\n")
    (root / "evidence").mkdir()
    (root / "evidence" / "planted.py").write_text("")
    (tmp_path / "secret.py").write_text("KEY = 'x'\n")
    (root / "link.py").symlink_to(tmp_path / "secret.py")
    (root / "inside").symlink_to(root / "pkg")
    os.mkfifo(root / "fifo.py")
    (root / "venv").mkdir()
    (root / "venv" / "pyvenv.cfg").write_text("")
    (root / "venv" / "v.py").write_text("")
    digests = SourceDigests(root, exclude=[root / "evidence"])
    names = [
        "pkg/mod.py",
        "link.py",  # a symbolic link out of the project
        "inside/mod.py",  # through a symbolic link, even one that stays inside
        "fifo.py",  # not a regular file: never read, never hangs
        "evidence/planted.py",
        "venv/v.py",
        "missing.py",
        "../secret.py",
    ]
    first = digests.digests(names)
    assert first == {"pkg/mod.py": sha(root / "pkg" / "mod.py")}
    (root / "pkg" / "mod.py").write_text("A = 2\n")
    assert digests.digests(["pkg/mod.py"]) == first  # once per run


def _fake_run(folder: Path, files: dict[str, str] | None, checks: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True)
    if files is not None:
        data = {"version": 1, "files": files, "checks": checks}
        (folder / "sources.json").write_text(json.dumps(data))
    return folder


def test_source_diff_names_changed_and_one_sided_files(tmp_path):
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    old = _fake_run(
        tmp_path / "old",
        {"x.py": a, "y.py": a, "gone.py": a},
        {"INV-1": ["x.py", "y.py", "gone.py"]},
    )
    new = _fake_run(
        tmp_path / "new", {"x.py": b, "y.py": a, "new.py": c}, {"INV-1": ["x.py", "y.py", "new.py"]}
    )
    assert source_diff(old, new) == [
        "source changed: x.py",
        "source only in the old run: gone.py",
        "source only in the new run: new.py",
    ]
    # a rerun of some checks compares the files of the checks both runs ran
    partial = _fake_run(tmp_path / "partial", {"x.py": a}, {"INV-1": ["x.py"]})
    wider = _fake_run(
        tmp_path / "wider", {"x.py": a, "z.py": b}, {"INV-1": ["x.py"], "INV-2": ["z.py"]}
    )
    assert source_diff(partial, wider) == []
    unrecorded = _fake_run(tmp_path / "unrecorded", None, {})
    assert source_diff(unrecorded, new) == [
        "sources: not recorded in the old run (a bundle made before source digests); "
        "the source files the checks imported cannot be compared"
    ]
    (unrecorded / "sources.json").write_text("[]")
    assert "cannot be compared" in source_diff(unrecorded, new)[0]


def test_rerun_at_the_commit_has_the_same_sources_and_here_names_the_change(project):
    """A rerun at the run's commit runs the committed check module: its sources equal
    the run's though the working tree changed; `rerun --here` names the changed file."""
    project.contract("a", simple_contract())
    project.commit()
    runner = CliRunner()
    evidence = project.root / "evidence"
    r = runner.invoke(cli, ["run", "-j", "1", "--seed", "4"])
    assert r.exit_code == 0, r.output
    run_dir = newest_run(evidence)
    recorded = json.loads((run_dir / "sources.json").read_text())
    assert recorded["files"] == {"demochecks.py": sha(project.root / "demochecks.py")}
    checks = project.root / "demochecks.py"
    checks.write_text(checks.read_text() + "\n# a change that is not committed\n")
    r = runner.invoke(cli, ["rerun", "--unverified", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "in a temporary worktree" in r.output and "rerun matches" in r.output
    assert "note: source" not in r.output, r.output
    at_commit = newest_run(evidence)
    assert at_commit != run_dir
    assert json.loads((at_commit / "sources.json").read_text())["files"] == recorded["files"]
    r = runner.invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert r.exit_code == 0, r.output  # the observations are the same: notes only
    assert "note: source changed: demochecks.py" in r.output, r.output


def test_an_old_bundle_without_sources_verifies_and_reruns(project, tmp_path, monkeypatch):
    project.contract("a", simple_contract())
    priv, pub = generate_keypair(tmp_path / "keys" / "signing.key")
    write = EvidenceWriter._write_run_file

    def without_sources(self, rel, data, durable=True):  # a harness before sources.json
        if rel != "sources.json":
            write(self, rel, data, durable)

    with monkeypatch.context() as m:
        m.setattr(EvidenceWriter, "_write_run_file", without_sources)
        r = CliRunner().invoke(cli, ["run", "-j", "1", "--seed", "2", "--sign-key", str(priv)])
    assert r.exit_code == 0, r.output
    run_dir = newest_run(project.root / "evidence")
    assert not (run_dir / "sources.json").exists()
    assert verify_run(run_dir, [load_public_key(pub)]) == []
    r = CliRunner().invoke(cli, ["rerun", "--here", "--key", str(pub), str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "rerun matches" in r.output
    assert "note: sources: not recorded in the old run" in r.output, r.output
