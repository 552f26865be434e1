"""File modes: what the tool writes follows the umask or keeps the file's own
mode; only private keys are 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.fsutil import atomic_write_text

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


def test_reports_and_the_bundle_follow_the_umask(project, umask, tmp_path):
    umask(0o022)
    project.contract("c", simple_contract())
    out = tmp_path / "out"
    out.mkdir()
    r = invoke(
        "run", "-j", "1",
        "--output", f"json={out / 'r.json'}", "--output", f"junit={out / 'r.xml'}",
        "--output", f"html={out / 'r.html'}", "--output", f"sarif={out / 'r.sarif'}",
        "--output", f"markdown={out / 'r.md'}",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for f in out.iterdir():
        assert mode(f) == 0o644, f
    (run_dir,) = [p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit()]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files and all(mode(p) == 0o644 for p in files), [
        (p.name, oct(mode(p))) for p in files if mode(p) != 0o644
    ]
    # a report rewritten over an existing file keeps that file's mode
    os.chmod(out / "r.html", 0o640)
    assert invoke("report", str(run_dir), "--html", str(out / "r.html")).exit_code == 0
    assert mode(out / "r.html") == 0o640
    umask(0o077)  # a stricter umask is followed too
    r = invoke("report", str(run_dir), "--markdown", str(out / "new.md"))
    assert r.exit_code == 0 and mode(out / "new.md") == 0o600


def test_private_keys_stay_0600_whatever_the_umask(tmp_path, umask, monkeypatch):
    umask(0o022)
    monkeypatch.chdir(tmp_path)
    assert invoke("keygen", "-o", "k.key").exit_code == 0
    assert mode(tmp_path / "k.key") == 0o600
    assert mode(tmp_path / "k.key.pub") == 0o644


def test_atomic_write_takes_an_explicit_mode_for_a_secret(tmp_path, umask):
    umask(0o022)
    atomic_write_text(tmp_path / "secret", "s", mode=0o600)
    atomic_write_text(tmp_path / "plain", "p")
    assert mode(tmp_path / "secret") == 0o600 and mode(tmp_path / "plain") == 0o644


def test_atomic_write_keeps_a_rewritten_files_mode_and_makes_its_folder(tmp_path, umask):
    umask(0o077)
    kept = tmp_path / "kept"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    atomic_write_text(kept, "new")
    assert kept.read_text() == "new" and mode(kept) == 0o640
    deep = tmp_path / "a" / "b" / "new"
    atomic_write_text(deep, "x")  # the folder did not exist
    assert deep.read_text() == "x" and mode(deep) == 0o600
    umask(0o002)
    atomic_write_text(tmp_path / "group", "g", mode=0o640)  # an explicit mode, not the umask
    assert mode(tmp_path / "group") == 0o640


def test_atomic_write_steps_over_a_taken_temp_name_and_leaves_none_behind(tmp_path, monkeypatch):
    import harness.fsutil as fsutil

    target = tmp_path / "f.json"
    names = iter(["aa", "aa", "bb"])  # someone made .f.json.aa.tmp first
    monkeypatch.setattr(fsutil.secrets, "token_hex", lambda n: next(names))
    taken = tmp_path / ".f.json.aa.tmp"
    taken.write_text("theirs")
    fsutil.atomic_write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}" and taken.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name, "f.json"]

    class Boom(Exception):
        pass

    def broken_replace(src, dst):
        raise Boom

    monkeypatch.setattr(fsutil.secrets, "token_hex", lambda n: "cc")
    monkeypatch.setattr(fsutil.os, "replace", broken_replace)
    with pytest.raises(Boom):
        fsutil.atomic_write_bytes(target, b"lost")
    assert target.read_bytes() == b"{}"  # the old content stands, the temp is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name, "f.json"]


def test_a_secrets_temp_file_is_0600_from_its_creation(tmp_path, umask, monkeypatch):
    """Not made readable and then narrowed: the temp is created 0600, before the chmod."""
    import harness.fsutil as fsutil

    umask(0o000)
    created = []
    real_open = fsutil.os.open

    def recording_open(path, flags, mode=0o777, *a, **k):
        created.append((os.path.basename(path), mode))
        return real_open(path, flags, mode, *a, **k)

    monkeypatch.setattr(fsutil.os, "open", recording_open)
    fsutil.atomic_write_bytes(tmp_path / "k.key", b"secret", mode=0o600)
    fsutil.atomic_write_bytes(tmp_path / "plain", b"p")
    assert [m for n, m in created if n.startswith(".k.key.")] == [0o600]
    assert [m for n, m in created if n.startswith(".plain.")] == [0o666]
    assert mode(tmp_path / "k.key") == 0o600 and mode(tmp_path / "plain") == 0o666
