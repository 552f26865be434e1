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
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_FILE = "trainer.json"
DIGESTS_FILE = "digests.json"
LATEST_FILE = "latest"
FORMAT_VERSION = "1"

# family slug -> (hf model_type, hf architecture class)
HF_IDENTITY: dict[str, tuple[str, str]] = {
    "gpt2": ("gpt2", "GPT2LMHeadModel"),
    "llama": ("llama", "LlamaForCausalLM"),
    "mlp": ("mlp", "MLPClassifier"),
}

# Stamps of a weights file, the weight each carries in the completeness score
# and what the score calls it.
SCORED_STAMPS: dict[str, tuple[int, str]] = {
    "architecture": (15, "architecture family slug"),
    "hf_model_type": (5, "hf model_type"),
    "hf_architecture": (5, "hf architecture class"),
    "config": (15, "full model config"),
    "tokenizer": (15, "tokenizer embedded"),
    "tokenizer_sha256": (5, "tokenizer digest"),
    "datasets": (10, "dataset digests and licenses"),
    "code_version": (10, "code version"),
    "train_config": (5, "hyperparameters and seed"),
    "step": (5, "training step"),
    "val_loss": (5, "validation loss"),
    "purpose": (5, "purpose (ship|ablation)"),
}


# Scored stamps that do not apply to a family (a classifier has no tokenizer).
NOT_APPLICABLE: dict[str, tuple[str, ...]] = {"mlp": ("tokenizer", "tokenizer_sha256")}


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted or read; the message names the file."""


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- stamps


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the tree holding ``kernels/`` (``+dirty`` if modified), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "kernels"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = "+dirty" if status.stdout.strip() else ""
        return commit.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over the ``kernels/`` Python sources, a code identity that needs no git."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def identity_stamps(family: str) -> dict[str, str]:
    """The three architecture stamps of a family: slug, hf model_type, hf class."""
    model_type, hf_class = HF_IDENTITY[family]
    return {"architecture": family, "hf_model_type": model_type, "hf_architecture": hf_class}


def family_of_stamps(stamps: Mapping[str, str]) -> str | None:
    """The family a checkpoint's stamps claim (slug first, then hf class, then model_type)."""
    slug = stamps.get("architecture")
    if slug:
        return slug
    for family, (model_type, hf_class) in HF_IDENTITY.items():
        if stamps.get("hf_architecture") == hf_class or stamps.get("hf_model_type") == model_type:
            return family
    return None


def detect_tensor_family(names: Iterable[str]) -> str | None:
    """The family the tensor names show (``registry.detect_family``), ``mlp``, or None."""
    try:
        return tensor_family_or_reason(names)[0]
    except CheckpointError:
        return None


def tensor_family_or_reason(names: Iterable[str]) -> tuple[str, str]:
    """(family, "") from tensor names; raise CheckpointError with the registry's reason."""
    from kernels.models.registry import detect_family

    names = list(names)
    try:
        return detect_family(names), ""
    except ValueError as exc:
        if names and all(is_mlp_tensor(n) for n in names):
            return "mlp", ""
        raise CheckpointError(str(exc)) from None


def is_mlp_tensor(name: str) -> bool:
    return name.startswith(("layers.", "mlp.", "fc", "linear"))


def check_architecture_stamp(stamps: Mapping[str, str], names: Iterable[str], where: str) -> str:
    """Return the family; raise if the stamps contradict the tensor names or each other."""
    claims = {
        key: stamps[key]
        for key in ("architecture", "hf_model_type", "hf_architecture")
        if stamps.get(key)
    }
    try:
        detected, _ = tensor_family_or_reason(names)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc} (stamped {claims or 'nothing'})") from None
    expected = identity_stamps(detected)
    for key, value in claims.items():
        if value != expected[key]:
            also = f" ({key} {expected[key]!r})" if key != "architecture" else ""
            raise CheckpointError(
                f"{where}: stamped {key}={value!r} contradicts the tensor names, which show "
                f"architecture {detected!r}{also}; fix the stamp with `core stamp "
                f"--{key.replace('_', '-')} {expected[key]}` or use a matching checkpoint"
            )
    return detected


