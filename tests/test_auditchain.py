"""auditchain: the one audit-log implementation the tool and the core share."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

import auditchain
from auditchain import AuditLog, ChainError, append_event, read_events, verify_chain


def test_appends_verify_and_an_edit_is_detected(tmp_path: Path) -> None:
    log = tmp_path / "a" / "audit.jsonl"
    h1 = append_event(log, "x", n=1)
    h2 = append_event(log, "y", n=2)
    assert h1 != h2
    assert verify_chain(log) == (h2, 2, [])
    lines = log.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["n"] = 5
    log.write_text(json.dumps(rec, sort_keys=True) + "\n" + lines[1] + "\n")
    assert "line 2: prev hash does not match line 1" in verify_chain(log)[2][0]


def test_a_long_lived_writer_extends_what_another_wrote_since(tmp_path: Path) -> None:
    """A log held open (a run, a service) and one-shot appends (the trainer) interleave
    into one chain: each append re-reads what others wrote since its own last one."""
    log = tmp_path / "audit.jsonl"
    with AuditLog(log) as held:
        held.append("held", n=0)
        append_event(log, "trainer", n=1)
        append_event(log, "trainer", n=2)
        held.append("held", n=3)
    head, count, problems = verify_chain(log)
    assert (count, problems) == (4, [])
    assert [e["n"] for e in read_events(log)] == [0, 1, 2, 3]


def _append_many(path: str, who: str, n: int) -> None:
    for i in range(n):
        append_event(path, who, i=i)


def test_two_processes_appending_at_once_make_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(log), w, 40)) for w in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    _, count, problems = verify_chain(log)
    assert (count, problems) == (80, [])


def test_a_broken_chain_is_never_extended(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    append_event(log, "x")
    append_event(log, "y")
    lines = log.read_bytes().split(b"\n")
    log.write_bytes(lines[1] + b"\n")  # the first line removed
    with pytest.raises(ChainError, match="will not extend a broken chain: line 1"):
        append_event(log, "z")
    assert log.read_bytes() == lines[1] + b"\n"  # nothing written


def test_a_missing_log_is_a_problem_unless_allowed(tmp_path: Path) -> None:
    assert verify_chain(tmp_path / "none.jsonl")[2] == ["cannot read: No such file or directory"]
    assert verify_chain(tmp_path / "none.jsonl", missing_ok=True) == (auditchain.GENESIS, 0, [])
