"""Contracts are hostile (SECURITY.md): each test is an attack a contract could
make, and asserts that it fails cleanly.

Finding 7: a generated contract crashed the loader (exit 3, a traceback) or ate
time and memory. Every such file is now a contract error at its line (exit 4),
the rest of the set is still linted, and limits hold on size, nodes, depth and
the number of errors shown.

Finding 8: ``allowed-packages`` was bypassed through an attribute path, by a
re-exported function, by a fault injector (imported at lint), by a pytest file
outside the root (collected at lint), and mutant patches and strategies were
checked at lint only. Each is now refused, at lint and at run time, before the
code is imported, collected or called: marker files prove it never ran.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.bindings import BindingError, resolve_allowed, resolve_patch_target
from harness.cli import cli
from harness.errors import ContractError
from harness.falsify.faults import TruncateFile, make_injector
from harness.falsify.patching import apply_patch
from harness.loader import MAX_ERRORS_PER_FILE, load_contract
from harness.yamlsrc import MAX_DEPTH, MAX_NODES

from .conftest import simple_contract


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_clean_refusal(result, where: str) -> None:
    """Exit 4, the problem at ``where`` (file:line), and no crash."""
    assert result.exit_code == 4, result.output
    assert where in result.output, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output


# =========================================================================== finding 7

# (name, line of simple_contract to replace, its replacement, line reported)
CRASHERS = [
    ("bad-int", '    title: "demo criterion"', "    title: !!int abc", 5),
    ("bad-float", '    title: "demo criterion"', "    title: !!float x", 5),
    ("empty-float", '    title: "demo criterion"', "    title: !!float ''", 5),
    ("bad-timestamp", '    title: "demo criterion"', "    title: !!timestamp 2001-99-99", 5),
    ("timestamp-no-match", '    title: "demo criterion"', "    title: !!timestamp x", 5),
    ("bad-bool", '    title: "demo criterion"', "    title: !!bool maybe", 5),
    ("bad-binary", '    title: "demo criterion"', "    title: !!binary x", 5),
    ("huge-int", "      params: {}", "      params: {n: " + "9" * 5000 + "}", 15),
    ("huge-hex", "      params: {}", "      params: {n: 0x" + "f" * 5000 + "}", 15),
    ("huge-sexagesimal", "      params: {}", "      params: {n: 1" + ":59" * 3000 + "}", 15),
    ("bad-date-as-version", "version: 1", "version: 2001-13-45", 1),
    ("python-tag", "      params: {}", '      params: !!python/object/apply:os.system ["x"]', 15),
    ("deep", "      params: {}", "      params: " + "[" * 200 + "]" * 200, 15),
]


@pytest.mark.parametrize("command", ["lint", "run"])
@pytest.mark.parametrize(
    ("old", "new", "line"), [c[1:] for c in CRASHERS], ids=[c[0] for c in CRASHERS]
)
def test_a_value_pyyaml_cannot_construct_is_a_contract_error_at_its_line(
    project, command, old, new, line
):
    body = textwrap.dedent(simple_contract()).lstrip("\n")
    assert old in body
    project.contract("c", body.replace(old, new, 1))
    assert_clean_refusal(invoke(command), f"contracts/c.yaml:{line}:")


def test_an_invalid_date_in_a_text_field_is_text(project):
    """`title: 2001-13-45` is a title, as `title: 2001-12-14` is: never a crash."""
    path = project.contract("c", simple_contract(title="x").replace('"x"', "2001-13-45"))
    assert load_contract(path).criteria[0].title == "2001-13-45"
    r = invoke("lint")
    assert r.exit_code == 0, r.output


def test_one_hostile_file_does_not_stop_the_others_being_linted(project):
    project.contract("a", simple_contract().replace('"demo criterion"', "!!int abc"))
    project.contract(
        "b",
        simple_contract(cid="AC-DEMO-002", inv="INV-DEMO-002").replace(
            "severity: blocker", "severity: critical"
        ),
    )
    project.contract("c", simple_contract(cid="AC-DEMO-003", inv="INV-DEMO-003"))
    r = invoke("lint")
    assert_clean_refusal(r, "contracts/a.yaml:5:")
    assert "contracts/b.yaml:6:15: error: 'severity' must be one of blocker, warn" in r.output
    assert "1 contract files" in r.output  # c.yaml loaded and was linted


def _criteria_file(n_bytes: int = 0, count: int = 0) -> str:
    """Criteria with only an id: ``count`` of them, or as many as fit ``n_bytes``."""
    lines = ["version: 1", "contract: {name: big, title: big}", "criteria:"]
    size = sum(len(x) + 1 for x in lines)
    while size < n_bytes or len(lines) - 3 < count:
        lines.append(f"  - id: AC-BIG-{len(lines) - 3:06d}")
        size += len(lines[-1]) + 1
    return "\n".join(lines) + "\n"


def test_a_megabyte_of_incomplete_criteria_stops_at_the_node_limit_fast(project):
    project.contract("big", _criteria_file(n_bytes=1_000_000))  # ~50k criteria, 1 MB
    start = time.monotonic()
    r = invoke("lint")
    elapsed = time.monotonic() - start
    assert_clean_refusal(r, "contracts/big.yaml:")
    assert f"more than {MAX_NODES} nodes" in r.output
    assert len(r.output.splitlines()) <= 3, r.output
    assert elapsed < 10, elapsed


def test_tens_of_thousands_of_schema_errors_are_capped_per_file(project):
    count = MAX_NODES // 3 - 10  # just under the node limit: ~66k schema errors
    project.contract("big", _criteria_file(count=count))
    start = time.monotonic()
    r = invoke("lint")
    elapsed = time.monotonic() - start
    assert_clean_refusal(r, "contracts/big.yaml:4:5: error: missing required key")
    lines = [ln for ln in r.output.splitlines() if ln.startswith("contracts/big.yaml")]
    assert len(lines) == MAX_ERRORS_PER_FILE + 1
    more = 4 * count - MAX_ERRORS_PER_FILE
    assert f"… and {more} more errors in contracts/big.yaml" in lines[-1]
    assert elapsed < 20, elapsed


def test_set_wide_errors_are_capped_per_file_too(project):
    refs = ", ".join(f"INV-NOPE-{i:03d}" for i in range(200))
    project.contract(
        "c",
        simple_contract().replace(
            "invariants: [INV-DEMO-001]", f"invariants: [INV-DEMO-001, {refs}]"
        ),
    )
    r = invoke("lint", "--no-resolve")
    assert r.exit_code == 4
    lines = [ln for ln in r.output.splitlines() if ln.startswith("contracts/c.yaml")]
    assert len(lines) == MAX_ERRORS_PER_FILE + 1
    assert "… and 180 more errors in contracts/c.yaml" in lines[-1]


def test_billion_laughs_is_refused_without_expanding(project):
    lines = [
        "version: 1",
        "contract: {name: lol, title: lol}",
        'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    for i in range(1, 10):  # 10**10 strings if expanded
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    path = project.contract("lol", "\n".join(lines) + "\n")
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(ContractError, match=f"more than {MAX_NODES} nodes"):
            load_contract(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 2
    assert peak < 20 * 1024 * 1024, peak
    assert_clean_refusal(invoke("lint"), "contracts/lol.yaml:")


def test_nesting_deeper_than_the_limit_is_refused(project):
    path = project.contract(
        "deep", "version: 1\nx: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    )
    with pytest.raises(ContractError, match=f"deeper than {MAX_DEPTH} levels"):
        load_contract(path)


def test_an_oversized_file_names_the_file_and_the_limit(project):
    project.contract("huge", "version: 1\n# " + "x" * (1024 * 1024) + "\n")
    r = invoke("lint")
    assert_clean_refusal(r, "contracts/huge.yaml:1:1: error: file is larger than 1048576 bytes")


def test_a_huge_value_is_quoted_short_in_the_message(project):
    body = simple_contract().replace('"demo criterion"', "[" + ", ".join(["x" * 100] * 1000) + "]")
    project.contract("c", body)
    r = invoke("lint")
    assert_clean_refusal(r, "contracts/c.yaml:5:")
    assert max(len(line) for line in r.output.splitlines()) < 600


# =========================================================================== finding 8

GUARDED_PYPROJECT = """
[project]
name = "demo"
version = "0"

