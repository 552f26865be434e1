"""Naming runs (`latest`, `previous`, ids) in every command, history before the
first run, diff against a killed run, and `harness gc`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.errors import UsageError
from harness.runs import resolve_run

from .conftest import simple_contract


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def runs(evidence: Path) -> list[Path]:
    return sorted(p for p in evidence.iterdir() if p.name[0].isdigit())


def make_runs(project, n: int, *args: str) -> list[Path]:
    project.contract("c", simple_contract())
    for _ in range(n):
        r = invoke("run", "-j", "1", "--seed", "1", *args)
        assert r.exit_code == 0, r.output
    evidence = project.root / (args[args.index("--evidence-dir") + 1] if args else "evidence")
    return runs(evidence)


def kill_a_run_midway(project) -> Path:
    """A real `harness run` SIGKILLed while its check sleeps: a bundle with run.json and
    the INCOMPLETE marker, and no results.json."""
    project.contract("slow", simple_contract(check="demochecks:sleepy", timeout=60,
                                             cid="AC-SLOW-001", inv="INV-SLOW-001")
                     .replace("name: ac-slow-001", "name: slow"))  # fmt: skip
    before = set(runs(project.root / "evidence"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "-j", "1", "--criterion", "AC-SLOW-001"],
        cwd=project.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(project.root)},
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        new: list[Path] = []
        while time.time() < deadline:
            new = [r for r in runs(project.root / "evidence") if r not in before]
            audit = new[0] / "audit.jsonl" if new else None
            if audit and audit.is_file() and "check_start" in audit.read_text():
                break
            time.sleep(0.1)
        assert new, "the run never started"
        # while it runs, gc leaves it alone (and the finished runs, the newest complete)
        for dry in (["--dry-run"], []):
            r = invoke("gc", "--keep", str(max(len(before), 1)), *dry)
            assert f"kept    {new[0].name}  (being written by a run in progress)" in r.output
            assert new[0].is_dir() and all(p.is_dir() for p in before)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(0.2)
    return new[0]


# --------------------------------------------------------------------------- history


def test_history_before_the_first_run_says_so(project):
    r = invoke("history")
    assert r.exit_code == 0 and "no runs yet in" in r.output
    assert json.loads(invoke("history", "--json").output) == []
    r = invoke("history", "AC-DEMO-001", "--evidence-dir", "elsewhere")
    assert r.exit_code == 0 and "no runs yet in elsewhere" in r.output
    assert not (project.root / "elsewhere").exists()  # reading made nothing


def test_history_and_diff_take_evidence_dir(project):
    a, b = make_runs(project, 2, "--evidence-dir", "ev")
    r = invoke("history", "--evidence-dir", "ev")
    assert r.exit_code == 0 and a.name in r.output and b.name in r.output
    r = invoke("diff", "previous", "latest", "--evidence-dir", "ev")
    assert r.exit_code == 0, r.output
    assert f"diff {a.name} -> {b.name}" in r.output
    r = invoke("diff", "previous")  # the configured evidence/ holds none
    assert r.exit_code == 4 and "holds no runs yet" in r.output


# --------------------------------------------------------------------------- naming runs


def test_resolve_run_by_keyword_id_prefix_or_path(tmp_path):
    ev = tmp_path / "ev"
    for name in ("20260101T000000.000Z-aaaaaa", "20260102T000000.000Z-bbbbbb"):
        (ev / name).mkdir(parents=True)
        (ev / name / "run.json").write_text("{}")
    (ev / "signoffs").mkdir()  # not a run
    assert resolve_run(ev, "latest").name.endswith("bbbbbb")
    assert resolve_run(ev, "previous").name.endswith("aaaaaa")
    assert resolve_run(ev, "20260101").name.endswith("aaaaaa")
    assert resolve_run(ev, str(ev / "20260101T000000.000Z-aaaaaa")).name.endswith("aaaaaa")
    with pytest.raises(UsageError, match="names 2 runs"):
        resolve_run(ev, "2026")
    with pytest.raises(UsageError, match="no run 'nope' in"):
        resolve_run(ev, "nope")
    with pytest.raises(UsageError, match="no run folder"):
        resolve_run(ev, "ev/nope")
    (ev / "20260102T000000.000Z-bbbbbb" / "run.json").unlink()
    with pytest.raises(UsageError, match="no previous run"):
        resolve_run(ev, "previous")


def test_verify_report_and_rerun_take_latest_and_previous(project, tmp_path):
    from harness.signing import generate_keypair

    priv, pub = generate_keypair(tmp_path / "keys" / "k.key")
    project.contract("c", simple_contract())
    for _ in range(2):
        assert invoke("run", "-j", "1", "--sign-key", str(priv)).exit_code == 0
    a, b = runs(project.root / "evidence")
    r = invoke("verify", "latest", "--key", str(pub))
    assert r.exit_code == 0 and f"OK: evidence/{b.name} verifies" in r.output
    r = invoke("verify", "previous", "--key", str(pub))
    assert r.exit_code == 0 and f"OK: evidence/{a.name} verifies" in r.output
    r = invoke("verify", a.name[:19], "--key", str(pub))  # a run id prefix
    assert r.exit_code == 0 and a.name in r.output
    out = tmp_path / "r.md"
    r = invoke("report", "previous", "--markdown", str(out))
    assert r.exit_code == 0 and out.is_file()
    r = invoke("rerun", "latest", "--key", str(pub), "--here", "-j", "1")
    assert r.exit_code == 0, r.output
    assert f"rerunning 1 criteria of {b.name}" in r.output


# --------------------------------------------------------------------------- a killed run


def test_diff_and_report_against_a_killed_run_say_what_is_missing(project):
    (done,) = make_runs(project, 1)
    killed = kill_a_run_midway(project)
    assert (killed / "INCOMPLETE").exists() and not (killed / "results.json").exists()
    r = invoke("diff", done.name, killed.name)
    assert r.exit_code == 4
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert f"run {killed.name} is incomplete" in lines[0] and "no results.json" in lines[0]
    r = invoke("report", killed.name, "--html", "x.html")
    assert r.exit_code == 4 and "no results.json" in r.output
    # history shows it; gc, now that no one writes it, deletes it
    assert "INCOMPLETE" in invoke("history").output
    r = invoke("gc", "--keep", "1")
    assert r.exit_code == 0 and f"deleted {killed.name}" in r.output
    assert not killed.exists() and done.is_dir()


def test_latest_and_previous_skip_a_killed_run_and_its_id_still_names_it(project):
    older, newer = make_runs(project, 2)
    killed = kill_a_run_midway(project)
    assert runs(project.root / "evidence")[-1] == killed
    r = invoke("diff", "previous", "latest")
    assert r.exit_code == 0, r.output
    assert f"diff {older.name} -> {newer.name}" in r.output
    r = invoke("report", "latest", "--markdown", "r.md")
    assert r.exit_code == 0 and (project.root / "r.md").is_file(), r.output
    # by its id (or a prefix of it) the killed run is still named, and says what it lacks
    r = invoke("report", killed.name[:22], "--markdown", "k.md")
    assert r.exit_code == 4 and f"run {killed.name} is incomplete" in r.output


def test_resolve_run_names_only_complete_runs_latest_and_previous(tmp_path):
    ev = tmp_path / "ev"
    names = ["20260101T000000.000Z-aaaaaa", "20260102T000000.000Z-bbbbbb"]
    names += ["20260103T000000.000Z-cccccc"]
    for name in names:
        (ev / name).mkdir(parents=True)
        (ev / name / "run.json").write_text("{}")
    (ev / names[2] / "INCOMPLETE").write_text("killed\n")
    assert resolve_run(ev, "latest").name == names[1]
    assert resolve_run(ev, "previous").name == names[0]
    assert resolve_run(ev, names[2]).name == names[2]  # named by its id, it is found
    (ev / names[0] / "INCOMPLETE").write_text("")
    with pytest.raises(UsageError, match="no previous run: .* one complete run"):
        resolve_run(ev, "previous")
    (ev / names[1] / "INCOMPLETE").write_text("")
    with pytest.raises(UsageError, match=r"no complete run in .*, only 3 incomplete run\(s\)"):
        resolve_run(ev, "latest")


# --------------------------------------------------------------------------- gc


def test_gc_keeps_the_newest_complete_runs_and_says_what_it_freed(project):
    all_runs = make_runs(project, 4)
    r = invoke("gc", "--keep", "2", "--dry-run")
    assert r.exit_code == 0
    assert "dry run: would delete 2 run(s)" in r.output
    assert all(p.is_dir() for p in all_runs)
    r = invoke("gc", "--keep", "2")
    assert r.exit_code == 0, r.output
    assert f"deleted {all_runs[0].name}" in r.output and f"deleted {all_runs[1].name}" in r.output
    assert "deleted 2 run(s), freed " in r.output and "KiB" in r.output
    assert runs(project.root / "evidence") == all_runs[2:]
    # the history index forgets them too
    history = invoke("history").output
    assert all_runs[0].name not in history and all_runs[3].name in history
    r = invoke("gc", "--keep", "2")
    assert "deleted 0 run(s), freed 0 B" in r.output


def test_gc_keeps_what_the_promotion_registry_names_and_refuses_one_it_cannot_read(project):
    old, new = make_runs(project, 2)
    registry = project.root / "release" / "promotions.jsonl"
    registry.parent.mkdir()
    registry.write_text(json.dumps({"record": {"run_id": old.name}}) + "\n")
    r = invoke("gc", "--keep", "0")
    assert r.exit_code == 0, r.output
    assert old.is_dir() and not new.exists()
    registry.write_text(registry.read_text() + "{truncated\n")
    r = invoke("gc", "--keep", "0")
    assert r.exit_code == 4 and "promotions.jsonl:2: not a promotion record" in r.output
    assert old.is_dir()


def test_gc_keep_is_required_and_not_negative(project):
    assert invoke("gc").exit_code == 4
    assert invoke("gc", "--keep", "-1").exit_code == 4
