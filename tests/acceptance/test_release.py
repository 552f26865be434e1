"""The core's release helpers: the canary gate and the snapshot/restore tool."""

from __future__ import annotations

import io
import tarfile

import pytest

from kernels.backup import MANIFEST, RestoreError, restore, snapshot
from kernels.release import candidate_regresses


@pytest.mark.parametrize(
    "current,candidate,margin,regresses",
    [
        (1.0, 1.0, 0.0, False),
        (1.0, 1.05, 0.1, False),
        (1.0, 1.2, 0.1, True),
        (1.0, 0.5, 0.0, False),
        (1.0, float("nan"), 0.1, True),
    ],
)
def test_candidate_regresses(current, candidate, margin, regresses):
    assert candidate_regresses(current, candidate, margin) is regresses


def _folder(tmp_path, name, files):
    d = tmp_path / name
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def test_snapshot_restore_round_trip(tmp_path):
    a = _folder(tmp_path, "a", {"x.bin": b"\x00\x01", "sub/y.txt": b"hello"})
    manifest = snapshot({"a": a}, tmp_path / "s.tar.gz")
    assert set(manifest) == {"a/x.bin", "a/sub/y.txt"}
    out = restore(tmp_path / "s.tar.gz", tmp_path / "r")
    assert (out["a"] / "sub" / "y.txt").read_bytes() == b"hello"


def test_restore_refuses_existing_destination(tmp_path):
    a = _folder(tmp_path, "a", {"x": b"1"})
    snapshot({"a": a}, tmp_path / "s.tar.gz")
    (tmp_path / "r").mkdir()
    with pytest.raises(RestoreError, match="exists"):
        restore(tmp_path / "s.tar.gz", tmp_path / "r")


def _rewrite(archive, out, change):
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            name, data = change(m.name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda n, d: (n, b"evil" if n.endswith("x") else d), "does not match its sha256"),
        (lambda n, d: ("a/../../escape" if n.endswith("x") else n, d), "files not in the manifest"),
    ],
)
def test_restore_refuses_tampered_archives(tmp_path, change, message):
    a = _folder(tmp_path, "a", {"x": b"1"})
    snapshot({"a": a}, tmp_path / "s.tar.gz")
    _rewrite(tmp_path / "s.tar.gz", tmp_path / "t.tar.gz", change)
    with pytest.raises(RestoreError, match=message):
        restore(tmp_path / "t.tar.gz", tmp_path / "r")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*"))


def test_restore_refuses_garbage(tmp_path):
    (tmp_path / "g.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(RestoreError, match="unreadable snapshot"):
        restore(tmp_path / "g.tar.gz", tmp_path / "r")


def test_manifest_member_required(tmp_path):
    with tarfile.open(tmp_path / "n.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("a/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    with pytest.raises(RestoreError, match=MANIFEST):
        restore(tmp_path / "n.tar.gz", tmp_path / "r")