[tool.harness]
contracts = ["contracts"]
evidence-dir = "evidence"
default-timeout = 30
allowed-packages = ["demochecks", "gate", "harness", "tests"]
"""

# An allowed module that imports foreign code, as harness.bindings imports os.
GATE = """
import foreign_calls
from foreign_calls import run as reexported
"""

# Foreign code already imported by an allowed module: calling it leaves a marker.
FOREIGN_CALLS = """
from pathlib import Path

MARK = Path({mark!r})


def run(ctx=None, *a, **k):
    MARK.joinpath("called").write_text("foreign code ran")
    return {{"value": 1}}


def strategy():
    MARK.joinpath("called").write_text("foreign strategy ran")
    from hypothesis import strategies as st
    return st.fixed_dictionaries({{}})
"""

# Foreign code nobody imports: importing it leaves a marker.
FOREIGN_IMPORT = """
from pathlib import Path

Path({mark!r}).joinpath("imported").write_text("foreign module imported")

from harness.falsify.faults import Injector


class Evil(Injector):
    name = "evil"


def run(ctx):
    return {{"value": 1}}


def strategy():
    from hypothesis import strategies as st
    return st.fixed_dictionaries({{}})
"""

TEST_EVIL = """
from pathlib import Path

Path({mark!r}).joinpath("collected").write_text("test file outside collected")


