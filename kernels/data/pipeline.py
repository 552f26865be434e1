"""Text data pipeline: ingest -> clean -> deduplicate -> split -> decontaminate -> shard -> stats.

Every stage is a pure function on a list of :class:`Document`; ``run_pipeline``
chains them and returns a :class:`PipelineResult` holding the documents after
each stage, what each stage removed and why, the shards (with their doc ids)
and the stats (docs, bytes, tokens) per split. ``recompute_stats`` recomputes
the stats from the shards alone, so they can be checked.

Decontamination: a train document is dropped when it shares any n-gram of ``n``
whitespace-separated words with any eval document. N-grams are hashed to 64 bits
by a numba kernel (``_ngram_hash_kernel``; FNV-1a per word, then a mix over the
n word hashes); a hash collision can only drop an extra train document, never
keep a contaminated one.

``lm_token_arrays()`` gives the int32 token streams of the train and val splits
of the shipped corpus for language-model training (deterministic).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from kernels.data.manifest import Manifest
    from kernels.data.tokenizer import ByteBPE

__all__ = [
    "Document",
    "Removed",
    "Shard",
    "SplitStats",
    "PipelineResult",
    "CORPUS_NAME",
    "TOKENIZER_NAME",
    "ingest_text",
    "ingest_corpus",
    "clean",
    "deduplicate",
    "split_documents",
    "ngram_hashes",
    "document_ngram_hashes",
    "decontaminate",
    "shard",
    "compute_stats",
    "recompute_stats",
    "run_pipeline",
    "shipped_tokenizer",
    "lm_token_arrays",
]

CORPUS_NAME = "pystdlib"
TOKENIZER_NAME = "tokenizer-1024"
DOC_MARK = "<|doc|> "
DEFAULT_N = 13
DEFAULT_EVAL_FRACTION = 0.1
DEFAULT_SHARD_BYTES = 256 * 1024
DEFAULT_MIN_CHARS = 64
_BLOCK_SPLIT = re.compile(r"\n(?:[ \t]*\n){2,}")  # two or more blank lines: top-level blocks


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Removed:
    id: str
    stage: str
    reason: str


@dataclass(frozen=True, slots=True)
class Shard:
    split: str
    index: int
    doc_ids: tuple[str, ...]
    n_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SplitStats:
    docs: int
    bytes: int
    tokens: int | None

    def to_dict(self) -> dict[str, int | None]:
        return {"docs": self.docs, "bytes": self.bytes, "tokens": self.tokens}


@dataclass(frozen=True)
class PipelineResult:
    ingested: list[Document]
    cleaned: list[Document]
    deduped: list[Document]
    train: list[Document]  # after decontamination
    val: list[Document]
    removed: list[Removed]
    shards: list[Shard]
    stats: dict[str, SplitStats]
    params: dict[str, object] = field(default_factory=dict)

    @property
    def removed_counts(self) -> dict[str, int]:
        out = {"clean": 0, "dedupe": 0, "decontaminate": 0}
        for r in self.removed:
            out[r.stage] = out.get(r.stage, 0) + 1
        return out

    @property
    def stages(self) -> dict[str, list[Document]]:
        return {
            "ingest": self.ingested,
            "clean": self.cleaned,
            "dedupe": self.deduped,
            "decontaminate": self.train + self.val,
        }

    def documents(self) -> dict[str, Document]:
        """Final documents (train and val) by id."""
        return {d.id: d for d in self.train + self.val}

    def summary(self) -> dict[str, object]:
        return {
            "stage_docs": {k: len(v) for k, v in self.stages.items()},
            "removed": self.removed_counts,
            "shards": len(self.shards),
            "stats": {k: v.to_dict() for k, v in self.stats.items()},
            "params": dict(self.params),
        }


# ------------------------------------------------------------------ ingest
def ingest_text(corpus: str) -> list[Document]:
    """Parse the ``<|doc|> NAME`` corpus format; each file's top-level blocks become documents."""
    if not isinstance(corpus, str):
        raise ValueError(f"'corpus' must be str (got {type(corpus).__name__})")
    docs: list[Document] = []
    pieces = corpus.split("\n" + DOC_MARK) if corpus else []
    if pieces and pieces[0].startswith(DOC_MARK):
        pieces[0] = pieces[0][len(DOC_MARK) :]
    elif pieces:
        raise ValueError(f"corpus must start with {DOC_MARK!r}")
    for piece in pieces:
        name, _, body = piece.partition("\n")
        for j, block in enumerate(_BLOCK_SPLIT.split(body)):
            docs.append(Document(id=f"{name}#{j}", text=block, source=name))
    return docs


