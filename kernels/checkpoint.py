"""Checkpoints: safetensors weights with metadata stamps, optimizer and trainer state.

Layout of a run directory::

    run/ckpt-000050/model.safetensors      weights + stamps (architecture, config, ...)
    run/ckpt-000050/optimizer.safetensors  AdamW m/v (+ step in its metadata)
    run/ckpt-000050/trainer.json           step, RNG state, data cursor, schedule
    run/ckpt-000050/digests.json           sha256 of each file above
    run/latest                             name of the newest complete checkpoint

Every file is written atomically (temp file in the same directory, fsync,
``os.replace``); a checkpoint directory is assembled under a temporary name and
renamed into place, and ``latest`` is written last, so a kill at any moment
leaves the previous checkpoint usable.

Loading refuses, with one line naming the file, a checkpoint whose stamped
architecture contradicts the family its tensor names show, whose tensors do not
cover the model, or whose bytes are truncated or do not match their digest.

The byte format is in ``kernels.checkpoint_format``, the stamps and identity checks
in ``kernels.checkpoint_stamps``; both are re-exported here. The writers here look
``atomic_write_bytes`` up in this module, so patching it here reaches every write.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels.checkpoint_format import (
    SAFETENSORS_DTYPES,
    CheckpointError,
    encode_safetensors,
    read_safetensors,
    read_safetensors_header,
    sha256_bytes,
    sha256_file,
)
from kernels.checkpoint_stamps import (
    HF_IDENTITY,
    NOT_APPLICABLE,
    SCORED_STAMPS,
    check_architecture_stamp,
    check_coverage,
    code_version,
    completeness,
    detect_tensor_family,
    family_of_stamps,
    identity_stamps,
    is_mlp_tensor,
    model_shapes,
    shapes_from_stamps,
    source_digest,
    stamp_present,
    tensor_family_or_reason,
)

__all__ = [
    "DIGESTS_FILE", "FORMAT_VERSION", "LATEST_FILE", "MODEL_FILE", "OPTIMIZER_FILE",
    "TRAINER_FILE", "Checkpoint", "atomic_write_bytes", "atomic_write_text",
    "checkpoint_name", "fsync_dir", "inspect_checkpoint", "latest_checkpoint",
    "load_checkpoint", "patch_stamps", "read_stamps", "read_trainer_state", "record_digest",
    "resolve_model_file", "save_checkpoint", "save_optimizer_state", "save_trainer_state",
    "save_weights", "verify_digests", "write_digests", "write_latest",
    # kernels.checkpoint_format
    "SAFETENSORS_DTYPES", "CheckpointError", "encode_safetensors", "read_safetensors",
    "read_safetensors_header", "sha256_bytes", "sha256_file",
    # kernels.checkpoint_stamps
    "HF_IDENTITY", "NOT_APPLICABLE", "SCORED_STAMPS", "check_architecture_stamp",
    "check_coverage", "code_version", "completeness", "detect_tensor_family",
    "family_of_stamps", "identity_stamps", "is_mlp_tensor", "model_shapes",
    "shapes_from_stamps", "source_digest", "stamp_present", "tensor_family_or_reason",
]  # fmt: skip

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_FILE = "trainer.json"
DIGESTS_FILE = "digests.json"
LATEST_FILE = "latest"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns."""

    path: Path
    params: dict[str, np.ndarray]
    stamps: dict[str, str]
    family: str
    optimizer: dict[str, np.ndarray] | None = None
    optimizer_meta: dict[str, str] = field(default_factory=dict)
    trainer: dict[str, Any] | None = None

    @property
    def step(self) -> int:
        return int(self.stamps.get("step", "0"))

    @property
    def val_loss(self) -> float | None:
        text = self.stamps.get("val_loss", "")
        return float(text) if text not in ("", "null", "None") else None

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.stamps.get("config", "{}"))

    @property
    def tokenizer_json(self) -> str | None:
        return self.stamps.get("tokenizer") or None