def test_x():
    pass
"""


class Guarded:
    def __init__(self, project, marks: Path, outside: Path) -> None:
        self.project, self.root, self.marks, self.outside = project, project.root, marks, outside
        self.allowed = ("demochecks", "gate", "harness", "tests")

    def marked(self) -> list[str]:
        return sorted(p.name for p in self.marks.iterdir())


@pytest.fixture
def guarded(project, tmp_path_factory, monkeypatch) -> Guarded:
    """The demo project with allowed-packages set, foreign modules inside the root
    (outside the allowed packages) and a test file outside the root."""
    for name in ("demochecks", "gate", "foreign_calls", "foreign_import", "gate.shell"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # this project's, not a cached one
    marks = tmp_path_factory.mktemp("marks")
    outside = tmp_path_factory.mktemp("outside")
    root = project.root
    (root / "pyproject.toml").write_text(GUARDED_PYPROJECT)
    (root / "gate.py").write_text(GATE)
    (root / "foreign_calls.py").write_text(FOREIGN_CALLS.format(mark=str(marks)))
    (root / "foreign_import.py").write_text(FOREIGN_IMPORT.format(mark=str(marks)))
    (outside / "test_evil.py").write_text(TEST_EVIL.format(mark=str(marks)))
    (root / "test_loose.py").write_text(TEST_EVIL.format(mark=str(marks)))
    (root / "tests").mkdir()
    (root / "tests" / "test_ok.py").write_text("def test_ok():\n    pass\n")
    (root / "tests" / "test_link.py").symlink_to(outside / "test_evil.py")
    return Guarded(project, marks, outside)


def _contract(check_line: str, falsifiers: str = "") -> str:
    """One criterion and invariant bound by ``check_line`` (e.g. 'python: m:f')."""
    body = simple_contract(falsifiers=falsifiers or " ")
    return body.replace("python: demochecks:ok", check_line)


ATTACKS = {
    # an attribute path through an allowed module into a foreign one
    "os-system-via-harness": "python: harness.bindings:os.system",
    "through-allowed-module": "python: gate:foreign_calls.run",
    # a foreign function re-exported by an allowed module
    "reexported": "python: gate:reexported",
    # a foreign module named outright
    "foreign-module": "python: foreign_import:run",
}


@pytest.mark.parametrize("check_line", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_binding_outside_the_allowed_packages_is_refused_at_lint(guarded, check_line):
    guarded.project.contract("c", _contract(check_line))
    r = invoke("lint")
    assert_clean_refusal(r, "contracts/c.yaml:11:")
    assert "outside the allowed packages" in r.output
    assert guarded.marked() == []


@pytest.mark.parametrize(
    "check_line",
    [ATTACKS["through-allowed-module"], ATTACKS["reexported"], ATTACKS["foreign-module"]],
    ids=["through-allowed-module", "reexported", "foreign-module"],
)
def test_a_binding_outside_the_allowed_packages_never_runs(guarded, check_line):
    guarded.project.contract("c", _contract(check_line))
    r = invoke("run", "-j", "1", "-v", "--no-evidence")
    assert guarded.marked() == [], r.output  # the foreign code never ran
    assert r.exit_code == 1, r.output
    assert "release verdict: GO" not in r.output
    assert "outside the allowed packages" in r.output


def test_the_allowed_check_still_runs(guarded):
    guarded.project.contract("c", simple_contract())
    assert invoke("lint").exit_code == 0
    r = invoke("run", "-j", "1", "--no-evidence")
    assert r.exit_code == 0, r.output


def test_a_fault_injector_outside_the_allowed_packages_is_never_imported_at_lint(guarded):
    falsifiers = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: an injector from outside
    kind: fault
    target: INV-DEMO-001
    fault: {injector: "foreign_import:Evil"}
"""
    guarded.project.contract("c", _contract("python: demochecks:ok", falsifiers))
    r = invoke("lint")
    assert guarded.marked() == [], r.output  # the injector's module was never imported
    assert_clean_refusal(r, "contracts/c.yaml:20:")
    assert "fault injector 'foreign_import:Evil'" in r.output
    assert "outside the allowed packages" in r.output


