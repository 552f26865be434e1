"""Known-bad variants of the n-gram hashing kernel (kernels.data._ngram_kernel).

Each is a bug an engineer could write into the numba kernel; each mutant replaces
``kernels.data.pipeline:_kernel`` (the seam that hands out the compiled kernel) so
``ngram_hashes`` and decontamination run the buggy kernel. ``INV-DATA-011`` must
catch every one; the pipeline's own end-to-end check does not see them all.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numba import njit

from kernels.data._ngram_kernel import (
    _FNV_OFFSET,
    _FNV_PRIME,
    _NGRAM_MULT,
    _NGRAM_SEED,
    _SHIFT,
    _is_space,
)


@njit(cache=True)
def _space_or_newline(b):  # type: ignore[no-untyped-def]
    return b == 32 or b == 10


def _make(is_space: Any, flush_at_end: bool, same_document: bool) -> Any:
    @njit
    def kernel(data, offsets, n):  # type: ignore[no-untyped-def]
        L = data.shape[0]
        D = offsets.shape[0] - 1
        word_h = np.empty(L // 2 + 1, dtype=np.uint64)
        word_doc = np.empty(L // 2 + 1, dtype=np.int64)
        nw = 0
        for d in range(D):
            i = offsets[d]
            end = offsets[d + 1]
            while i < end:
                while i < end and is_space(data[i]):
                    i += 1
                if i >= end:
                    break
                h = _FNV_OFFSET
                while i < end and not is_space(data[i]):
                    h = (h ^ np.uint64(data[i])) * _FNV_PRIME
                    i += 1
                if i < end or flush_at_end:
                    word_h[nw] = h
                    word_doc[nw] = d
                    nw += 1
        out_h = np.empty(max(nw, 1), dtype=np.uint64)
        out_doc = np.empty(max(nw, 1), dtype=np.int64)
        m = 0
        for s in range(nw - n + 1):
            if same_document and word_doc[s] != word_doc[s + n - 1]:
                continue
            g = _NGRAM_SEED
            for k in range(n):
                g = (g ^ word_h[s + k]) * _NGRAM_MULT
                g = g ^ (g >> _SHIFT)
            out_h[m] = g
            out_doc[m] = word_doc[s]
            m += 1
        return out_h[:m].copy(), out_doc[:m].copy()

    return kernel


@cache
def kernel_drops_last_word() -> Any:
    """A word is stored only when whitespace follows it: the last word of a document
    that ends without whitespace is lost (and a passage planted there survives)."""
    return _make(_is_space, False, True)


@cache
def kernel_spaces_only() -> Any:
    """Only space and newline separate words: tab, CR, VT and FF join words."""
    return _make(_space_or_newline, True, True)


@cache
def kernel_crosses_documents() -> Any:
    """The same-document test of a window is forgotten: windows span two documents."""
    return _make(_is_space, True, False)