# ---------------------------------------------------------------- atomic I/O


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir, fsync and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_stamps(path: Path | str) -> dict[str, str]:
    """The metadata stamps of a weights file, without loading tensors."""
    path = resolve_model_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", head)
            body = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(body) < n:
        raise CheckpointError(f"{path}: truncated safetensors file (header cut short)")
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted safetensors header ({exc})") from None
    return {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}


# ---------------------------------------------------------------- save


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:06d}"


def save_weights(
    path: Path | str, params: Mapping[str, np.ndarray], stamps: Mapping[str, str]
) -> str:
    """Write a stamped weights file atomically; return its sha256."""
    meta = {"format": "np", "format_version": FORMAT_VERSION, **stamps}
    data = encode_safetensors(params, meta)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def save_optimizer_state(
    path: Path | str, state: Mapping[str, np.ndarray], meta: Mapping[str, str]
) -> str:
    """Write the optimizer's arrays (m.*, v.*) atomically; return the sha256."""
    data = encode_safetensors(state, {"format": "np", **meta})
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def save_trainer_state(path: Path | str, state: Mapping[str, Any]) -> str:
    """Write trainer state (step, RNG, data cursor, schedule) as JSON atomically."""
    data = json.dumps(state, sort_keys=True, indent=1).encode("utf-8")
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def write_digests(ckpt_dir: Path, digests: Mapping[str, str]) -> None:
    atomic_write_text(ckpt_dir / DIGESTS_FILE, json.dumps(dict(sorted(digests.items())), indent=1))


def write_latest(run_dir: Path | str, name: str) -> None:
    """Point ``run/latest`` at a complete checkpoint; written last."""
    atomic_write_text(Path(run_dir) / LATEST_FILE, name + "\n")