def ingest_corpus(
    verify: bool = True, manifest: Manifest | str | Path | None = None
) -> list[Document]:
    """Ingest the shipped corpus (digest-verified through the manifest)."""
    from kernels.data.manifest import dataset_path

    p = dataset_path(CORPUS_NAME, verify=verify, manifest=manifest)
    return ingest_text(p.read_text(encoding="utf-8"))


# ------------------------------------------------------------------- clean
def clean(
    docs: Sequence[Document], min_chars: int = DEFAULT_MIN_CHARS
) -> tuple[list[Document], list[Removed]]:
    """Normalize newlines, strip trailing spaces and outer blank lines, end with one newline;
    drop documents with NUL or other C0 control bytes (except tab, newline, form feed)
    and documents shorter than ``min_chars`` characters."""
    kept: list[Document] = []
    removed: list[Removed] = []
    bad = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
    for d in docs:
        text = d.text.replace("\r\n", "\n").replace("\r", "\n")
        text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
        if bad.search(text):
            removed.append(Removed(d.id, "clean", "control characters"))
            continue
        if len(text) < min_chars:
            removed.append(Removed(d.id, "clean", f"shorter than {min_chars} chars"))
            continue
        kept.append(Document(d.id, text + "\n", d.source))
    return kept, removed


# ----------------------------------------------------------------- dedupe
def dedupe_key(text: str) -> str:
    """Documents equal up to whitespace runs are duplicates."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def deduplicate(docs: Sequence[Document]) -> tuple[list[Document], list[Removed]]:
    """Keep the first document of each dedupe key."""
    first: dict[str, str] = {}
    kept: list[Document] = []
    removed: list[Removed] = []
    for d in docs:
        k = dedupe_key(d.text)
        if k in first:
            removed.append(Removed(d.id, "dedupe", f"duplicate of {first[k]}"))
        else:
            first[k] = d.id
            kept.append(d)
    return kept, removed


# ------------------------------------------------------------------ split
def split_documents(
    docs: Sequence[Document], eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Split by source file: sources ordered by sha256(seed:source); the first
    ``round(eval_fraction * n_sources)`` (at least 1 when there are 2+) go to eval.
    Document order is kept within each split."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"'eval_fraction' must be in [0, 1) (got {eval_fraction})")
    sources = sorted({d.source for d in docs})
    ranked = sorted(sources, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_eval = round(eval_fraction * len(ranked))
    if eval_fraction > 0 and n_eval == 0 and len(ranked) >= 2:
        n_eval = 1
    eval_sources = set(ranked[:n_eval])
    train = [d for d in docs if d.source not in eval_sources]
    val = [d for d in docs if d.source in eval_sources]
    return train, val


# ---------------------------------------------------------- n-gram kernel
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_NGRAM_SEED = 0x9E3779B97F4A7C15
_NGRAM_MULT = 0xFF51AFD7ED558CCD
_MASK64 = (1 << 64) - 1


@lru_cache(maxsize=1)
def _kernel():  # type: ignore[no-untyped-def]
    from kernels.data import _ngram_kernel

    return _ngram_kernel._ngram_hash_kernel


def ngram_hashes(data: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every ``n``-word window in each document.

    ``data``: uint8[L] C-contiguous, the concatenated UTF-8 bytes of the documents;
    ``offsets``: int64[D+1], non-decreasing, ``offsets[0] == 0``, ``offsets[-1] == L``;
    document ``d`` is ``data[offsets[d]:offsets[d+1]]``. Words are maximal runs of
    non-whitespace bytes (whitespace = space, \\t, \\n, \\r, \\v, \\f, as ``bytes.split()``).
    Returns ``(hashes uint64[M], owner int64[M])`` in document order; a document
    with fewer than ``n`` words contributes nothing.
    """
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError(f"'data' must be a 1-D uint8 array (got {_describe(data)})")
    if not data.flags.c_contiguous:
        raise ValueError("'data' must be C-contiguous")
    if not isinstance(offsets, np.ndarray) or offsets.dtype != np.int64 or offsets.ndim != 1:
        raise ValueError(f"'offsets' must be a 1-D int64 array (got {_describe(offsets)})")
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != data.size:
        raise ValueError(
            f"'offsets' must start at 0 and end at len(data)={data.size} "
            f"(got {offsets[:1].tolist()}..{offsets[-1:].tolist()})"
        )
    if offsets.size > 1 and np.any(np.diff(offsets) < 0):
        raise ValueError("'offsets' must be non-decreasing")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"'n' must be an int >= 1 (got {n!r})")
    offsets = np.ascontiguousarray(offsets)
    return _kernel()(data, offsets, np.int64(n))


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"ndarray dtype={x.dtype} shape={x.shape}"
    return type(x).__name__


