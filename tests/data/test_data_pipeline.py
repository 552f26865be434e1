from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.data.manifest import load_manifest
from kernels.data.pipeline import (
    Document,
    clean,
    decontaminate,
    dedupe_key,
    deduplicate,
    ingest_corpus,
    ingest_text,
    lm_token_arrays,
    recompute_stats,
    run_pipeline,
    shard,
    split_documents,
)


def word_ngrams(text: str, n: int) -> set[tuple[bytes, ...]]:
    w = text.encode("utf-8").split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_stage_counts_add_up(corpus_result):
    r = corpus_result
    rc = r.removed_counts
    assert len(r.ingested) - rc["clean"] == len(r.cleaned)
    assert len(r.cleaned) - rc["dedupe"] == len(r.deduped)
    assert len(r.deduped) - rc["decontaminate"] == len(r.train) + len(r.val)
    assert len(r.train) > 10 * rc["decontaminate"] and len(r.val) > 0


def test_matches_manifest_split_sizes_and_tokens(corpus_result):
    e = load_manifest()["pystdlib"]
    assert e.splits == {"train": len(corpus_result.train), "val": len(corpus_result.val)}
    st = corpus_result.stats
    assert e.extra["tokens"] == {"train": st["train"].tokens, "val": st["val"].tokens}


def test_no_duplicates_after_dedupe(corpus_result):
    keys = Counter(dedupe_key(d.text) for d in corpus_result.deduped)
    assert max(keys.values()) == 1
    kept = {d.id for d in corpus_result.deduped}
    for r in corpus_result.removed:
        if r.stage == "dedupe":
            assert r.reason.split()[-1] in kept


def test_dedupe_removes_planted_whitespace_variants():
    docs = [
        Document("a", "x = 1\ny = 2\n", "f"),
        Document("b", "x  =  1\n\ny = 2", "g"),
        Document("c", "z = 3\n", "f"),
        Document("d", "x = 1\ny = 2\n", "h"),
    ]
    kept, removed = deduplicate(docs)
    assert [d.id for d in kept] == ["a", "c"]
    assert {r.id for r in removed} == {"b", "d"}


def test_no_ngram_shared_between_train_and_val(corpus_result):
    n = corpus_result.params["n"]
    val_grams: set[tuple[bytes, ...]] = set()
    for d in corpus_result.val:
        val_grams |= word_ngrams(d.text, n)
    for d in corpus_result.train:
        assert not (word_ngrams(d.text, n) & val_grams), d.id
    # and the stage did find real overlap in this corpus before removing it
    assert corpus_result.removed_counts["decontaminate"] > 0


