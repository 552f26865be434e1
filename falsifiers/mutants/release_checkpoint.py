"""Mutants of the sharded checkpoint layout (INV-REL-012, contracts/release.yaml).

Each is the real function with one bug an engineer could commit while writing it
(the real ones are in ``kernels/checkpoint.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kernels import checkpoint as ck


def plan_shards_closing_at_the_limit(
    sizes: Mapping[str, int], max_shard_bytes: int
) -> list[list[str]]:
    """The planner with ``>=`` for ``>``: a tensor that would fill its shard to exactly
    the limit starts the next shard instead. Every shard still holds at most the limit
    and everything loads; only a shard that should end exactly at the limit is cut short
    (a checkpoint re-sharded with the limit it was saved with comes out differently)."""
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int):
        raise ValueError(f"max_shard_bytes must be an int (got {max_shard_bytes!r})")
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1 (got {max_shard_bytes})")
    shards: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in sorted(sizes):
        size = int(sizes[name])
        if current and used + size >= max_shard_bytes:  # the bug: >= for >
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        shards.append(current)
    return shards


def save_sharded_named_by_ceiling(
    ckpt_dir: Path | str,
    params: Mapping[str, np.ndarray],
    stamps: Mapping[str, str],
    max_shard_bytes: int,
) -> dict[str, str]:
    """The saver that names its files ``-of-ceil(total / max)`` before packing: greedy
    packing at a tensor boundary usually needs more shards than that, so the files say
    ``model-00006-of-00004``. Everything loads (the loader follows the weight_map); only
    the names lie, and a downloader that counts shards by their names stops short."""
    ckpt_dir = Path(ckpt_dir)
    arrays = {str(k): np.asarray(v) for k, v in params.items()}
    sizes = {name: int(a.nbytes) for name, a in arrays.items()}
    shards = ck.plan_shards(sizes, max_shard_bytes)
    count = math.ceil(sum(sizes.values()) / max_shard_bytes)  # the bug: not len(shards)
    files = [ck.shard_file_name(i + 1, count) for i in range(len(shards))]
    meta = {"format": "np", "format_version": ck.FORMAT_VERSION}
    digests: dict[str, str] = {}
    for file, names in zip(files, shards, strict=True):
        data = ck.encode_safetensors({n: arrays[n] for n in names}, meta)
        ck.atomic_write_bytes(ckpt_dir / file, data)
        digests[file] = ck.sha256_bytes(data)
    index = ck.shard_index(files, shards, sizes, {**meta, **stamps})
    data = json.dumps(index, indent=1, sort_keys=True).encode("utf-8")
    ck.atomic_write_bytes(ckpt_dir / ck.INDEX_FILE, data)
    digests[ck.INDEX_FILE] = ck.sha256_bytes(data)
    return digests


def shard_index_total_assigned(
    files: list[str], shards: list[list[str]], sizes: Mapping[str, int], stamps: Mapping[str, str]
) -> dict[str, Any]:
    """The index whose ``total_size`` is assigned in the loop over shards instead of
    accumulated (``=`` for ``+=``): it holds the last shard's bytes only."""
    weight_map: dict[str, str] = {}
    total_size = 0
    for file, names in zip(files, shards, strict=True):
        total_size = sum(int(sizes[n]) for n in names)  # the bug: = for +=
        weight_map.update(dict.fromkeys(names, file))
    metadata: dict[str, Any] = {str(k): str(v) for k, v in sorted(stamps.items())}
    metadata["total_size"] = total_size
    return {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}


def load_every_tensor_of_each_shard(
    index_file: Path,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The loader that reads the shards the weight_map names and takes every tensor in
    them (``params.update(load_file(shard))``, as many loaders do), never checking that a
    shard holds exactly what the index maps to it: a stale copy of a tensor left in an
    earlier shard is loaded (and overwritten or not, depending on the shard order)."""
    total, weight_map, stamps = ck.read_shard_index(index_file)
    ckpt_dir = index_file.parent
    files = sorted(set(weight_map.values()))
    for shard in files:
        if not (ckpt_dir / shard).is_file():
            raise ck.CheckpointError(f"{ckpt_dir / shard}: missing shard")
    ck.verify_digests(ckpt_dir)  # digests checked as the real loader does
    params: dict[str, np.ndarray] = {}
    for shard in files:
        tensors, _ = ck.read_safetensors(ckpt_dir / shard)
        params.update(tensors)  # the bug: no comparison with the weight_map
    actual = sum(int(params[n].nbytes) for n in weight_map if n in params)
    if actual != total:
        raise ck.CheckpointError(f"{index_file}: total_size {total} != {actual}")
    return params, stamps