def pack_documents(texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of the texts concatenated, and their int64 offsets."""
    blobs = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    if blobs:
        np.cumsum([len(b) for b in blobs], out=offsets[1:])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
    return data, offsets


def document_ngram_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    data, offsets = pack_documents(texts)
    return ngram_hashes(data, offsets, n)


def ngram_hashes_reference(text_bytes: bytes, n: int) -> list[int]:
    """Pure-Python reference of the kernel for one document (for tests)."""
    word_hashes = []
    for w in text_bytes.split():
        h = _FNV_OFFSET
        for b in w:
            h = ((h ^ b) * _FNV_PRIME) & _MASK64
        word_hashes.append(h)
    out = []
    for i in range(len(word_hashes) - n + 1):
        g = _NGRAM_SEED
        for k in range(n):
            g = ((g ^ word_hashes[i + k]) * _NGRAM_MULT) & _MASK64
            g ^= g >> 29
        out.append(g)
    return out


# ---------------------------------------------------------- decontaminate
def decontaminate(
    train: Sequence[Document], eval_docs: Sequence[Document], n: int = DEFAULT_N
) -> tuple[list[Document], list[Removed]]:
    """Drop every train document sharing an ``n``-word n-gram with any eval document."""
    if not train or not eval_docs:
        return list(train), []
    ev_h, _ = document_ngram_hashes([d.text for d in eval_docs], n)
    tr_h, tr_owner = document_ngram_hashes([d.text for d in train], n)
    hit = np.isin(tr_h, np.unique(ev_h))
    bad = set(np.unique(tr_owner[hit]).tolist())
    kept = [d for i, d in enumerate(train) if i not in bad]
    removed = [
        Removed(d.id, "decontaminate", f"shares a {n}-gram with the eval split")
        for i, d in enumerate(train)
        if i in bad
    ]
    return kept, removed


# ------------------------------------------------------------------ shard
def shard(
    docs: Sequence[Document], split: str, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> list[Shard]:
    """Group documents in order into shards of about ``shard_bytes`` UTF-8 bytes each;
    a shard closes once it reaches ``shard_bytes``. Every document is in exactly one shard."""
    if shard_bytes < 1:
        raise ValueError(f"'shard_bytes' must be >= 1 (got {shard_bytes})")
    shards: list[Shard] = []
    ids: list[str] = []
    h = hashlib.sha256()
    size = 0

    def close() -> None:
        nonlocal ids, h, size
        shards.append(Shard(split, len(shards), tuple(ids), size, h.hexdigest()))
        ids, h, size = [], hashlib.sha256(), 0

    for d in docs:
        b = d.text.encode("utf-8")
        ids.append(d.id)
        h.update(b)
        size += len(b)
        if size >= shard_bytes:
            close()
    if ids:
        close()
    return shards


# ------------------------------------------------------------------ stats
def compute_stats(docs: Sequence[Document], tokenizer: ByteBPE | None = None) -> SplitStats:
    n_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
    tokens = None if tokenizer is None else sum(int(tokenizer.encode(d.text).size) for d in docs)
    return SplitStats(len(docs), n_bytes, tokens)


def recompute_stats(
    shards: Sequence[Shard], docs_by_id: dict[str, Document], tokenizer: ByteBPE | None = None
) -> dict[str, SplitStats]:
    """Stats per split (and "all") from the shards' doc ids; checks each shard's digest."""
    per: dict[str, list[Document]] = {}
    for s in shards:
        docs = [docs_by_id[i] for i in s.doc_ids]
        blob = b"".join(d.text.encode("utf-8") for d in docs)
        if len(blob) != s.n_bytes or hashlib.sha256(blob).hexdigest() != s.sha256:
            raise ValueError(f"shard {s.split}/{s.index} content differs from its recorded digest")
        per.setdefault(s.split, []).extend(docs)
    out = {k: compute_stats(v, tokenizer) for k, v in per.items()}
    out["all"] = _total(list(out.values()), tokenizer is not None)
    return out


def _total(parts: list[SplitStats], tokenized: bool) -> SplitStats:
    return SplitStats(
        sum(p.docs for p in parts),
        sum(p.bytes for p in parts),
        sum(p.tokens or 0 for p in parts) if tokenized else None,
    )


# --------------------------------------------------------------- pipeline
def run_pipeline(
    documents: Sequence[Document] | None = None,
    *,
    n: int = DEFAULT_N,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = 0,
    min_chars: int = DEFAULT_MIN_CHARS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    tokenizer: ByteBPE | None | str = "shipped",
    verify: bool = True,
) -> PipelineResult:
    """Run every stage. ``documents=None`` ingests the shipped corpus; ``tokenizer``
    is a ByteBPE, ``"shipped"`` (the manifest's tokenizer) or None (no token counts)."""
    tok = shipped_tokenizer(verify) if tokenizer == "shipped" else tokenizer
    if isinstance(tok, str):
        raise ValueError(f"'tokenizer' must be a ByteBPE, 'shipped' or None (got {tok!r})")
    ingested = ingest_corpus(verify) if documents is None else list(documents)
    cleaned, r_clean = clean(ingested, min_chars)
    deduped, r_dedupe = deduplicate(cleaned)
    train0, val = split_documents(deduped, eval_fraction, seed)
    train, r_decon = decontaminate(train0, val, n)
    shards = shard(train, "train", shard_bytes) + shard(val, "val", shard_bytes)
    stats = {"train": compute_stats(train, tok), "val": compute_stats(val, tok)}
    stats["all"] = _total([stats["train"], stats["val"]], tok is not None)
    params: dict[str, object] = {
        "n": n,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "min_chars": min_chars,
        "shard_bytes": shard_bytes,
        "tokenizer": None if tok is None else tok.digest(),
    }
    return PipelineResult(
        ingested, cleaned, deduped, train, val, r_clean + r_dedupe + r_decon, shards, stats, params
    )


# ------------------------------------------------------------------ LM data
def shipped_tokenizer(verify: bool = True) -> ByteBPE:
    """The tokenizer shipped in datasets/ (digest-verified)."""
    from kernels.data.manifest import dataset_path
    from kernels.data.tokenizer import ByteBPE

    return ByteBPE.load(dataset_path(TOKENIZER_NAME, verify=verify))


def lm_token_arrays(
    tokenizer: ByteBPE | None = None, verify: bool = True, **pipeline_kwargs: object
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) int32 token streams of the shipped corpus after the pipeline:
    each split's documents, in order, encoded and concatenated (a document ends with
    a newline). Deterministic; the lengths equal the pipeline stats' token counts."""
    tok = shipped_tokenizer(verify) if tokenizer is None else tokenizer
    res = run_pipeline(None, tokenizer=None, verify=verify, **pipeline_kwargs)  # type: ignore[arg-type]

    def stream(docs: list[Document]) -> np.ndarray:
        if not docs:
            return np.zeros(0, dtype=np.int32)
        return np.ascontiguousarray(
            np.concatenate([tok.encode(d.text) for d in docs]), dtype=np.int32
        )

    return stream(res.train), stream(res.val)