def test_planted_eval_passage_in_train_is_removed():
    docs = ingest_corpus()
    base = run_pipeline(docs, tokenizer=None)
    val_doc = max(base.val, key=lambda d: len(d.text))
    passage = " ".join(val_doc.text.split()[10:40])  # 30 words of an eval document
    victim = base.train[len(base.train) // 2]
    assert victim.id in {d.id for d in base.train}
    lines = victim.text.split("\n")
    planted = "\n".join(lines[:3] + ["# " + passage] + lines[3:])
    docs2 = [Document(d.id, planted, d.source) if d.id == victim.id else d for d in docs]
    res = run_pipeline(docs2, tokenizer=None)
    assert victim.id not in {d.id for d in res.train}
    hits = [r for r in res.removed if r.id == victim.id]
    assert len(hits) == 1 and hits[0].stage == "decontaminate"
    assert res.removed_counts["decontaminate"] == base.removed_counts["decontaminate"] + 1


def test_decontaminate_small_cases():
    ev = [Document("e", "the quick brown fox jumps over the lazy dog", "s")]
    tr = [
        Document("t1", "a quick brown cat jumps over a lazy dog", "s"),  # no shared 4-gram
        Document("t2", "then: the   quick\nbrown fox ran", "s"),  # shares "the quick brown fox"
        Document("t3", "fox", "s"),
    ]
    kept, removed = decontaminate(tr, ev, n=4)
    assert [d.id for d in kept] == ["t1", "t3"]
    assert [r.id for r in removed] == ["t2"]
    assert decontaminate(tr, [], n=4) == (tr, [])


def test_shards_cover_every_document_exactly_once(corpus_result):
    r = corpus_result
    seen = Counter(i for s in r.shards for i in s.doc_ids)
    assert set(seen) == set(r.documents()) and max(seen.values()) == 1
    for s in r.shards:
        split_ids = {d.id for d in (r.train if s.split == "train" else r.val)}
        assert set(s.doc_ids) <= split_ids
    assert [s.index for s in r.shards if s.split == "train"] == list(
        range(sum(s.split == "train" for s in r.shards))
    )


def test_shard_boundaries():
    docs = [Document(str(i), "x" * 10, "s") for i in range(7)]
    shards = shard(docs, "train", shard_bytes=25)
    assert [len(s.doc_ids) for s in shards] == [3, 3, 1]
    assert [s.n_bytes for s in shards] == [30, 30, 10]
    assert shard([], "train") == []
    with pytest.raises(ValueError, match="shard_bytes"):
        shard(docs, "train", shard_bytes=0)


def test_stats_equal_recomputation_from_shards(corpus_result, shipped_tok):
    r = corpus_result
    again = recompute_stats(r.shards, r.documents(), shipped_tok)
    assert again == r.stats
    assert r.stats["all"].docs == len(r.documents())
    assert r.stats["all"].bytes == sum(len(d.text.encode()) for d in r.documents().values())


def test_recompute_detects_a_tampered_document(corpus_result):
    docs = dict(corpus_result.documents())
    some = corpus_result.train[0]
    docs[some.id] = Document(some.id, some.text + "# extra\n", some.source)
    with pytest.raises(ValueError, match="differs from its recorded digest"):
        recompute_stats(corpus_result.shards, docs)


def test_clean_normalizes_and_drops():
    docs = [
        Document("crlf", "def f():\r\n    return 1   \r\n\r\n" + "# pad\n" * 20, "s"),
        Document("ctl", "x = 1\x00" + "y" * 100, "s"),
        Document("short", "x = 1\n", "s"),
    ]
    kept, removed = clean(docs)
    assert [d.id for d in kept] == ["crlf"]
    assert "\r" not in kept[0].text and "   \n" not in kept[0].text
    assert kept[0].text.endswith("# pad\n") and not kept[0].text.endswith("\n\n")
    assert {r.id: r.reason for r in removed} == {
        "ctl": "control characters",
        "short": "shorter than 64 chars",
    }


def test_ingest_format():
    docs = ingest_text("<|doc|> a.py\nimport x\n\n\n\ndef f():\n    pass\n<|doc|> b.py\ny = 1\n")
    assert [(d.id, d.source) for d in docs] == [
        ("a.py#0", "a.py"),
        ("a.py#1", "a.py"),
        ("b.py#0", "b.py"),
    ]
    with pytest.raises(ValueError, match="must start with"):
        ingest_text("no marker")


def test_split_is_by_source_and_deterministic(corpus_result):
    tr, va = split_documents(corpus_result.deduped)
    assert not ({d.source for d in tr} & {d.source for d in va})
    assert split_documents(corpus_result.deduped) == (tr, va)
    tr2, va2 = split_documents(corpus_result.deduped, seed=1)
    assert {d.source for d in va2} != {d.source for d in va}


def test_pipeline_is_deterministic(corpus_result, shipped_tok):
    again = run_pipeline(tokenizer=shipped_tok)
    assert again.shards == corpus_result.shards
    assert again.summary() == corpus_result.summary()


def test_lm_token_arrays(corpus_result, shipped_tok):
    tr, va = lm_token_arrays()
    for arr in (tr, va):
        assert arr.dtype == np.int32 and arr.ndim == 1 and arr.flags.c_contiguous
        assert arr.min() >= 0 and arr.max() < shipped_tok.vocab_size
    assert tr.size == corpus_result.stats["train"].tokens
    assert va.size == corpus_result.stats["val"].tokens
    assert shipped_tok.decode(va) == "".join(d.text for d in corpus_result.val).encode()
    tr2, va2 = lm_token_arrays()
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)


_WORDS = ["alpha", "beta", "gamma", "delta", "x", "=", "1", "return", "def", "(self):"]


@st.composite
def documents(draw):  # type: ignore[no-untyped-def]
    n_docs = draw(st.integers(1, 25))
    out = []
    for i in range(n_docs):
        words = draw(st.lists(st.sampled_from(_WORDS), max_size=30))
        seps = draw(
            st.lists(
                st.sampled_from([" ", "\n", "  ", "\t"]), min_size=len(words), max_size=len(words)
            )
        )
        text = "".join(w + s for w, s in zip(words, seps, strict=True))
        source = f"f{draw(st.integers(0, 5))}.py"
        out.append(Document(f"{source}#{i}", text, source))
    return out


@settings(max_examples=60, deadline=None)
@given(documents(), st.integers(1, 4), st.integers(1, 200))
def test_pipeline_invariants_property(docs, n, shard_bytes):
    r = run_pipeline(
        docs, n=n, eval_fraction=0.3, min_chars=1, shard_bytes=shard_bytes, tokenizer=None
    )
    # dedupe
    keys = [dedupe_key(d.text) for d in r.deduped]
    assert len(keys) == len(set(keys))
    # decontaminate (checked on word tuples, not hashes)
    val_grams: set[tuple[bytes, ...]] = set()
    for d in r.val:
        val_grams |= word_ngrams(d.text, n)
    for d in r.train:
        assert not (word_ngrams(d.text, n) & val_grams)
    # and nothing was removed that did not share an n-gram
    removed = {x.id for x in r.removed if x.stage == "decontaminate"}
    for d in r.deduped:
        if d.id in removed:
            assert word_ngrams(d.text, n) & val_grams
    # shards cover every final document exactly once; stats recompute
    seen = Counter(i for s in r.shards for i in s.doc_ids)
    assert set(seen) == set(r.documents()) and (not seen or max(seen.values()) == 1)
    assert recompute_stats(r.shards, r.documents()) == {
        **({"train": r.stats["train"]} if r.train else {}),
        **({"val": r.stats["val"]} if r.val else {}),
        "all": r.stats["all"],
    }
