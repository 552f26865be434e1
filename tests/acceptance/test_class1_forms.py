"""Issue 13, class 1 (oracles narrower than the spec): the generators plant every form
the component documents, and each form-only mutant is caught by the widened check
while the narrow one stayed green."""

from __future__ import annotations

import numpy as np
import pytest

from acceptance.data_copies import DECOY_FORMS, PII_FORMS, make_decoy, make_pii
from acceptance.data_pipeline import DUPLICATE_FORMS, respace
from falsifiers.mutants import data_forms, kernels_forms, training_forms
from kernels.data import pii


@pytest.mark.parametrize("kind", sorted(PII_FORMS))
def test_every_documented_pii_form_is_found_at_its_span(kind):
    rng = np.random.default_rng(0)
    for _ in range(20):
        for form in PII_FORMS[kind]:
            item = make_pii(kind, rng, form)
            found = pii.scan_text(f"see {item} here")
            assert [(f.kind, f.offset, f.length) for f in found] == [(kind, 4, len(item))], (
                form,
                item,
            )


@pytest.mark.parametrize("kind", sorted(DECOY_FORMS))
def test_no_documented_look_alike_is_reported(kind):
    rng = np.random.default_rng(1)
    for _ in range(20):
        for form in DECOY_FORMS[kind]:
            decoy = make_decoy(kind, rng, form)
            assert pii.scan_text(f"see {decoy} here") == [], (form, decoy)


@pytest.mark.parametrize(
    ("name", "value", "kind", "form", "decoy"),
    [
        ("_PHONE", data_forms.PHONE_DASHES_ONLY, "phone", "dots", False),
        ("_CARD", data_forms.CARD_WITHOUT_DINERS, "card", "4-6-4-spaces", False),
        ("_IPV4", data_forms.IPV4_IN_VERSION_STRINGS, "ipv4", "version-string", True),
        (
            "_RESERVED_EMAIL_SUBDOMAINS",
            data_forms.RESERVED_EMAIL_SUFFIX_WITHOUT_DOT,
            "email",
            "near-reserved-domain",
            False,
        ),
    ],
)
def test_each_pii_mutant_differs_on_its_form_only(monkeypatch, name, value, kind, form, decoy):
    rng = np.random.default_rng(2)
    monkeypatch.setattr(pii, name, value)
    make = make_decoy if decoy else make_pii
    item = make(kind, rng, form)
    assert bool(pii.scan_text(f"see {item} here")) == decoy  # wrong on the form
    others = DECOY_FORMS[kind] if decoy else PII_FORMS[kind]
    untouched = [f for f in others if f != form and not f.startswith(form[:5])]
    for other in untouched[:3]:  # ... and right on the forms the old generator planted
        assert bool(pii.scan_text(f"see {make(kind, rng, other)} here")) != decoy


def test_every_duplicate_form_has_the_same_words_and_is_removed():
    from kernels.data.pipeline import Document, clean, deduplicate, ingest_corpus

    docs = [d for d in ingest_corpus() if len(d.text) > 200][:20]
    rng = np.random.default_rng(0)
    for form in DUPLICATE_FORMS:
        for d in docs:
            copy = respace(d.text, form, rng)
            assert copy.split() == d.text.split()
            cleaned, _ = clean([d, Document(d.id + "#dup", copy, d.source)])
            kept, removed = deduplicate(cleaned)
            assert [r.id for r in removed] == [d.id + "#dup"], form
            if form in ("exact", "doubled-spaces"):  # the forms the old check planted
                keys = {data_forms.dedupe_key_spaces_only(c.text) for c in cleaned}
                assert len(keys) == 1  # ... on which the spaces-only key is right


def test_the_adamw_case_runs_with_clipping_and_catches_per_tensor_clipping(monkeypatch):
    from acceptance.kernels import measure_kernel
    from kernels import optim

    assert measure_kernel("adamw", {}, 1e4, 3)["fwd64_err"] <= 1e-12
    monkeypatch.setattr(optim.AdamW, "step", kernels_forms.adamw_step_clipping_per_tensor)
    assert measure_kernel("adamw", {}, 1e4, 3)["fwd64_err"] > 1e-6


def test_the_prompt_mutant_differs_on_the_empty_str_only():
    from kernels.data.pipeline import shipped_tokenizer
    from kernels.serving import prompt_ids

    tok = shipped_tokenizer()
    for prompt in (b"", b"def ", "def ", "caf\u00e9"):
        got = kernels_forms.prompt_ids_empty_bytes_only(tok, prompt, 32)
        assert np.array_equal(got, prompt_ids(tok, prompt, 32))
    assert kernels_forms.prompt_ids_empty_bytes_only(tok, "", 32).size == 0
    assert np.array_equal(prompt_ids(tok, "", 32), tok.encode("\n"))


def test_data_parallel_equal_weights_is_wrong_only_on_an_uneven_split(monkeypatch):
    from kernels.config import ModelConfig
    from kernels.models.registry import build_model
    from kernels.parallel import DataParallel

    model = build_model(ModelConfig("gpt2", 1, 16, 2, 8, 37))
    params = model.init_params(0)
    tokens = np.random.default_rng(0).integers(0, 37, (7, 9)).astype(np.int32)
    with DataParallel(model, 2) as dp:
        for rows, wrong in ((tokens[:6], False), (tokens, True)):
            _, want = model.loss_and_grads(params, rows)
            _, got = training_forms.data_parallel_equal_weights(dp, params, rows)
            _, real = dp.loss_and_grads(params, rows)
            err = max(float(np.abs(got[n] - want[n]).max()) for n in want)
            real_err = max(float(np.abs(real[n] - want[n]).max()) for n in want)
            assert real_err < 1e-5
            assert (err > 1e-4) == wrong