def test_a_fault_injector_outside_the_allowed_packages_is_refused_at_run_time(guarded):
    with pytest.raises(BindingError, match="outside the allowed packages"):
        make_injector("foreign_import:Evil", {}, 1, allowed=guarded.allowed)
    assert guarded.marked() == []  # refused before its module was imported
    assert isinstance(make_injector("truncate_file", {}, 1, guarded.allowed), TruncateFile)
    ok = make_injector("harness.falsify.faults:TruncateFile", {}, 1, guarded.allowed)
    assert isinstance(ok, TruncateFile)


@pytest.mark.parametrize(
    ("node_id", "why"),
    [
        ("{up}/test_evil.py::test_x", "outside the project root"),
        ("{absolute}/test_evil.py::test_x", "outside the project root"),
        ("tests/../{up}/test_evil.py::test_x", "outside the project root"),
        ("tests/test_link.py::test_x", "outside the project root"),  # a symlink out
        ("test_loose.py::test_x", "outside the allowed packages"),
    ],
    ids=["dotdot", "absolute", "through-tests", "symlink", "in-root-not-allowed"],
)
def test_a_pytest_file_outside_is_never_collected_nor_run(guarded, node_id, why):
    up = os.path.relpath(guarded.outside, guarded.root)
    node_id = node_id.format(up=up, absolute=guarded.outside)
    assert up.startswith("..")
    guarded.project.contract("c", _contract(f'pytest: "{node_id}"'))
    r = invoke("lint")
    assert guarded.marked() == [], r.output  # never collected
    assert_clean_refusal(r, "contracts/c.yaml:11:")
    assert why in r.output
    r = invoke("run", "-j", "1", "-v", "--no-evidence")
    assert guarded.marked() == [], r.output  # never collected nor run
    assert r.exit_code == 1, r.output
    assert why in r.output


def test_a_pytest_file_inside_an_allowed_package_is_collected(guarded):
    guarded.project.contract("c", _contract('pytest: "tests/test_ok.py::test_ok"'))
    r = invoke("lint")
    assert "test_ok" not in r.output, r.output  # resolves; only 'no falsifier' remains
    assert guarded.marked() == []


