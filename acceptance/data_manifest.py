"""Checks of the manifest criterion of contracts/data.yaml (AC-DATA-001).

Every dataset matches its manifest entry (source, license, sha256, size; nothing
unlisted), and a copy of a dataset whose bytes differ from the manifest is refused by
its loader. Like every data check, it runs the real data layer (``kernels.data``) on
the real shipped datasets; what it corrupts is a copy under ``ctx.scratch``.
"""

from __future__ import annotations

import fnmatch
import hashlib
from pathlib import Path
from typing import Any

from acceptance.data_copies import SHIPPED, copy_datasets, one_line


# ======================================================== AC-DATA-001 manifest
def manifest_matches_files(ctx: Any) -> dict[str, Any]:
    """Every manifest entry names its source, license and sha256, and matches its file;
    every data file under the manifest's directory is listed."""
    from kernels.data.manifest import DatasetError, load_manifest, verify_all

    mparam = ctx.params.get("manifest")
    mpath = (ctx.root / mparam) if mparam else None
    ignore = list(ctx.params.get("ignore", []))
    try:
        m = load_manifest(mpath)
    except DatasetError as e:
        return {"manifest_errors": 1, "error": str(e)[:300], "datasets": 0}
    status = verify_all(m)
    mismatched = {k: v for k, v in status.items() if v != "ok"}
    missing_fields: list[str] = []
    license_problems: list[str] = []
    size_mismatch: list[str] = []
    referenced: set[Path] = set()
    rows = []
    for ent in m.datasets.values():
        f = (m.root / ent.path).resolve()
        referenced.add(f)
        for key in ("source", "license", "sha256"):
            if not str(getattr(ent, key)).strip():
                missing_fields.append(f"{ent.name}.{key}")
        if f.is_file():
            # an independent digest (hashlib here, not the loader's helper)
            actual = hashlib.sha256(f.read_bytes()).hexdigest()
            if actual != ent.sha256:
                mismatched.setdefault(ent.name, f"sha256 {actual} != manifest {ent.sha256}")
            if f.stat().st_size != ent.size_bytes:
                size_mismatch.append(ent.name)
        if not ent.license_file:
            license_problems.append(f"{ent.name}: no license_file")
        else:
            lf = (m.root / ent.license_file).resolve()
            referenced.add(lf)
            want = ent.extra.get("license_sha256")
            if not lf.is_file():
                license_problems.append(f"{ent.name}: {ent.license_file} missing")
            elif want and hashlib.sha256(lf.read_bytes()).hexdigest() != want:
                license_problems.append(
                    f"{ent.name}: {ent.license_file} differs from license_sha256"
                )
        if ent.extra.get("files_list"):
            referenced.add((m.root / str(ent.extra["files_list"])).resolve())
        rows.append(
            {"name": ent.name, "license": ent.license, "sha256": ent.sha256, "ok": status[ent.name]}
        )
    unlisted = []
    for f in sorted(p for p in m.root.rglob("*") if p.is_file()):
        rel = f.relative_to(m.root).as_posix()
        if f.resolve() in referenced or any(fnmatch.fnmatch(rel, pat) for pat in ignore):
            continue
        unlisted.append(rel)
    ctx.attach_json("manifest-check.json", {"datasets": rows, "unlisted": unlisted})
    return {
        "manifest_errors": 0,
        "datasets": len(m.datasets),
        "mismatched": len(mismatched),
        "mismatched_names": sorted(mismatched),
        "missing_fields": len(missing_fields),
        "license_problems": len(license_problems),
        "size_mismatch": len(size_mismatch),
        "unlisted_files": len(unlisted),
        "unlisted": unlisted[:10],
    }


def _tamper(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) - max(1, len(data) // 10)]))
    elif how == "append":
        path.write_bytes(bytes(data) + b"\n")
    else:
        raise ValueError(f"unknown tamper {how!r}")


def _load_through_loader(name: str, mpath: Path) -> None:
    """Load dataset ``name`` the way the core does, from the (copied) manifest."""
    from kernels.data.manifest import dataset_path

    if name == "digits":
        from kernels.data.digits import load_digits

        load_digits(manifest=mpath)
    elif name == "pystdlib":
        from kernels.data.pipeline import ingest_corpus

        ingest_corpus(manifest=mpath)
    elif name == "tokenizer-1024":
        from kernels.data.tokenizer import ByteBPE

        ByteBPE.load(dataset_path(name, manifest=mpath))
    else:
        dataset_path(name, manifest=mpath).read_bytes()


def tampered_dataset_refused(ctx: Any) -> dict[str, Any]:
    """Copies of the datasets whose bytes differ from the manifest's sha256 are refused by
    the loaders with a one-line DatasetDigestError naming the file and both digests.
    Under a fault falsifier the injector corrupts each copy instead of the check."""
    from kernels.data.manifest import DatasetDigestError, load_manifest

    names = list(ctx.params.get("datasets", SHIPPED))
    tampers = ["fault"] if ctx.fault is not None else list(ctx.params.get("tampers", ["flip"]))
    mpath = copy_datasets(ctx)
    m = load_manifest(mpath)
    originals = {n: (mpath.parent / m.datasets[n].path).read_bytes() for n in names}
    clean_errors = []
    for n in names:  # control: the untouched copies load
        try:
            _load_through_loader(n, mpath)
        except Exception as e:  # noqa: BLE001 - observed, not raised
            clean_errors.append(f"{n}: {type(e).__name__}: {e}")
    cases, refused, wrong_error, accepted, unclear = 0, 0, [], [], []
    examples: list[str] = []
    for n in names:
        f = mpath.parent / m.datasets[n].path
        for how in tampers:
            f.write_bytes(originals[n])
            if how == "fault":
                ctx.fault.inject(path=f)
            else:
                _tamper(f, how)
            if hashlib.sha256(f.read_bytes()).hexdigest() == m.datasets[n].sha256:
                raise RuntimeError(f"tampering {f} ({how}) left its digest unchanged")
            cases += 1
            try:
                _load_through_loader(n, mpath)
            except DatasetDigestError as e:
                refused += 1
                msg = str(e)
                clear = (
                    one_line(msg)
                    and str(f.resolve()) in msg
                    and e.expected in msg
                    and e.actual in msg
                    and e.actual == hashlib.sha256(f.read_bytes()).hexdigest()
                )
                if not clear:
                    unclear.append(f"{n}/{how}")
                if len(examples) < 3:
                    examples.append(msg)
            except Exception as e:  # noqa: BLE001 - refused, but not by the digest check
                wrong_error.append(f"{n}/{how}: {type(e).__name__}: {str(e)[:120]}")
            else:
                accepted.append(f"{n}/{how}")
        f.write_bytes(originals[n])
    ctx.attach_json(
        "tamper-cases.json",
        {"examples": examples, "wrong_error": wrong_error, "accepted": accepted},
    )
    return {
        "clean_loaded": not clean_errors,
        "clean_errors": clean_errors[:3],
        "cases": cases,
        "refused": refused,
        "not_refused": cases - refused,
        "accepted": len(accepted),
        "wrong_error": len(wrong_error),
        "unclear_messages": len(unclear),
        "example": examples[0] if examples else "",
    }
