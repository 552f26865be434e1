"""The numba n-gram hashing kernel (imported lazily by ``pipeline.ngram_hashes``).

Validates nothing: call it through ``kernels.data.pipeline.ngram_hashes``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_NGRAM_SEED = np.uint64(0x9E3779B97F4A7C15)
_NGRAM_MULT = np.uint64(0xFF51AFD7ED558CCD)
_SHIFT = np.uint64(29)


@njit(cache=True, error_model="numpy")
def _is_space(b):  # type: ignore[no-untyped-def]
    return b == 32 or (b >= 9 and b <= 13)


@njit(cache=True, error_model="numpy")
def _ngram_hash_kernel(data, offsets, n):  # type: ignore[no-untyped-def]
    L = data.shape[0]
    D = offsets.shape[0] - 1
    # pass 1: word hashes and the document of each word
    word_h = np.empty(L // 2 + 1, dtype=np.uint64)
    word_doc = np.empty(L // 2 + 1, dtype=np.int64)
    nw = 0
    for d in range(D):
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            while i < end and _is_space(data[i]):
                i += 1
            if i >= end:
                break
            h = _FNV_OFFSET
            while i < end and not _is_space(data[i]):
                h = (h ^ np.uint64(data[i])) * _FNV_PRIME
                i += 1
            word_h[nw] = h
            word_doc[nw] = d
            nw += 1
    # pass 2: one hash per window of n consecutive words of one document
    out_h = np.empty(max(nw, 1), dtype=np.uint64)
    out_doc = np.empty(max(nw, 1), dtype=np.int64)
    m = 0
    for s in range(nw - n + 1):
        if word_doc[s] != word_doc[s + n - 1]:
            continue
        g = _NGRAM_SEED
        for k in range(n):
            g = (g ^ word_h[s + k]) * _NGRAM_MULT
            g = g ^ (g >> _SHIFT)
        out_h[m] = g
        out_doc[m] = word_doc[s]
        m += 1
    return out_h[:m].copy(), out_doc[:m].copy()
