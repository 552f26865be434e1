"""The data a run trains on and the order it sees it in.

The seeded generator (PCG64) and its saved state; the epoch order
(``shuffle_order``) and the data cursor that walks it (``next_indices``); the
windows an LM step cuts from the token stream; loading the shipped corpus (its
tokens memoized on disk) or the digits splits, with their digest records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import kernels.train as _t  # calls to trainer functions go through the package
from kernels import checkpoint as ckpt_io
from kernels.train.config import TrainError

# ---------------------------------------------------------------- RNG and data cursor


def new_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def restore_rng(state: Mapping[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = dict(state)
    return rng


def shuffle_order(order_seed: int, n: int) -> np.ndarray:
    """The seeded order in which one epoch visits ``n`` windows/examples."""
    return np.random.Generator(np.random.PCG64(order_seed)).permutation(n)


def draw_order_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


@dataclass
class DataCursor:
    """Where the data stream stands: epoch, position in its order, the order's seed."""

    epoch: int = 0
    pos: int = 0
    order_seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataCursor:
        return cls(int(d["epoch"]), int(d["pos"]), d.get("order_seed"))


def next_indices(
    rng: np.random.Generator, cursor: DataCursor, n: int, count: int
) -> tuple[np.ndarray, DataCursor]:
    """Take the next ``count`` indices of the shuffled stream, starting epochs as needed."""
    out: list[np.ndarray] = []
    epoch, pos, order_seed = cursor.epoch, cursor.pos, cursor.order_seed
    need = count
    while need:
        if order_seed is None or pos >= n:
            if order_seed is not None:
                epoch, pos = epoch + 1, 0
            order_seed = _t.draw_order_seed(rng)
        order = _t.shuffle_order(order_seed, n)
        take = min(need, n - pos)
        out.append(order[pos : pos + take])
        pos += take
        need -= take
    return np.concatenate(out), DataCursor(epoch, pos, order_seed)


def draw_phase(rng: np.random.Generator, n_ctx: int) -> int:
    """A per-step offset (0..n_ctx-1) shifting every window of the step."""
    return int(rng.integers(0, n_ctx))


def count_windows(n_tokens: int, n_ctx: int) -> int:
    """Windows of n_ctx+1 tokens at stride n_ctx that still fit after any phase shift."""
    return max((n_tokens - 1) // n_ctx - 1, 0)


def gather_windows(tokens: np.ndarray, idx: np.ndarray, offset: int, n_ctx: int) -> np.ndarray:
    """int32[len(idx), n_ctx+1]: window i covers tokens[i*n_ctx+offset : ... + n_ctx + 1]."""
    starts = idx.astype(np.int64) * n_ctx + offset
    return tokens[starts[:, None] + np.arange(n_ctx + 1)].astype(np.int32)


# ---------------------------------------------------------------- datasets


@dataclass
class LMData:
    train: np.ndarray  # int32 tokens
    val: np.ndarray
    tokenizer_json: str
    tokenizer_sha256: str
    datasets: list[dict[str, Any]]


def dataset_records(*names: str) -> list[dict[str, Any]]:
    """[{name, sha256, license, source}] of manifest datasets, each digest verified."""
    from kernels.data.manifest import dataset_entry, dataset_path

    records = []
    for name in names:
        entry = dataset_entry(name)
        dataset_path(name, verify=True)
        records.append(
            {"name": name, "sha256": entry.sha256, "license": entry.license, "source": entry.source}
        )
    return records


def load_digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits set's fixed train/val/test splits (X, y), its digest verified."""
    from kernels.data.digits import digits_splits

    return dict(digits_splits(verify=True))


def load_lm_data(name: str) -> LMData:
    """Tokenized train/val splits of the shipped corpus, its tokenizer and digest records."""
    from kernels.data import pipeline

    if name != pipeline.CORPUS_NAME:
        raise TrainError(f"LM training supports dataset {pipeline.CORPUS_NAME!r} (got {name!r})")
    tok = pipeline.shipped_tokenizer(verify=True)
    records = _t.dataset_records(name, pipeline.TOKENIZER_NAME)
    train_tokens, val_tokens = _t.cached_token_arrays(records, tok)
    tok_json = tok.to_json()
    return LMData(
        train=train_tokens,
        val=val_tokens,
        tokenizer_json=tok_json,
        tokenizer_sha256=ckpt_io.sha256_bytes(tok_json.encode("utf-8")),
        datasets=records,
    )


def len_vocab(tokenizer_json: str) -> int:
    from kernels.data.tokenizer import ByteBPE

    return int(ByteBPE.from_json(tokenizer_json).vocab_size)


def token_cache_dir() -> Path:
    root = os.environ.get("KERNELS_CACHE_DIR") or Path.home() / ".cache" / "kernels"
    return Path(root) / "tokens"


def cached_token_arrays(records: list[dict[str, Any]], tok: Any) -> tuple[np.ndarray, np.ndarray]:
    """``pipeline.lm_token_arrays`` memoized on disk by data, tokenizer and code digests."""
    import io

    from kernels.data import pipeline, tokenizer

    h = hashlib.sha256(json.dumps(records, sort_keys=True).encode())
    for mod in (pipeline, tokenizer):
        h.update(Path(mod.__file__).read_bytes())
    path = _t.token_cache_dir() / f"{h.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["train"].astype(np.int32), z["val"].astype(np.int32)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    train_tokens, val_tokens = pipeline.lm_token_arrays(tok, verify=False)
    buf = io.BytesIO()
    np.savez(buf, train=train_tokens, val=val_tokens)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt_io.atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # an unwritable cache only costs time

    return train_tokens.astype(np.int32), val_tokens.astype(np.int32)