def save_checkpoint(
    run_dir: Path | str,
    step: int,
    params: Mapping[str, np.ndarray],
    stamps: Mapping[str, str],
    optimizer: Mapping[str, np.ndarray] | None = None,
    optimizer_meta: Mapping[str, str] | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``run/ckpt-<step>/`` completely, then move ``latest`` to it; return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    staging = run_dir / f".{final.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    digests = {MODEL_FILE: save_weights(staging / MODEL_FILE, params, stamps)}
    if optimizer is not None:
        digests[OPTIMIZER_FILE] = save_optimizer_state(
            staging / OPTIMIZER_FILE, optimizer, optimizer_meta or {}
        )
    if trainer is not None:
        digests[TRAINER_FILE] = save_trainer_state(staging / TRAINER_FILE, trainer)
    write_digests(staging, digests)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    fsync_dir(run_dir)
    write_latest(run_dir, final.name)
    return final


# ---------------------------------------------------------------- load


def resolve_model_file(path: Path | str) -> Path:
    """Accept a run dir (follows ``latest``), a checkpoint dir, or a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        if (path / LATEST_FILE).is_file():
            path = latest_checkpoint(path) or path
        return path / MODEL_FILE
    return path


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The checkpoint directory ``run/latest`` names, or None when there is none."""
    pointer = Path(run_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    target = Path(run_dir) / name
    if not name or not (target / MODEL_FILE).is_file():
        raise CheckpointError(f"{pointer}: points at {name!r}, which is not a checkpoint")
    return target


def verify_digests(ckpt_dir: Path) -> None:
    """Compare each file with the sha256 recorded beside it (when digests.json exists)."""
    record = ckpt_dir / DIGESTS_FILE
    if not record.is_file():
        return
    try:
        digests = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{record}: unreadable digest record ({exc})") from None
    for name, expected in digests.items():
        path = ckpt_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {record.name})")
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(
                f"{path}: sha256 {actual[:16]}... does not match the recorded {expected[:16]}... "
                "(corrupted or modified outside `core stamp`)"
            )


def read_trainer_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted trainer state ({exc})") from None


def load_checkpoint(
    path: Path | str,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    with_state: bool = False,
) -> Checkpoint:
    """Load and check a checkpoint (run dir, checkpoint dir or weights file).

    Refuses (CheckpointError, one line) corrupted files, digests that do not
    match, an architecture stamp contradicting the tensor names, and tensors not
    covering ``expected_shapes`` (or the model the stamped config builds).
    """
    model_file = resolve_model_file(path)
    ckpt_dir = model_file.parent
    if not model_file.is_file():
        raise CheckpointError(f"{model_file}: no such checkpoint file")
    if model_file.name == MODEL_FILE:
        verify_digests(ckpt_dir)
    params, stamps = read_safetensors(model_file)
    family = check_architecture_stamp(stamps, params.keys(), str(model_file))
    if expected_shapes is None:
        expected_shapes = shapes_from_stamps(stamps, family, model_file)
    if expected_shapes is not None:
        check_coverage(params, expected_shapes, str(model_file))
    ckpt = Checkpoint(path=ckpt_dir, params=params, stamps=stamps, family=family)
    if with_state:
        opt_file = ckpt_dir / OPTIMIZER_FILE
        trainer_file = ckpt_dir / TRAINER_FILE
        if opt_file.is_file():
            ckpt.optimizer, ckpt.optimizer_meta = read_safetensors(opt_file)
        if trainer_file.is_file():
            ckpt.trainer = read_trainer_state(trainer_file)
    return ckpt


# ---------------------------------------------------------------- inspect / stamp


def patch_stamps(
    path: Path | str, updates: Mapping[str, str | None], out: Path | str | None = None
) -> tuple[Path, str]:
    """Set (or, with None, delete) stamps of a weights file; return (file, new sha256).

    Writes in place atomically (or to ``out``) and records the new digest in the
    checkpoint's digests.json, and the previous digest in a ``stamp_history`` stamp.
    """
    src = resolve_model_file(path)
    tensors, stamps = read_safetensors(src)
    old_digest = sha256_file(src)
    for key, value in updates.items():
        if value is None:
            stamps.pop(key, None)
        else:
            stamps[key] = str(value)
    history = json.loads(stamps.get("stamp_history", "[]"))
    history.append({"previous_sha256": old_digest, "changed": sorted(updates)})
    stamps["stamp_history"] = json.dumps(history)
    target = Path(out) if out is not None else src
    target.parent.mkdir(parents=True, exist_ok=True)
    data = encode_safetensors(tensors, stamps)
    atomic_write_bytes(target, data)
    digest = sha256_bytes(data)
    record_digest(target, digest)
    return target, digest


def record_digest(model_file: Path, digest: str) -> None:
    """Update digests.json beside a weights file (only where one exists or is a ckpt dir)."""
    record = model_file.parent / DIGESTS_FILE
    if not record.is_file():
        return
    digests = json.loads(record.read_text())
    digests[model_file.name] = digest
    write_digests(model_file.parent, digests)


def inspect_checkpoint(path: Path | str) -> dict[str, Any]:
    """Stamps, detected tensor family, identity check and completeness of a weights file."""
    model_file = resolve_model_file(path)
    tensors, stamps = read_safetensors(model_file)
    tensor_family = detect_tensor_family(tensors.keys())
    score, breakdown = completeness(stamps, tensor_family)
    try:
        check_architecture_stamp(stamps, tensors.keys(), str(model_file))
        identity = "consistent"
    except CheckpointError as exc:
        identity = str(exc)
    return {
        "file": str(model_file),
        "sha256": sha256_file(model_file),
        "n_tensors": len(tensors),
        "n_params": int(sum(v.size for v in tensors.values())),
        "tensor_family": tensor_family,
        "identity": identity,
        "stamps": stamps,
        "completeness": score,
        "breakdown": breakdown,
    }
