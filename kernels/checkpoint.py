"""Checkpoints: safetensors weights with metadata stamps, optimizer and trainer state.

Layout of a run directory::

    run/ckpt-000050/model.safetensors      weights + stamps (architecture, config, ...)
    run/ckpt-000050/optimizer.safetensors  AdamW m/v (+ step in its metadata)
    run/ckpt-000050/trainer.json           step, RNG state, data cursor, schedule
    run/ckpt-000050/digests.json           sha256 of each file above
    run/latest                             name of the newest complete checkpoint

or, saved with ``save_checkpoint(..., max_shard_bytes=N)``, the weights in the Hugging
Face sharded layout::

    run/ckpt-000050/model.safetensors.index.json        metadata (total_size, stamps)
                                                        and weight_map: tensor -> shard
    run/ckpt-000050/model-00001-of-00003.safetensors    the tensors of shard 1, ...

Every file is written atomically (temp file in the same directory, fsync,
``os.replace``); a checkpoint directory is assembled under a temporary name and
renamed into place, and ``latest`` is written last, so a kill at any moment
leaves the previous checkpoint usable. Shards are written only that way (there is
no public writer of shards into an existing directory: a crash between the first
new shard and the new index would leave a mix of two saves).

Loading refuses, with one line naming the file, a checkpoint whose stamped
architecture contradicts the family its tensor names show, whose tensors do not
cover the model, or whose bytes are truncated or do not match their digest. Each
weights file is read once: the bytes hashed against digests.json are the bytes parsed.
A sharded checkpoint is refused, naming the shard and the tensor, when its index maps a
tensor to a file not named ``model-NNNNN-of-MMMMM.safetensors`` (one M, every shard
1..M named), names a shard that is missing or not listed in digests.json, a shard holds
a tensor the index does not map to it (or lacks one it does), or ``total_size`` differs
from the bytes of its tensors.

``weights_digest`` is the identity of a checkpoint's weights (``init_sha256``): a single
file's sha256, or for shards one sha256 over the index's and every shard's.

The byte format is in ``kernels.checkpoint_format``, the stamps and identity checks
in ``kernels.checkpoint_stamps``; both are re-exported here. The writers here look
``atomic_write_bytes`` up in this module, so patching it here reaches every write.
"""

from __future__ import annotations

import json
import os
import re
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
    decode_safetensors,
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
    "DIGESTS_FILE", "FORMAT_VERSION", "INDEX_FILE", "LATEST_FILE", "MODEL_FILE",
    "OPTIMIZER_FILE", "SHARD_NAME", "TRAINER_FILE", "Checkpoint", "atomic_write_bytes",
    "atomic_write_text", "checkpoint_name", "fsync_dir", "inspect_checkpoint",
    "latest_checkpoint", "load_checkpoint", "load_sharded_weights", "patch_stamps",
    "plan_shards", "read_shard_index", "read_stamps", "read_trainer_state", "record_digest",
    "resolve_model_file", "save_checkpoint", "save_optimizer_state", "save_trainer_state",
    "save_weights", "shard_file_name", "shard_index", "verify_digests", "weights_digest",
    "write_digests", "write_latest",
    # kernels.checkpoint_format
    "SAFETENSORS_DTYPES", "CheckpointError", "decode_safetensors", "encode_safetensors",
    "read_safetensors", "read_safetensors_header", "sha256_bytes", "sha256_file",
    # kernels.checkpoint_stamps
    "HF_IDENTITY", "NOT_APPLICABLE", "SCORED_STAMPS", "check_architecture_stamp",
    "check_coverage", "code_version", "completeness", "detect_tensor_family",
    "family_of_stamps", "identity_stamps", "is_mlp_tensor", "model_shapes",
    "shapes_from_stamps", "source_digest", "stamp_present", "tensor_family_or_reason",
]  # fmt: skip

MODEL_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # the Hugging Face name of a shard index
SHARD_NAME = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors", re.ASCII)
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
    """The metadata stamps of a weights file (or a shard index), without loading tensors."""
    path = resolve_model_file(path)
    if path.name == INDEX_FILE:
        return read_shard_index(path)[2]
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


def shard_file_name(number: int, count: int) -> str:
    """The Hugging Face name of shard ``number`` (1-based) of ``count``."""
    return f"model-{number:05d}-of-{count:05d}.safetensors"


