"""`harness init` and `harness new` on a project of your own: what they write,
what they wire, and the file modes of everything the tool writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.scaffold import project_packages

from .conftest import simple_contract


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one comes back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An outside project before `harness init`: its own package and tests."""
    root = tmp_path / "proj"
    (root / "mylib").mkdir(parents=True)
    (root / "mylib" / "__init__.py").write_text("")
    (root / "tests").mkdir()
    (root / "README.md").write_text("hello\n")
    (root / "pyproject.toml").write_text('[project]\nname = "my-lib"\nversion = "0"\n')
    monkeypatch.chdir(root)
    return root


# --------------------------------------------------------------------------- init


def test_init_ignores_the_evidence_and_is_idempotent(fresh):
    r = invoke("init")
    assert r.exit_code == 0, r.output
    ignore = (fresh / ".gitignore").read_text()
    assert "evidence/" in ignore.splitlines() and ".harness/" in ignore.splitlines()
    assert "added evidence/, .harness/ to" in r.output
    r = invoke("init")
    assert r.exit_code == 0 and "kept" in r.output
    assert (fresh / ".gitignore").read_text() == ignore
    assert (fresh / "pyproject.toml").read_text().count("[tool.harness]") == 1


def test_init_appends_to_a_gitignore_and_knows_equivalent_patterns(fresh):
    (fresh / ".gitignore").write_text("__pycache__/\n/evidence/*")  # no final newline
    r = invoke("init")
    assert r.exit_code == 0, r.output
    lines = (fresh / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["__pycache__/", "/evidence/*"]
    assert "evidence/" not in lines and ".harness/" in lines


def test_init_writes_allowed_packages_for_the_project_package(fresh):
    r = invoke("init")
    text = (fresh / "pyproject.toml").read_text()
    assert 'allowed-packages = ["harness", "mylib", "tests"]' in text, text
    assert text.startswith('[project]\nname = "my-lib"')  # the user's part is untouched
    # the example contract still lints and runs under the allowed packages
    assert invoke("lint").exit_code == 0
    assert invoke("run", "-j", "1").exit_code == 0, r.output


def test_project_packages_src_layout_and_project_name(tmp_path):
    (tmp_path / "src" / "alpha").mkdir(parents=True)
    (tmp_path / "src" / "alpha" / "__init__.py").write_text("")
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "__init__.py").write_text("")  # never the project's package
    assert project_packages(tmp_path) == ["alpha"]
    bare = tmp_path / "bare"
    bare.mkdir()
    assert project_packages(bare, '[project]\nname = "Data-Tools.x"\n') == ["data_tools_x"]
    assert project_packages(bare, "") == []


