from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.data.manifest import dataset_path, load_manifest
from kernels.data.pii import KINDS, luhn_valid, redact, scan_documents, scan_text, summarize
from kernels.data.pipeline import ingest_corpus

PLANTED = {
    "email": "jane.doe+ml@university.edu",
    "phone": "(415) 555-0132",
    "card": "4539 1488 0343 6467",
    "ipv4": "81.2.69.160",
    "ssn": "123-45-6789",
}


def test_planted_findings_are_found_with_offsets_and_redacted_samples():
    text = "prefix text\n"
    where = {}
    for kind, value in PLANTED.items():
        text += f"{kind} here: "
        where[kind] = len(text)
        text += value + " and more words.\n"
    found = scan_text(text)
    assert summarize(found) == {k: 1 for k in KINDS}
    for f in found:
        assert f.offset == where[f.kind]
        assert text[f.offset : f.offset + f.length] == PLANTED[f.kind]
        assert f.sample != PLANTED[f.kind] and "*" in f.sample


@pytest.mark.parametrize(
    "value,kind",
    [
        ("bob@mail.example.co.uk", "email"),
        ("+44 20 7946 0958", "phone"),
        ("+1-202-555-0173", "phone"),
        ("202.555.0173", "phone"),
        ("4111111111111111", "card"),
        ("5500-0000-0000-0004", "card"),
        ("378282246310005", "card"),
        ("10.0.0.1", "ipv4"),
        ("255.254.1.0", "ipv4"),
        ("078-05-1120", "ssn"),
    ],
)
def test_each_kind(value: str, kind: str):
    found = scan_text(f"see {value}, thanks")
    assert [f.kind for f in found] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "0000 0000 0000 0000 is all one digit",
        "an ip 256.1.1.1 and 1.2.3.999 and 01.2.3.4",
        "version 1.2.3.4.5 and 3.11.7",
        "loopback 127.0.0.1, any 0.0.0.0, doc range 192.0.2.7 and 203.0.113.9",
        "ssn-like 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000",
        "reserved user@example.com, a@b.test, x@y.invalid",
        "numbers 1234567890 and 12345 and 3.14159265358979",
        "def f(x): return x @ y  # matmul, not email",
        "range(0, 10), 2024-01-15, 12:30:45, 0x7fffffff",
    ],
)
def test_false_positive_care(text: str):
    assert scan_text(text) == []


def test_luhn():
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert luhn_valid("4539148803436467")
    assert not luhn_valid("")
    assert not luhn_valid("12a4")


def test_shipped_corpus_is_clean_and_flag_matches():
    text = dataset_path("pystdlib").read_text(encoding="utf-8")
    assert scan_text(text) == []
    m = load_manifest()
    assert m["pystdlib"].pii is False
    assert m["pystdlib"].extra["pii_scan"]["findings"] == {k: 0 for k in KINDS}


def test_pii_planted_in_a_copy_of_the_corpus_is_found():
    docs = ingest_corpus()[:50]
    victim = docs[17]
    docs[17] = type(victim)(
        victim.id, victim.text + f"\n# contact {PLANTED['email']}\n", victim.source
    )
    found = scan_documents(docs)
    assert [(f.doc_id, f.kind) for f in found] == [(victim.id, "email")]
    assert scan_documents([(d.id, d.text) for d in docs]) == found


def test_redact_removes_every_finding():
    text = ", ".join(PLANTED.values())
    red = redact(text)
    assert scan_text(red) == []
    for v in PLANTED.values():
        assert v not in red
    assert red == "<email>, <phone>, <card>, <ipv4>, <ssn>"


def test_scan_validates_arguments():
    with pytest.raises(ValueError, match="must be str"):
        scan_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        scan_text("x", kinds=["passport"])
    assert scan_text(PLANTED["email"] + " " + PLANTED["ssn"], kinds=["ssn"])[0].kind == "ssn"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_scanner_never_crashes_and_findings_are_sane(text: str):
    found = scan_text(text)
    end = -1
    for f in found:
        assert f.kind in KINDS
        assert 0 <= f.offset and f.offset + f.length <= len(text)
        assert f.offset >= end  # sorted, non-overlapping
        end = f.offset + f.length


def test_adjacent_numbers_do_not_make_a_card():
    # a short local number right before a grouped card must not merge into a longer "card"
    text = "call 555-0132 4539 1488 0343 6467 now"
    assert [(f.kind, text[f.offset : f.offset + f.length]) for f in scan_text(text)] == [
        ("card", "4539 1488 0343 6467")
    ]


# Texts dense in what the detectors look at: digits (an Arabic-Indic one too, which
# ``\d`` also matches), the separators, "@", letters and line breaks of both kinds.
PII_ALPHABET = "0123456789٣@.-+()% _\n\rabcxyzCOM"
PII_TEXTS = st.lists(
    st.one_of(st.text(PII_ALPHABET, max_size=30), st.sampled_from(list(PLANTED.values()))),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(PII_TEXTS)
def test_searching_only_the_lines_that_can_match_finds_what_the_whole_text_does(text: str):
    # scan_text searches only the runs of lines holding "@" (emails) or a digit (the
    # rest): each detector must find exactly what searching the whole text finds
    from kernels.data import pii

    whole = [(0, len(text))]
    for _, detect, needle in pii._DETECTORS:
        assert list(detect(text, pii._line_runs(needle, text))) == list(detect(text, whole))
