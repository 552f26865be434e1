"""The safetensors format, byte for byte, and file digests.

``encode_safetensors`` writes a canonical header (sorted keys and names), so the
same tensors and metadata give the same bytes in every process; the readers
refuse a malformed, truncated or padded file with one ``CheckpointError`` line
naming it. Re-exported by ``kernels.checkpoint``, which is where callers import
these names from.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kernels.errors import KernelsError


class CheckpointError(KernelsError):
    """A checkpoint that cannot be trusted or read; the message names the file."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    return decode_safetensors(data, path)


def decode_safetensors(
    data: bytes, path: Path | str
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of safetensors bytes already read (``path`` names them in
    errors): a caller that hashed these bytes parses the very bytes it hashed."""
    path = Path(path)
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