def test_init_without_a_package_leaves_allowed_packages_commented(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("init")
    assert r.exit_code == 0
    assert "no package of yours found" in r.output
    text = (tmp_path / "pyproject.toml").read_text()
    assert '# allowed-packages = ["harness", "your_package"]' in text
    assert "\nallowed-packages" not in text


def test_init_keeps_an_existing_table_and_suggests_allowed_packages(fresh):
    (fresh / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.harness]\njobs = 1\n')
    r = invoke("init")
    assert "kept existing [tool.harness]" in r.output
    assert 'consider allowed-packages = ["harness", "mylib", "tests"]' in r.output
    assert "allowed-packages" not in (fresh / "pyproject.toml").read_text()


def test_init_keeps_the_mode_of_the_files_it_edits(fresh, umask):
    umask(0o022)
    os.chmod(fresh / "pyproject.toml", 0o644)
    (fresh / ".gitignore").write_text("x\n")
    os.chmod(fresh / ".gitignore", 0o664)
    assert invoke("init").exit_code == 0
    assert mode(fresh / "pyproject.toml") == 0o644
    assert mode(fresh / ".gitignore") == 0o664
    assert mode(fresh / "contracts" / "example.yaml") == 0o644
    assert mode(fresh / "contracts" / "contract.schema.json") == 0o644


# --------------------------------------------------------------------------- no contracts


@pytest.mark.parametrize("command", ["run", "lint", "list"])
def test_a_project_without_contracts_is_told_to_run_init(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = invoke(command)
    assert r.exit_code == 4
    assert "no contracts in contracts" in r.output and "`harness init`" in r.output
    (tmp_path / "contracts").mkdir()  # a folder with no contract file in it
    r = invoke(command)
    assert r.exit_code == 4 and "`harness init`" in r.output


def test_a_path_given_on_the_command_line_keeps_its_own_error(project):
    r = invoke("lint", "no/such/dir")
    assert r.exit_code == 4 and "no such file or directory" in r.output
    assert "harness init" not in r.output


# --------------------------------------------------------------------------- new


INV_ONLY = """
version: 1
contract: {name: c, title: demo}
invariants:
  - id: INV-C-001
    title: an invariant
    check:
      python: demochecks:ok
    expect:
      value: {eq: 1}
"""


def test_new_criterion_lists_an_invariant_you_name(project):
    project.contract("c", simple_contract())
    r = invoke("new", "criterion", "contracts/c.yaml", "--invariant", "INV-DEMO-001")
    assert r.exit_code == 0, r.output
    assert "added AC-DEMO-002 to" in r.output and "AC-DEMO-002 lists INV-DEMO-001" in r.output
    assert "invariants: [INV-DEMO-001]" in (project.root / "contracts" / "c.yaml").read_text()
    r = invoke("new", "criterion", "contracts/c.yaml", "--invariant", "INV-NOPE-001")
    assert r.exit_code == 4 and "INV-NOPE-001: no contract defines it" in r.output
    assert "INV-DEMO-001" in r.output  # the ones that exist are listed


def test_new_criterion_lists_the_invariants_no_criterion_lists(project):
    project.contract("c", INV_ONLY)
    r = invoke("new", "criterion", "contracts/c.yaml")
    assert r.exit_code == 0, r.output
    assert "AC-C-001 lists INV-C-001, listed by no criterion until now" in r.output
    text = (project.root / "contracts" / "c.yaml").read_text()
    assert "invariants: [INV-C-001]" in text and text.count("- id: INV-") == 1


def test_new_criterion_in_a_new_file_comes_with_its_invariant(project):
    r = invoke("new", "criterion", "contracts/fresh.yaml")
    assert r.exit_code == 0, r.output
    assert "added AC-FRESH-001 and INV-FRESH-001" in r.output
    assert "harness new falsifier contracts/fresh.yaml --target INV-FRESH-001" in r.output
    lint = invoke("lint", "contracts/fresh.yaml")  # lint says the same about the falsifier
    assert "harness new falsifier contracts/fresh.yaml --target INV-FRESH-001" in lint.output
    text = (project.root / "contracts" / "fresh.yaml").read_text()
    assert text.index("criteria:") < text.index("invariants:")
    assert "invariants: [INV-FRESH-001]" in text and "- id: INV-FRESH-001" in text
    lint = invoke("lint", "contracts/fresh.yaml")  # no dangling reference: only TODOs left
    assert "which no contract defines" not in lint.output


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("mutant", 'patch: {"TODO.module:name": "TODO.module:bad_name"}'),
        ("property", 'property: {strategy: "TODO.module:strategy", max_examples: 100}'),
        ("fault", "fault: {injector: TODO_injector, params: {}}"),
    ],
)
def test_new_falsifier_of_each_kind_targets_an_invariant(project, kind, expected):
    project.contract("c", INV_ONLY)
    r = invoke("new", "falsifier", "contracts/c.yaml", "--kind", kind, "--target", "INV-C-001")
    assert r.exit_code == 0, r.output
    assert f"FALSIFY-C-001 ({kind}) attacks INV-C-001" in r.output
    text = (project.root / "contracts" / "c.yaml").read_text()
    assert f"kind: {kind}" in text and expected in text and "target: INV-C-001" in text
    lint = invoke("lint", "contracts/c.yaml")
    assert "has no falsifier" not in lint.output
    field = {"mutant": "patch", "property": "property", "fault": "fault"}[kind]
    assert f"skeleton field {field} still says TODO" in lint.output
    assert "CONTRIBUTING" not in lint.output


def test_new_falsifier_picks_the_invariant_without_one_and_refuses_to_guess(project):
    project.contract("c", INV_ONLY)
    r = invoke("new", "falsifier", "contracts/c.yaml")
    assert r.exit_code == 0 and "attacks INV-C-001" in r.output
    r = invoke("new", "falsifier", "contracts/c.yaml")  # the only invariant: a second one
    assert r.exit_code == 0 and "FALSIFY-C-002 (mutant) attacks INV-C-001" in r.output
    invoke("new", "invariant", "contracts/c.yaml")
    r = invoke("new", "falsifier", "contracts/c.yaml")
    assert "attacks INV-C-002" in r.output
    r = invoke("new", "falsifier", "contracts/c.yaml")  # both attacked: which one?
    assert r.exit_code == 4 and "--target (INV-C-001, INV-C-002)" in r.output
    r = invoke("new", "falsifier", "contracts/c.yaml", "--target", "INV-C-404")
    assert r.exit_code == 4 and "no contract defines it" in r.output
    r = invoke("new", "falsifier", "contracts/empty.yaml")
    assert r.exit_code == 4 and "harness new invariant contracts/empty.yaml" in r.output
    assert not (project.root / "contracts" / "empty.yaml").exists()


def test_new_invariant_says_how_to_list_and_attack_it(project):
    project.contract("c", simple_contract())
    r = invoke("new", "invariant", "contracts/c.yaml")
    assert r.exit_code == 0
    assert "harness new criterion contracts/c.yaml --invariant INV-DEMO-002" in r.output
    assert "harness new falsifier contracts/c.yaml --target INV-DEMO-002" in r.output


def test_new_options_belong_to_their_kind(project):
    project.contract("c", simple_contract())
    assert invoke("new", "criterion", "contracts/c.yaml", "--target", "INV-DEMO-001").exit_code == 4
    r = invoke("new", "invariant", "contracts/c.yaml", "--invariant", "INV-DEMO-001")
    assert r.exit_code == 4 and "--invariant is for a criterion" in r.output


def test_new_keeps_the_contract_file_mode(project, umask):
    umask(0o022)
    path = project.contract("c", simple_contract())
    os.chmod(path, 0o664)
    assert invoke("new", "invariant", "contracts/c.yaml").exit_code == 0
    assert mode(path) == 0o664
