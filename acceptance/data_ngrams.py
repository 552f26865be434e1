"""The n-gram hashing kernel against its independent reference, at the boundaries.

Decontamination trusts ``kernels.data.pipeline.ngram_hashes`` (numba). This
check compares it, document by document, with ``ngram_hashes_reference`` (pure
Python over ``bytes.split()``, written separately) on every shipped document and
on boundary cases the corpus may not hold: a document that ends without
whitespace, tabs and form feeds as separators, documents shorter than ``n``,
empty documents, multi-byte UTF-8. Then it plants an eval passage at the very
start and the very end of a train document and checks that decontamination
removes both (issue 13, classes 2 and 7: an independent oracle, and the
boundary covered deterministically instead of by a lucky search).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: documents that the corpus may not contain; each a boundary of the word splitter
BOUNDARY_DOCS = (
    "",
    "   ",
    "one",
    "ends without whitespace at the very end",
    "ends with whitespace \n",
    "tabs\tseparate\twords\tjust\tlike\tspaces\tdo",
    "form\x0cfeed\x0band\rvertical\x0btab\x0cseparators too",
    "\n\n leading  and   repeated    whitespace \t\n",
    "multi-byte words: café naïve Ærøskøbing 東京 ünïcödé ok",
    "short doc",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
)


def _per_document(hashes: np.ndarray, owner: np.ndarray, count: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(count)]
    for h, d in zip(hashes.tolist(), owner.tolist(), strict=True):
        out[int(d)].append(int(h))
    return out


def _mismatches(texts: list[str], n: int) -> int:
    from kernels.data.pipeline import document_ngram_hashes, ngram_hashes_reference

    hashes, owner = document_ngram_hashes(texts, n)
    got = _per_document(hashes, owner, len(texts))
    return sum(
        1
        for text, mine in zip(texts, got, strict=True)
        if mine != ngram_hashes_reference(text.encode("utf-8"), n)
    )


def ngram_kernel_matches_reference(ctx: Any) -> dict[str, Any]:
    """params: n (words per n-gram), ns (extra n values for the boundary cases).
    observations: documents, mismatched_documents, boundary_cases,
    boundary_mismatches, plants, plants_kept."""
    from kernels.data.pipeline import (
        Document,
        decontaminate,
        ingest_corpus,
        split_documents,
    )

    n = int(ctx.params.get("n", 13))
    docs = ingest_corpus()
    texts = [d.text for d in docs]
    mismatched = _mismatches(texts, n)
    # the boundary cases, for several n, alone and packed between corpus documents
    boundary_cases = 0
    boundary_mismatches = 0
    for k in [n, *[int(x) for x in ctx.params.get("ns", [1, 2, 3])]]:
        boundary_mismatches += _mismatches(list(BOUNDARY_DOCS), k)
        packed = [t for b in BOUNDARY_DOCS for t in (b, texts[len(b) % len(texts)])]
        boundary_mismatches += _mismatches(packed, k)
        boundary_cases += len(BOUNDARY_DOCS) + len(packed)
    # an eval passage at the very start and at the very end of a train document
    train, eval_docs = split_documents(docs)
    source = next(d for d in eval_docs if len(d.text.split()) >= 2 * n)
    passage = " ".join(source.text.split()[:n])
    hosts = [d for d in train if len(d.text.split()) >= n][:2]
    planted = [
        Document(f"{hosts[0].id}-start", passage + " " + hosts[0].text, hosts[0].source),
        Document(f"{hosts[1].id}-end", hosts[1].text.rstrip() + " " + passage, hosts[1].source),
    ]
    kept, _ = decontaminate(planted, eval_docs, n)
    return {
        "documents": len(texts),
        "mismatched_documents": mismatched,
        "boundary_cases": boundary_cases,
        "boundary_mismatches": boundary_mismatches,
        "plants": len(planted),
        "plants_kept": len(kept),
    }
