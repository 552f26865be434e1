"""Byte-level BPE tokenizer.

Ids 0..255 are the raw bytes; each merge ``(a, b) -> 256 + rank`` adds one id.
Text is first split into chunks by a GPT-2-style byte regex (letters, digits,
punctuation runs, whitespace runs) that covers every byte, so any byte string
encodes and decodes back exactly. Merges never cross chunk boundaries.

Training counts chunk frequencies once, then merges the most frequent pair
(ties broken by the smallest ``(a, b)``) with incremental pair counts and a
lazy max-heap, touching only the chunks that contain the merged pair. It is
pure Python, deterministic, and takes a few seconds on the 1.5 MB corpus.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from kernels.errors import KernelsError

__all__ = ["ByteBPE", "TokenizerError", "PATTERN"]

PATTERN = rb"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""
_SPLIT = re.compile(PATTERN)
MIN_VOCAB, MAX_VOCAB = 512, 2048
FORMAT = "kernels.byte-bpe"
FORMAT_VERSION = 1


class TokenizerError(KernelsError, ValueError):
    """A tokenizer file or argument is invalid."""


def _as_bytes(data: str | bytes | bytearray | memoryview, name: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TokenizerError(f"'{name}' must be str or bytes (got {type(data).__name__})")


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class ByteBPE:
    """A trained byte-level BPE: ``merges[r] = (a, b)`` makes id ``256 + r``."""

    def __init__(self, merges: list[tuple[int, int]]):
        vocab: list[bytes] = [bytes([i]) for i in range(256)]
        ranks: dict[tuple[int, int], int] = {}
        for r, (a, b) in enumerate(merges):
            new = 256 + r
            if not (0 <= a < new and 0 <= b < new):
                raise TokenizerError(f"merge {r} ({a}, {b}) refers to an id >= {new}")
            if (a, b) in ranks:
                raise TokenizerError(f"merge {r} ({a}, {b}) is a duplicate")
            ranks[(a, b)] = r
            vocab.append(vocab[a] + vocab[b])
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        self._ranks = ranks
        self._vocab = vocab
        self._cache: dict[bytes, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ train
    @classmethod
    def train(cls, text: str | bytes, vocab_size: int) -> ByteBPE:
        """Learn ``vocab_size - 256`` merges from ``text`` (deterministic)."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TokenizerError(f"'vocab_size' must be an int (got {vocab_size!r})")
        if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
            raise TokenizerError(
                f"'vocab_size' must be in {MIN_VOCAB}..{MAX_VOCAB} (got {vocab_size})"
            )
        data = _as_bytes(text, "text")
        chunk_counts = Counter(_SPLIT.findall(data))
        chunks = sorted(chunk_counts)  # deterministic order
        words: list[list[int]] = [list(c) for c in chunks]
        freqs: list[int] = [chunk_counts[c] for c in chunks]

        pair_count: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for wi, w in enumerate(words):
            f = freqs[wi]
            for p in zip(w, w[1:], strict=False):
                pair_count[p] += f
                where[p].add(wi)
        heap = [(-c, p) for p, c in pair_count.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int]] = []
        n_merges = vocab_size - 256
        while len(merges) < n_merges and heap:
            negc, pair = heapq.heappop(heap)
            cur = pair_count.get(pair, 0)
            if cur <= 0:
                continue
            if -negc != cur:  # stale entry; re-push with the true count
                heapq.heappush(heap, (-cur, pair))
                continue
            new = 256 + len(merges)
            merges.append(pair)
            a, b = pair
            touched: dict[tuple[int, int], int] = defaultdict(int)
            for wi in sorted(where.pop(pair, ())):
                w = words[wi]
                f = freqs[wi]
                for p in zip(w, w[1:], strict=False):
                    touched[p] -= f
                nw = _merge_word(w, a, b, new)
                for p in zip(nw, nw[1:], strict=False):
                    touched[p] += f
                    where[p].add(wi)
                words[wi] = nw
            pair_count.pop(pair, None)
            for p, d in touched.items():
                if p == pair or d == 0:
                    continue
                c = pair_count.get(p, 0) + d
                if c > 0:
                    pair_count[p] = c
                    if d > 0:
                        heapq.heappush(heap, (-c, p))
                else:
                    pair_count.pop(p, None)
                    where.pop(p, None)
        if len(merges) < n_merges:
            raise TokenizerError(
                f"text too small: only {len(merges)} merges possible for vocab_size {vocab_size}"
            )
        return cls(merges)

    # ------------------------------------------------------------ encode/decode
    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def token_bytes(self, token_id: int) -> bytes:
        return self._vocab[token_id]

    def _encode_chunk(self, chunk: bytes) -> tuple[int, ...]:
        hit = self._cache.get(chunk)
        if hit is not None:
            return hit
        word = list(chunk)
        ranks = self._ranks
        while len(word) > 1:
            best_rank = None
            best_i = -1
            for i in range(len(word) - 1):
                r = ranks.get((word[i], word[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            a, b = word[best_i], word[best_i + 1]
            word = _merge_word(word, a, b, 256 + best_rank)
        out = tuple(word)
        if len(self._cache) < 200_000:
            self._cache[chunk] = out
        return out

    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids of ``text`` (str is UTF-8 encoded) as a C-contiguous int32 array."""
        data = _as_bytes(text, "text")
        ids: list[int] = []
        for chunk in _SPLIT.findall(data):
            ids.extend(self._encode_chunk(chunk))
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: np.ndarray | list[int] | tuple[int, ...]) -> bytes:
        """The bytes of a sequence of ids; raises TokenizerError on an id outside the vocab."""
        arr = np.asarray(ids)
        if arr.size == 0:
            return b""
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise TokenizerError(
                f"'ids' must be a 1-D integer sequence (got shape {arr.shape}, dtype {arr.dtype})"
            )
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.vocab_size:
            raise TokenizerError(f"'ids' must be in 0..{self.vocab_size - 1} (got {lo}..{hi})")
        vocab = self._vocab
        return b"".join(vocab[i] for i in arr.tolist())

    # ------------------------------------------------------------ serialize
    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "pattern": PATTERN.decode("ascii"),
            "merges": [list(m) for m in self.merges],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ByteBPE:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise TokenizerError(f"tokenizer JSON does not parse: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TokenizerError(f"not a tokenizer file: 'format' must be {FORMAT!r}")
        if doc.get("version") != FORMAT_VERSION:
            raise TokenizerError(
                f"tokenizer 'version' must be {FORMAT_VERSION} (got {doc.get('version')!r})"
            )
        if doc.get("pattern") != PATTERN.decode("ascii"):
            raise TokenizerError("tokenizer 'pattern' differs from this code's pre-tokenizer")
        merges = doc.get("merges")
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
        ):
            raise TokenizerError("tokenizer 'merges' must be a list of [int, int] pairs")
        tok = cls([(a, b) for a, b in merges])
        if doc.get("vocab_size") != tok.vocab_size:
            raise TokenizerError(
                f"tokenizer 'vocab_size' {doc.get('vocab_size')!r} != 256 + {len(merges)} merges"
            )
        return tok

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically (temp file + rename)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(p)

    @classmethod
    def load(cls, path: str | Path) -> ByteBPE:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def digest(self) -> str:
        """sha256 of ``to_json()``: identifies the tokenizer in checkpoint stamps."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteBPE) and self.merges == other.merges

    def __hash__(self) -> int:
        return hash(tuple(self.merges))

    def __repr__(self) -> str:
        return f"ByteBPE(vocab_size={self.vocab_size})"
