from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.data.pipeline import (
    document_ngram_hashes,
    ingest_corpus,
    ngram_hashes,
    ngram_hashes_reference,
    pack_documents,
)


def reference(texts: list[bytes], n: int) -> tuple[list[int], list[int]]:
    hs, owner = [], []
    for i, t in enumerate(texts):
        h = ngram_hashes_reference(t, n)
        hs += h
        owner += [i] * len(h)
    return hs, owner


@pytest.mark.parametrize("n", [1, 2, 5, 13])
def test_kernel_matches_reference_on_corpus_documents(n: int):
    docs = ingest_corpus()[::7]
    texts = [d.text for d in docs]
    h, owner = document_ngram_hashes(texts, n)
    rh, ro = reference([t.encode("utf-8") for t in texts], n)
    assert h.dtype == np.uint64 and owner.dtype == np.int64
    assert h.tolist() == rh and owner.tolist() == ro


_word = st.binary(min_size=1, max_size=6).map(
    lambda b: bytes(x if x not in b" \t\n\r\x0b\x0c" else 97 for x in b)
)
_sep = st.sampled_from([b" ", b"\n", b"\t", b"  \r\n", b"\x0b", b"\x0c", b""])


@st.composite
def doc_bytes(draw):  # type: ignore[no-untyped-def]
    words = draw(st.lists(st.tuples(_word, _sep), max_size=30))
    return draw(_sep) + b"".join(w + (s or b" ") for w, s in words)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(doc_bytes(), st.binary(max_size=40)), max_size=6), st.integers(1, 6))
def test_kernel_matches_reference_property(texts: list[bytes], n: int):
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in texts]) if texts else []
    data = np.frombuffer(b"".join(texts), dtype=np.uint8).copy()
    h, owner = ngram_hashes(data, offsets, n)
    rh, ro = reference(texts, n)
    assert h.tolist() == rh and owner.tolist() == ro


def test_windows_never_cross_documents():
    h, owner = document_ngram_hashes(["a b", "c d"], 3)
    assert h.size == 0
    h, owner = document_ngram_hashes(["a b c", "a b c"], 3)
    assert owner.tolist() == [0, 1] and h[0] == h[1]
    h, _ = document_ngram_hashes(["a  b\nc"], 3)
    assert h.tolist() == document_ngram_hashes(["a b c"], 3)[0].tolist()


def test_empty_inputs():
    h, o = ngram_hashes(np.zeros(0, np.uint8), np.zeros(1, np.int64), 3)
    assert h.size == 0 and o.size == 0
    h, o = document_ngram_hashes(["", "   "], 1)
    assert h.size == 0


def test_wrapper_validates_inputs():
    data, off = pack_documents(["a b c"])
    with pytest.raises(ValueError, match="'data' must be a 1-D uint8"):
        ngram_hashes(data.astype(np.int8), off, 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        ngram_hashes(np.zeros(10, np.uint8)[::2], np.array([0, 5], np.int64), 2)
    with pytest.raises(ValueError, match="'offsets' must be a 1-D int64"):
        ngram_hashes(data, off.astype(np.int32), 2)
    with pytest.raises(ValueError, match="end at len"):
        ngram_hashes(data, np.array([0, 3], np.int64), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        ngram_hashes(data, np.array([0, 4, 2, 5], np.int64), 2)
    with pytest.raises(ValueError, match="'n' must be an int >= 1"):
        ngram_hashes(data, off, 0)


def test_kernel_flags():
    from kernels.data._ngram_kernel import _ngram_hash_kernel

    assert _ngram_hash_kernel.targetoptions.get("error_model") == "numpy"
    assert _ngram_hash_kernel._cache is not None
    assert type(_ngram_hash_kernel._cache).__name__ == "FunctionCache"