def plan_shards(sizes: Mapping[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Tensor names (sorted) packed greedily into shards of at most ``max_shard_bytes``
    bytes of tensor data; a tensor larger than that gets a shard of its own (as the
    Hugging Face splitter does). A shard that ends exactly at the limit is closed."""
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int):
        raise ValueError(f"max_shard_bytes must be an int (got {max_shard_bytes!r})")
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1 (got {max_shard_bytes})")
    shards: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in sorted(sizes):
        size = int(sizes[name])
        if current and used + size > max_shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        shards.append(current)
    return shards


def shard_index(
    files: list[str], shards: list[list[str]], sizes: Mapping[str, int], stamps: Mapping[str, str]
) -> dict[str, Any]:
    """The index of a sharded checkpoint: ``metadata`` (``total_size``, the bytes of all
    tensors, and the stamps) and ``weight_map`` (tensor name -> shard file)."""
    weight_map: dict[str, str] = {}
    total_size = 0
    for file, names in zip(files, shards, strict=True):
        total_size += sum(int(sizes[n]) for n in names)
        weight_map.update(dict.fromkeys(names, file))
    metadata: dict[str, Any] = {str(k): str(v) for k, v in sorted(stamps.items())}
    metadata["total_size"] = total_size
    return {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}


def _save_sharded_weights(
    staging: Path,
    params: Mapping[str, np.ndarray],
    stamps: Mapping[str, str],
    max_shard_bytes: int,
) -> dict[str, str]:
    """Write the weights into ``staging`` as ``model-0000i-of-0000N.safetensors`` shards
    of at most ``max_shard_bytes`` bytes of tensors each, then
    ``model.safetensors.index.json`` (stamps in its metadata); returns {file name: sha256}.

    Private to ``save_checkpoint``, which calls it on a fresh staging directory and renames
    that into place only when every file is written: several files cannot be replaced
    atomically in place, and a crash between the first new shard and the new index would
    leave new shards under an old index (or an old shard beside a new one). Refuses a
    directory that is not empty."""
    staging = Path(staging)
    if not staging.is_dir() or any(staging.iterdir()):
        raise CheckpointError(
            f"{staging}: not an empty directory; shards are written only into a fresh "
            "staging directory (use save_checkpoint(..., max_shard_bytes=N))"
        )
    arrays = {str(k): np.asarray(v) for k, v in params.items()}
    if not arrays:
        raise CheckpointError(f"{staging}: no tensors to save")
    sizes = {name: int(a.nbytes) for name, a in arrays.items()}
    shards = plan_shards(sizes, max_shard_bytes)
    files = [shard_file_name(i + 1, len(shards)) for i in range(len(shards))]
    meta = {"format": "np", "format_version": FORMAT_VERSION}
    digests: dict[str, str] = {}
    for file, names in zip(files, shards, strict=True):
        data = encode_safetensors({n: arrays[n] for n in names}, meta)
        atomic_write_bytes(staging / file, data)
        digests[file] = sha256_bytes(data)
    index = shard_index(files, shards, sizes, {**meta, **stamps})
    data = json.dumps(index, indent=1, sort_keys=True).encode("utf-8")
    atomic_write_bytes(staging / INDEX_FILE, data)
    digests[INDEX_FILE] = sha256_bytes(data)
    return digests


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
    max_shard_bytes: int | None = None,
) -> Path:
    """Write ``run/ckpt-<step>/`` completely, then move ``latest`` to it; return its path.
    With ``max_shard_bytes`` the weights are sharded (``_save_sharded_weights``, into the
    staging directory like every other file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    staging = run_dir / f".{final.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    if max_shard_bytes is None:
        digests = {MODEL_FILE: save_weights(staging / MODEL_FILE, params, stamps)}
    else:
        digests = _save_sharded_weights(staging, params, stamps, max_shard_bytes)
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
    """Accept a run dir (follows ``latest``), a checkpoint dir, a .safetensors file or a
    shard index; a directory resolves to its ``model.safetensors``, or to its
    ``model.safetensors.index.json`` when the weights are sharded."""
    path = Path(path)
    if path.is_dir():
        if (path / LATEST_FILE).is_file():
            path = latest_checkpoint(path) or path
        single, index = path / MODEL_FILE, path / INDEX_FILE
        if single.exists() and index.exists():
            raise CheckpointError(
                f"{path}: holds both {MODEL_FILE} and {INDEX_FILE}; which weights are meant "
                "is ambiguous (remove one)"
            )
        return index if index.is_file() else single
    return path


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The checkpoint directory ``run/latest`` names, or None when there is none."""
    pointer = Path(run_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    target = Path(run_dir) / name
    if not name or not ((target / MODEL_FILE).is_file() or (target / INDEX_FILE).is_file()):
        raise CheckpointError(f"{pointer}: points at {name!r}, which is not a checkpoint")
    return target


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def verify_digests(ckpt_dir: Path, contents: Mapping[str, bytes] | None = None) -> list[str] | None:
    """Compare each file listed in digests.json with the sha256 recorded there; return the
    names verified (sorted), or None when there is no digests.json. A file whose bytes the
    caller has already read is passed in ``contents`` and hashed from those bytes, not read
    again: what the caller then parses is exactly what was verified."""
    record = ckpt_dir / DIGESTS_FILE
    if not record.is_file():
        return None
    try:
        digests = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{record}: unreadable digest record ({exc})") from None
    if not isinstance(digests, dict):
        raise CheckpointError(f"{record}: unreadable digest record (not an object)")
    contents = contents or {}
    for name, expected in digests.items():
        path = ckpt_dir / name
        if name in contents:
            actual = sha256_bytes(contents[name])
        elif not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {record.name})")
        else:
            actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(
                f"{path}: sha256 {actual[:16]}... does not match the recorded "
                f"{str(expected)[:16]}... (corrupted or modified outside `core stamp`)"
            )
    return sorted(digests)


def weights_digest(path: Path | str) -> str:
    """The sha256 that identifies a checkpoint's weights (``init_sha256``, a run's
    ``weights_sha256``, ``inspect``'s ``sha256``); ``path`` as ``resolve_model_file`` takes.

    A single weights file: its own sha256 (as it always was). Sharded: the sha256 of the
    ``sha256sum`` lines (``<sha256>  <name>\\n``) of the index and then of each shard in
    the order its weight_map first names them (1, 2, ... for a checkpoint written here),
    so it covers every byte of the weights; ``sha256sum model.safetensors.index.json
    model-*.safetensors | sha256sum`` prints it (then ``  -``)."""
    model_file = resolve_model_file(path)
    if model_file.name != INDEX_FILE:
        if not model_file.is_file():
            raise CheckpointError(f"{model_file}: no such checkpoint file")
        try:
            return sha256_file(model_file)
        except OSError as exc:
            raise CheckpointError(f"{model_file}: cannot read ({exc.strerror or exc})") from None
    data = _read_bytes(model_file)
    _, weight_map, _ = read_shard_index(model_file, data)
    lines = [f"{sha256_bytes(data)}  {model_file.name}\n"]
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = model_file.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{shard_path}: missing shard (named in {model_file.name})")
        lines.append(f"{sha256_file(shard_path)}  {shard}\n")
    return sha256_bytes("".join(lines).encode("utf-8"))


def _check_shard_names(index_file: Path, weight_map: Mapping[str, Any]) -> None:
    """Every file the weight_map names is ``model-NNNNN-of-MMMMM.safetensors`` with one M
    for all, and every shard 1..M is named: an ``optimizer.safetensors``, a path, a stray
    ``extra.safetensors`` or a shard of another save's numbering is refused."""
    count, first, numbers = 0, "", set()
    for tensor, shard in weight_map.items():
        m = SHARD_NAME.fullmatch(shard) if isinstance(shard, str) else None
        if m is None:
            raise CheckpointError(
                f"{index_file}: tensor {tensor} maps to {shard!r}, not a shard file beside "
                "the index named model-NNNNN-of-MMMMM.safetensors"
            )
        number, of = int(m.group(1)), int(m.group(2))
        if not count:
            count, first = of, shard
        if of != count:
            raise CheckpointError(
                f"{index_file}: tensor {tensor} maps to {shard}, but {first} says there are "
                f"{count} shards; the shards of one save share one -of-MMMMM "
                "(re-save the checkpoint)"
            )
        if not 1 <= number <= count:
            raise CheckpointError(
                f"{index_file}: tensor {tensor} maps to {shard}, whose number is not in "
                f"1..{count} (re-save the checkpoint)"
            )
        numbers.add(number)
    absent = sorted(set(range(1, count + 1)) - numbers)
    if absent:
        raise CheckpointError(
            f"{index_file}: maps no tensor to {shard_file_name(absent[0], count)} ({len(absent)} "
            f"of shards 1..{count} named by no tensor); a save writes tensors into every "
            "shard 1..M (re-save the checkpoint)"
        )


def read_shard_index(
    index_file: Path, data: bytes | None = None
) -> tuple[int, dict[str, str], dict[str, str]]:
    """(total_size, weight_map, stamps) of a shard index (its bytes ``data`` when the
    caller has read them), its structure checked: every file it maps a tensor to is a
    shard beside it named ``model-NNNNN-of-MMMMM.safetensors``, one M for all, and every
    shard 1..M is named (``_check_shard_names``)."""
    index_file = Path(index_file)
    if data is None:
        data = _read_bytes(index_file)
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index_file}: corrupted shard index ({exc})") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{index_file}: corrupted shard index (not an object)")
    meta, weight_map = index.get("metadata"), index.get("weight_map")
    if not isinstance(meta, dict) or not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{index_file}: a shard index needs a 'metadata' object and a non-empty 'weight_map'"
        )
    total = meta.get("total_size")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise CheckpointError(f"{index_file}: metadata.total_size is {total!r}, not a byte count")
    _check_shard_names(index_file, weight_map)
    stamps = {str(k): str(v) for k, v in meta.items() if k != "total_size"}
    return total, dict(weight_map), stamps


