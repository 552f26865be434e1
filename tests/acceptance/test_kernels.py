"""The helpers behind contracts/kernels.yaml: error measures, finite differences,
kernel cases, the strategies, the mutants and the server's prompt handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from acceptance import kernel_cases as C
from acceptance import kernel_references as ref
from acceptance import kernels as K
from falsifiers.mutants import kernels as M
from falsifiers.strategies import kernels as S


def test_rel_err_scales_by_the_reference_and_flags_nonfinite():
    want = np.array([1.0, -4.0])
    assert K.rel_err(want, want) == 0.0
    assert K.rel_err(np.array([1.0, -3.0]), want) == pytest.approx(0.25)
    assert K.rel_err(np.array([np.nan, -4.0]), want) == math.inf
    assert K.rel_err(np.zeros(2), np.zeros(2)) == 0.0
    assert K.rel_err(np.ones(3), want) == math.inf  # shape mismatch


def test_grad_err_uses_one_scale_for_all_inputs():
    numeric = {"a": np.array([1.0, 2.0]), "b": np.array([1e-14])}
    analytic = {"a": np.array([1.0, 2.0]), "b": np.array([3e-14])}
    assert K.grad_err(analytic, numeric) == pytest.approx(1e-14)
    assert K.grad_err({"a": np.array([1.0, np.inf]), "b": numeric["b"]}, numeric) == math.inf
    # a difference far below the finite-difference noise floor is not an error
    tiny = {"a": np.array([1e-12])}
    assert K.grad_err({"a": np.array([2e-12])}, tiny) == pytest.approx(1.0)
    assert K.grad_err({"a": np.array([2e-12])}, tiny, {"a": 1e-10}) == 0.0
    assert K.grad_err({"a": np.array([2e-12])}, tiny, {"a": 1e-14}) == pytest.approx(0.9)


def test_finite_differences_of_a_known_function():
    x0 = np.array([[0.5, -2.0, 3.0]])
    case = C.KernelCase(
        "square",
        {"x": x0.copy()},
        lambda x, dt: [np.asarray(x["x"], dtype=dt) ** 2],
        lambda x: [x["x"] ** 2],
    )
    douts = [np.array([[1.0, 2.0, -1.0]])]
    fd, noise = K.finite_difference_grads(case, douts)
    assert 0 < noise["x"] < 1e-8
    np.testing.assert_allclose(fd["x"], 2 * x0 * douts[0], rtol=1e-8)
    np.testing.assert_array_equal(case.inputs["x"], x0)  # inputs restored


def test_strategy_kernel_names_are_the_case_table():
    """falsifiers/strategies/kernels.py keeps its own list (the attack library never
    imports the checks): it must name exactly the kernels that have cases, in order."""
    assert S.KERNEL_NAMES == list(C.KERNELS)


@pytest.mark.parametrize("name", C.KERNELS)
def test_every_kernel_case_matches_its_reference(name):
    r = K.measure_kernel(name, {"b": 1, "t": 3, "h": 2, "hd": 2, "d": 4, "v": 5}, 1.0, 7)
    assert r["fwd64_err"] < 1e-12
    assert r["fwd32_err"] < 1e-5
    assert r["bwd_err"] < 1e-5
    assert r["nonfinite"] == 0


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="unknown kernel"):
        C.make_case("conv2d", {}, 1.0, 0)


@settings(max_examples=15, deadline=None)
@given(S.kernel_params())
def test_kernel_strategy_gives_buildable_cases(params):
    case = C.make_case(params["kernel"], params["shape"], params["scale"], params["seed"])
    assert case.inputs and all(np.all(np.isfinite(a)) for a in case.inputs.values())


@settings(max_examples=25, deadline=None)
@given(S.causality_params())
def test_causality_strategy_keeps_t_before_the_end(params):
    (t,) = params["t"]
    assert 0 <= t < params["seq_len"] - 1


@settings(max_examples=10, deadline=None)
@given(S.byte_input_params())
def test_byte_strategy_is_json_hex(params):
    assert all(isinstance(bytes.fromhex(h), bytes) for h in params["inputs_hex"])


def test_xent_mutant_agrees_on_small_logits_and_overflows_on_large():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 7)).astype(np.float32)
    t = np.array([0, 3, 6])
    np.testing.assert_allclose(
        M.xent_rows_without_max(z, t), ref.cross_entropy_rows(z, t), rtol=1e-5
    )
    assert not np.all(np.isfinite(M.xent_rows_without_max(z * 1e4, t)))


def test_numpy_attention_mutant_is_exact_without_the_bug_and_peeks_with_it():
    rng = np.random.default_rng(1)
    b, t, h, hd = 2, 4, 2, 3
    q, k, v = (rng.standard_normal((b, t, h * hd)) for _ in range(3))
    qkv = np.concatenate([q, k, v], axis=2).reshape(b * t, 3 * h * hd)
    out, probs = M._np_attention(qkv, b, t, h)
    ref_out, ref_p = ref.causal_attention(q, k, v, h)
    np.testing.assert_allclose(out.reshape(b, t, -1), ref_out, atol=1e-12)
    np.testing.assert_allclose(probs, ref_p, atol=1e-12)
    _, peek = M.attn_fwd_sees_next(qkv, b, t, h)
    assert np.all(peek[:, :, 0, 1] > 0)  # position 0 sees position 1


def test_prompt_ids_serves_empty_as_newline_and_keeps_the_end():
    from kernels.data.pipeline import shipped_tokenizer
    from kernels.serving import prompt_ids

    tok = shipped_tokenizer()
    np.testing.assert_array_equal(prompt_ids(tok, b"", 16), tok.encode("\n"))
    long = b"x = 1\n" * 100
    ids = prompt_ids(tok, long, 16)
    assert len(ids) == 15
    np.testing.assert_array_equal(ids, tok.encode(long)[-15:])
