"""Every file of a sealed bundle is guarded, by a list written apart from the sealer.

The evidence writer and ``harness verify`` share code (the manifest builder), so
a bundle can look sealed to both and still leave files unguarded. This check
enumerates the bundle from the filesystem, not from any manifest, and attacks
each file: one byte changed, the file deleted; then it adds files at names a
manifest builder is tempted to skip (dotfiles, nested seal names, a stray
``checks/`` folder). ``verify`` must name the file every time (issue 13,
class 2: an independent list).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from acceptance.release_gates import _keys, probe_run

#: files added to a sealed bundle: each is where a lazy manifest would not look
ADDED = (
    ".hidden",
    "zz-extra.txt",
    "checks/INV-PROBE-001/stdout.txt",
    "contracts/.extra.yaml",
    "criteria/AC-PROBE-001/.hidden",
    "criteria/AC-PROBE-001/notes.txt",
    "criteria/AC-PROBE-001/logs/statement.json",
    "criteria/AC-PROBE-001/artifacts/INV-PROBE-001/manifest.json",
    "criteria/AC-PROBE-001/artifacts/INV-PROBE-001/statement.dsse.json",
)


def _named(problems: list[str], path: Path) -> bool:
    return any(str(path) in p for p in problems)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    if not data:
        path.write_bytes(b"x")
        return
    i = len(data) // 2
    data[i] = data[i] ^ 0x01
    path.write_bytes(bytes(data))


def bundle_tampering_named(ctx: Any) -> dict[str, Any]:
    """observations: files (found on disk), flips_unnamed, deletions_unnamed,
    additions, additions_unnamed, clean_problems (of the untouched bundle)."""
    from harness.signing import load_public_key, load_signer
    from harness.verify import verify_run

    keys = _keys(ctx.scratch, "release")
    run_dir = probe_run(ctx.scratch, "sealed", signer=load_signer(keys["release"][0]))
    pub = [load_public_key(keys["release"][1])]
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file())
    work = ctx.scratch / "attacked"
    unnamed: dict[str, list[str]] = {"flip": [], "delete": [], "add": []}

    def attacked(rel: Path | str, how: str) -> None:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(run_dir, work)
        target = work / rel
        if how == "flip":
            _flip(target)
        elif how == "delete":
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("added after sealing\n")
        if not _named(verify_run(work, pub), target):
            unnamed[how].append(str(rel))

    for rel in files:
        attacked(rel, "flip")
        attacked(rel, "delete")
    for name in ADDED:
        attacked(name, "add")
    for how, missed in unnamed.items():
        if missed:
            print(f"{how}: verify did not name {missed}")
    return {
        "files": len(files),
        "flips_unnamed": len(unnamed["flip"]),
        "deletions_unnamed": len(unnamed["delete"]),
        "additions": len(ADDED),
        "additions_unnamed": len(unnamed["add"]),
        "clean_problems": len(verify_run(run_dir, pub)),
    }
