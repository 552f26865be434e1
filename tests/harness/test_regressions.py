"""The regression store (issue 15, item 7): found counterexamples kept in a committable
folder, written atomically under a lock, replayed first (stale ones too, and a failure
says it is stale), an unreadable store an ERROR, and `harness regressions list|show|clear`."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import regressions
from harness.cli import cli
from harness.loader import load_contract_set
from harness.model import FalsifierOutcome
from harness.runner import run_contracts

from .conftest import simple_contract

STRATS = """
from hypothesis import strategies as st


def ints():
    return st.fixed_dictionaries({{"x": st.integers({lo}, 5)}})
"""

FALSIFIERS = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: mutant
    kind: mutant
    target: INV-DEMO-001
    mutant: {params: {x: -1}}
  - id: FALSIFY-DEMO-002
    title: search
    kind: property
    target: INV-DEMO-001
    property: {strategy: "strats:ints", max_examples: 40}
"""

STORE = Path("contracts") / ".regressions" / "FALSIFY-DEMO-002.json"


def _run(project):
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts, contracts.criteria, jobs=1, seed=3, root=project.root, default_timeout=30
    )
    return next(f for f in result.criteria[0].falsifiers if f.kind == "property")


def _cli(project, *args):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=project.root, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def searched(project):
    """A property search that finds x < 0 (the check needs x >= 0), with its store."""
    (project.root / "strats.py").write_text(STRATS.format(lo=-5))
    project.contract(
        "c",
        simple_contract(
            check="demochecks:positive_only",
            expect="x: {ge: 0}",
            params="{x: 1}",
            falsifiers=FALSIFIERS,
        ),  # fmt: skip
    )
    first = _run(project)
    assert first.outcome is FalsifierOutcome.REFUTED and first.detail["replayed"] is False
    return project


def test_a_found_counterexample_is_kept_in_the_committable_store_and_replayed(searched):
    doc = json.loads((searched.root / STORE).read_text())
    (entry,) = doc["examples"]
    assert entry["params"] == {"x": -1} and len(entry["strategy"]) == 64 and entry["found_by"]
    again = _run(searched)
    assert again.outcome is FalsifierOutcome.REFUTED and again.detail["replayed"] is True
    listed = _cli(searched, "regressions", "list")
    assert listed.returncode == 0, listed.stderr
    assert "FALSIFY-DEMO-002 #1  replayed" in listed.stdout
    assert "1 stored counterexample(s) in 1 file(s), 0 of them stale" in listed.stdout
    # the lock and unfinished writes never make the committed folder dirty
    assert ".lock" in (searched.root / STORE).with_name(".gitignore").read_text()


def test_a_stale_counterexample_is_still_replayed_and_its_failure_says_it_is_stale(searched):
    (searched.root / "strats.py").write_text(STRATS.format(lo=0))  # x >= 0 only now
    after = _run(searched)
    # a known bug is never skipped: the example is replayed, and the reason says it is stale
    assert after.outcome is FalsifierOutcome.REFUTED and after.detail["replayed"] is True
    assert "stored counterexample #1 is stale" in after.message
    assert "harness regressions clear FALSIFY-DEMO-002 1" in after.message
    listed = _cli(searched, "regressions", "list")
    assert "FALSIFY-DEMO-002 #1  STALE (the strategy changed since it was found" in listed.stdout
    cleared = _cli(searched, "regressions", "clear", "FALSIFY-DEMO-002", "1")
    assert cleared.returncode == 0 and "removed 1" in cleared.stdout
    assert not (searched.root / STORE).exists()
    assert _run(searched).outcome is FalsifierOutcome.SURVIVED  # it cannot make x < 0 now


def test_comments_and_search_settings_do_not_make_an_example_stale(searched):
    (searched.root / "strats.py").write_text(
        STRATS.format(lo=-5).replace("def ints():", "def ints():  # the inputs\n    # wide")
    )
    contract = searched.root / "contracts" / "c.yaml"
    contract.write_text(contract.read_text().replace("max_examples: 40", "max_examples: 60"))
    again = _run(searched)
    assert again.outcome is FalsifierOutcome.REFUTED and again.detail["replayed"] is True
    assert "stale" not in again.message


def test_an_unreadable_store_is_an_error_never_read_as_empty(searched):
    path = searched.root / STORE
    path.write_text(path.read_text()[:40])
    after = _run(searched)
    assert after.outcome is FalsifierOutcome.ERROR
    assert "regression store unreadable" in after.message and "not valid JSON" in after.message
    assert "harness regressions clear FALSIFY-DEMO-002" in after.message
    listed = _cli(searched, "regressions", "list")
    assert listed.returncode == 1
    assert "FALSIFY-DEMO-002: UNREADABLE" in listed.stdout and "not valid JSON" in listed.stdout
    shown = _cli(searched, "regressions", "show", "FALSIFY-DEMO-002")
    assert shown.returncode == 4 and "not valid JSON" in shown.stderr


def _add_many(store: str, who: int) -> None:
    for i in range(25):
        regressions.add(Path(store), "FALSIFY-X-001", {"who": who, "i": i}, "d" * 64, "run")


def test_concurrent_writers_lose_nothing_and_never_leave_a_partial_file(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    entries = regressions.load(tmp_path, "FALSIFY-X-001")
    assert len(entries) == 75
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_first_store_format_is_read_and_clear_needs_a_target(tmp_path, project):
    store = project.root / "contracts" / ".regressions"
    store.mkdir(parents=True)
    (store / "FALSIFY-OLD-001.json").write_text('[{"x": 3}]')
    (entry,) = regressions.load(store, "FALSIFY-OLD-001")
    assert entry.params == {"x": 3} and not entry.stale("e" * 64)
    r = CliRunner().invoke(cli, ["regressions", "clear"])
    assert r.exit_code == 4 and "name a falsifier" in r.output
    r = CliRunner().invoke(cli, ["regressions", "list"])
    assert "orphan" in r.output
    r = CliRunner().invoke(cli, ["regressions", "clear", "--all"])
    assert r.exit_code == 0 and "removed 1" in r.output