def check_coverage(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], where: str
) -> None:
    """Raise unless ``tensors`` has exactly the expected names with the expected shapes."""
    missing = sorted(set(expected) - set(tensors))
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(
            f"{where}: tensors do not cover the model: missing {', '.join(missing[:3])}{more}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(
                f"{where}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                f"the model expects {tuple(shape)}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(
            f"{where}: unexpected tensors not in the model: {', '.join(extra[:3])}"
        )


# ---------------------------------------------------------------- safetensors files


SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
    "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def encode_safetensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """Serialize to the safetensors format with a canonical header (sorted keys, names).

    The ``safetensors`` package writes metadata in hash-map order, so its bytes
    vary between processes; this writer gives the same bytes for the same input.
    """
    header: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in sorted(metadata.items())}}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")  # ascontiguousarray would make 0-d 1-d
        dtype = SAFETENSORS_DTYPES.get(arr.dtype.name)
        if dtype is None:
            raise CheckpointError(f"tensor {name}: dtype {arr.dtype} cannot be saved")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def read_safetensors(path: Path | str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read tensors and metadata; any malformed or truncated file -> CheckpointError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    metadata = read_safetensors_header(data, path)
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupted safetensors file ({exc})") from None
    return tensors, metadata


def read_safetensors_header(data: bytes, path: Path) -> dict[str, str]:
    """Parse and check the JSON header of a safetensors byte string; return its metadata."""
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError(f"{path}: truncated safetensors file (header says {n} bytes)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not an object)")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != len(data):
        raise CheckpointError(
            f"{path}: truncated or padded safetensors file ({len(data)} bytes, "
            f"header describes {8 + n + end})"
        )
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


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


def shapes_from_stamps(
    stamps: Mapping[str, str], family: str, where: Path
) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes of the model the stamped config describes (None if unstamped)."""
    text = stamps.get("config")
    if not text:
        return None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where}: stamped config is not JSON ({exc})") from None
    return model_shapes(family, cfg, where)


def model_shapes(family: str, cfg: Mapping[str, Any], where: Path) -> dict[str, tuple[int, ...]]:
    """Build the model from a config dict and return its parameter shapes."""
    try:
        if family == "mlp":
            from kernels.config import MLPConfig
            from kernels.models.mlp import MLPClassifier

            fields = dict(cfg)
            fields["hidden"] = tuple(fields.get("hidden", ()))
            return dict(MLPClassifier(MLPConfig(**fields)).param_shapes())
        from kernels.config import ModelConfig
        from kernels.models.registry import build_model

        fields = {k: v for k, v in cfg.items() if k != "family"}
        return dict(build_model(ModelConfig(family=family, **fields)).param_shapes())
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{where}: stamped config does not build a {family} model ({exc})"
        ) from None


# ---------------------------------------------------------------- inspect / stamp


def completeness(
    stamps: Mapping[str, str], tensor_family: str | None = None
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Metadata completeness score 0-100 and a breakdown per scored stamp.

    With ``tensor_family`` (what the tensor names show), if any identity stamp
    contradicts it, none of the three identity stamps earns points.
    """
    expected = identity_stamps(tensor_family) if tensor_family in HF_IDENTITY else {}
    wrong = {k for k, v in expected.items() if stamps.get(k) and stamps[k] != v}
    breakdown: dict[str, dict[str, Any]] = {}
    total = 0
    for key, (weight, what) in SCORED_STAMPS.items():
        present = stamp_present(stamps, key)
        item: dict[str, Any] = {"what": what, "max": weight, "present": present}
        if not present and key in NOT_APPLICABLE.get(family_of_stamps(stamps) or "", ()):
            present, item["not_applicable"] = True, True
        if not present and key == "code_version" and stamp_present(stamps, "source_sha256"):
            present, item["from"] = True, "source_sha256"
        if key in wrong:
            item["contradicts_tensors"] = expected[key]
        if wrong and key in expected:  # identity is all or nothing
            present = False
        got = weight if present else 0
        total += got
        item["points"] = got
        breakdown[key] = item
    return total, breakdown


def stamp_present(stamps: Mapping[str, str], key: str) -> bool:
    """A stamp counts if it is set, not a placeholder, and (for JSON stamps) parses."""
    value = stamps.get(key, "")
    if value in ("", "unknown", "null", "None", "{}", "[]"):
        return False
    if key in ("config", "tokenizer", "datasets", "train_config"):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return False
    if key == "tokenizer_sha256" and stamps.get("tokenizer"):
        return sha256_bytes(stamps["tokenizer"].encode("utf-8")) == value
    return True


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