def test_a_mutant_patch_outside_the_allowed_packages_is_refused_at_lint(guarded):
    falsifiers = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: patch in foreign code
    kind: mutant
    target: INV-DEMO-001
    mutant:
      patch: {"demochecks:ok": "gate:foreign_calls.run", "foreign_import:run": "demochecks:ok"}
"""
    guarded.project.contract("c", _contract("python: demochecks:ok", falsifiers))
    r = invoke("lint")
    assert_clean_refusal(r, "contracts/c.yaml:20:")
    assert "mutant replacement 'gate:foreign_calls.run'" in r.output
    assert "mutant target 'foreign_import:run'" in r.output
    assert guarded.marked() == []


def test_a_mutant_patch_outside_the_allowed_packages_is_refused_at_run_time(guarded):
    import demochecks
    import gate

    ok, run = demochecks.ok, gate.foreign_calls.run
    allowed = guarded.allowed
    attacks = [
        ("demochecks:ok", "gate:foreign_calls.run"),  # replacement through an allowed module
        ("demochecks:ok", "gate:reexported"),  # a re-exported foreign function
        ("demochecks:ok", "harness.bindings:os.system"),
        ("gate:foreign_calls.run", "demochecks:always_value_2"),  # target in foreign code
        ("foreign_import:run", "demochecks:always_value_2"),  # target module not allowed
        ("demochecks:ok", "foreign_import:run"),  # replacement module not allowed
    ]
    for target, replacement in attacks:
        with pytest.raises(BindingError, match="outside the allowed packages"):
            apply_patch(target, replacement, allowed)
    assert demochecks.ok is ok and gate.foreign_calls.run is run  # nothing was patched
    assert guarded.marked() == []
    apply_patch("demochecks:ok", "demochecks:always_value_2", allowed)  # allowed: applies
    assert demochecks.ok is demochecks.always_value_2
    demochecks.ok = ok


def test_a_property_strategy_outside_the_allowed_packages_is_refused(guarded):
    falsifiers = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: a foreign strategy
    kind: property
    target: INV-DEMO-001
    property: {strategy: "foreign_import:strategy"}
"""
    guarded.project.contract("c", _contract("python: demochecks:ok", falsifiers))
    r = invoke("lint")
    assert_clean_refusal(r, "contracts/c.yaml:20:")
    assert "property strategy 'foreign_import:strategy'" in r.output
    for dotted in ("foreign_import:strategy", "gate:foreign_calls.strategy"):
        with pytest.raises(BindingError, match="outside the allowed packages"):
            resolve_allowed(dotted, guarded.allowed, "property strategy")
    assert guarded.marked() == []
    assert callable(resolve_allowed("demochecks:strategy_ints", guarded.allowed))


@pytest.mark.parametrize(
    "dotted",
    [
        "harness.bindings:os.system",
        "harness.bindings:sys.modules",
        "harness.bindings:importlib.import_module",
        "harness.bindings:Path",  # a foreign class imported by name
        "harness.bindings:import_dotted.__globals__",
        "harness.bindings:BindingError.__subclasses__",  # a builtin method
        "harness.bindings:__loader__.load_module",
    ],
)
def test_the_resolver_refuses_every_way_out_of_an_allowed_module(dotted):
    with pytest.raises(BindingError, match="outside the allowed packages"):
        resolve_allowed(dotted, ("harness",), "binding")


def test_a_module_aliased_in_sys_modules_is_judged_by_its_real_name(guarded, monkeypatch):
    monkeypatch.setitem(sys.modules, "gate.shell", os)
    with pytest.raises(BindingError, match="imports as module 'os'"):
        resolve_allowed("gate.shell:system", guarded.allowed)


def test_without_allowed_packages_anything_goes_as_before():
    assert resolve_allowed("harness.bindings:os.system", (), "binding") is os.system
    owner, name = resolve_patch_target("harness.bindings:os.system", ())
    assert owner is os and name == "system"
