"""Snapshots for backup and restore drills: a tar archive plus a sha256 manifest.

``snapshot`` packs folders (an evidence bundle, a checkpoint) into one archive
whose first member lists the sha256 and size of every file; ``restore``
unpacks it into a new directory and refuses, naming the file, anything whose
digest or size differs, or an archive member that would escape the target.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from kernels import lifecycle
from kernels.checkpoint import sha256_file
from kernels.errors import KernelsError

MANIFEST = "SNAPSHOT-MANIFEST.json"


class RestoreError(KernelsError):
    """A snapshot that cannot be restored (malformed, or altered behind its manifest)."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(sources: dict[str, Path], archive: Path) -> dict[str, dict[str, object]]:
    """Pack each ``name -> folder`` under ``name/`` in ``archive``; returns the manifest."""
    files: dict[str, bytes] = {}
    for name, folder in sorted(sources.items()):
        folder = Path(folder)
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                files[f"{name}/{p.relative_to(folder).as_posix()}"] = p.read_bytes()
    manifest = {path: {"sha256": _digest(data), "size": len(data)} for path, data in files.items()}
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path, data in [
            (MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode()),
            *files.items(),
        ]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(archive)
    lifecycle.record(
        "backup.snapshot", archive=str(archive), sha256=sha256_file(archive),
        sources={name: str(folder) for name, folder in sorted(sources.items())}, files=manifest,
    )  # fmt: skip
    return manifest


def restore(archive: Path, dest: Path) -> dict[str, Path]:
    """Unpack ``archive`` into ``dest`` (which must not exist), verifying every file.
    A restore and a refused restore are both lifecycle events."""
    try:
        restored = _restore(archive, dest)
    except RestoreError as exc:
        lifecycle.record("backup.restore_refused", archive=str(archive), reason=str(exc))
        raise
    lifecycle.record(
        "backup.restore", archive=str(archive), sha256=sha256_file(archive), dest=str(dest),
        files=lifecycle.folder_digests(dest),
    )  # fmt: skip
    return restored


def _restore(archive: Path, dest: Path) -> dict[str, Path]:
    if dest.exists():
        raise RestoreError(f"{dest} exists; restore into a new directory")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if MANIFEST not in members:
                raise RestoreError(f"{archive}: no {MANIFEST}; not a snapshot")
            manifest = json.loads(_read(tar, members[MANIFEST]))
            extra = sorted(set(members) - set(manifest) - {MANIFEST})
            if extra:
                raise RestoreError(f"{archive}: files not in the manifest: {', '.join(extra)}")
            payload = {}
            for path, entry in manifest.items():
                if path not in members:
                    raise RestoreError(f"{archive}: {path} is missing from the archive")
                if path.startswith("/") or ".." in Path(path).parts:
                    raise RestoreError(f"{archive}: unsafe path {path}")
                data = _read(tar, members[path])
                if _digest(data) != entry["sha256"] or len(data) != entry["size"]:
                    raise RestoreError(f"{archive}: {path} does not match its sha256")
                payload[path] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, RestoreError):
            raise
        raise RestoreError(f"{archive}: unreadable snapshot ({type(exc).__name__}: {exc})") from exc
    for path, data in payload.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return {name: dest / name for name in {p.split("/", 1)[0] for p in payload}}


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise RestoreError(f"{member.name} is not a regular file")
    return fh.read()