def load_sharded_weights(index_file: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, stamps) of a sharded checkpoint. Each shard the index names must exist
    and hold exactly the tensors the index maps to it, and ``total_size`` must equal
    the bytes of all tensors; otherwise CheckpointError naming the file and the tensor.

    The index and each shard are read once: where digests.json exists, those bytes are
    compared with it (``verify_digests``; the index and every shard must be listed) and
    then parsed, so no file can change between its check and its use."""
    index_file = Path(index_file)
    ckpt_dir = index_file.parent
    index_bytes = _read_bytes(index_file)
    total, weight_map, stamps = read_shard_index(index_file, index_bytes)
    by_shard: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault(shard, set()).add(tensor)
    for shard, expected in sorted(by_shard.items()):
        if not (ckpt_dir / shard).is_file():
            raise CheckpointError(
                f"{ckpt_dir / shard}: missing shard ({index_file.name} maps {len(expected)} "
                f"tensors to it, e.g. {min(expected)})"
            )
    contents = {index_file.name: index_bytes}
    for shard in sorted(by_shard):
        contents[shard] = _read_bytes(ckpt_dir / shard)
    verified = verify_digests(ckpt_dir, contents)
    if verified is not None:
        unlisted = [name for name in contents if name not in verified]
        if unlisted:
            raise CheckpointError(
                f"{ckpt_dir / unlisted[0]}: not listed in {DIGESTS_FILE}, so its bytes cannot "
                "be checked (written after the digests were recorded?); re-save the checkpoint "
                "with save_checkpoint, which records every file"
            )
    params: dict[str, np.ndarray] = {}
    for shard, expected in sorted(by_shard.items()):
        path = ckpt_dir / shard
        tensors, _ = decode_safetensors(contents.pop(shard), path)
        extra = sorted(set(tensors) - expected)
        if extra:
            raise CheckpointError(
                f"{path}: holds tensor {extra[0]}, which {index_file.name} does not map to this "
                f"shard (stale or misplaced; {len(extra)} such)"
            )
        absent = sorted(expected - set(tensors))
        if absent:
            raise CheckpointError(
                f"{path}: lacks tensor {absent[0]}, which {index_file.name} maps to this shard "
                f"({len(absent)} missing)"
            )
        params.update(tensors)
    actual = sum(int(a.nbytes) for a in params.values())
    if actual != total:
        raise CheckpointError(
            f"{index_file}: metadata.total_size is {total} bytes, but the tensors of its shards "
            f"hold {actual}; the index and the shards are not of one save (re-save the "
            "checkpoint; do not edit total_size)"
        )
    return params, stamps


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
    if model_file.name == INDEX_FILE:  # verifies digests.json on the bytes it parses
        params, stamps = load_sharded_weights(model_file)
    else:
        data = _read_bytes(model_file)
        if model_file.name == MODEL_FILE:
            verify_digests(ckpt_dir, {MODEL_FILE: data})
        params, stamps = decode_safetensors(data, model_file)
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
    if src.name == INDEX_FILE:
        raise CheckpointError(f"{src}: stamps of a sharded checkpoint cannot be patched in place")
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
    if model_file.name == INDEX_FILE:
        tensors, stamps = load_sharded_weights(model_file)
    else:
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
        "sha256": weights_digest(model_file),
        "n_tensors": len(tensors),
        "n_params": int(sum(v.size for v in tensors.values())),
        "tensor_family": tensor_family,
        "identity": identity,
        "stamps": stamps,
        "completeness": score,
        "breakdown": breakdown,
    }
