"""Kernels and inference checks (contracts/kernels.yaml).

Every check runs the real numba core (kernels/ops, kernels/models, kernels/optim,
kernels/infer) and observes; the thresholds live in the YAML:

- ``kernel_correctness``: each kernel's forward against its float64 NumPy reference
  (acceptance/kernel_references.py, on the cases of acceptance/kernel_cases.py), its
  backward against central finite differences, and no NaN/inf, at each requested
  value scale (logits ~1e4 included);
- ``causality``: changing the tokens after position t never changes the logits at
  positions <= t (both families);
- ``runtime_parity``: a checkpoint trained by ``kernels.train.train`` gives the same
  logits in the numba engine and the plain-NumPy reference engine, and generation
  with and without the KV cache gives the same tokens and logits;
- ``inference_robustness``: arbitrary byte strings, through the shipped tokenizer and
  the server's prompt handling (empty prompt, prompt longer than the context), give a
  finite next-token distribution that sums to 1, and sampling from it does not crash.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from acceptance.kernel_cases import KERNELS, KernelCase, make_case
from harness.context import CheckContext

# ----------------------------------------------------------------------------- measures


def rel_err(got: np.ndarray, want: np.ndarray, floor: float = 0.0) -> float:
    """max |got - want| / max(max |want|, floor); inf when got has NaN/inf.

    ``floor`` keeps an output that is all ~1e-35 (silu far below zero, which the
    kernel flushes to an exact 0) from turning a 1e-35 difference into 100%.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf
    if not np.all(np.isfinite(got)):
        return math.inf
    denom = max(float(np.max(np.abs(want))) if want.size else 0.0, floor)
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if denom == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / denom


def grad_err(
    analytic: dict[str, np.ndarray],
    numeric: dict[str, np.ndarray],
    noise: dict[str, float] | None = None,
) -> float:
    """max over inputs of (|analytic - numeric| - 10 * noise)+ / G, G = the largest
    numeric gradient entry over all inputs: the relative error beyond what finite
    differences can resolve.

    One scale for all inputs: a tensor whose gradient is ~1e-14 next to others ~1
    (saturated softmax, a constant row in a norm) is compared at the scale of the
    whole gradient. ``noise`` is each input's finite-difference noise floor (rounding
    of the objective divided by the step); a difference below it cannot be told apart.
    """
    g_max = max((float(np.max(np.abs(g))) for g in numeric.values() if g.size), default=0.0)
    worst = 0.0
    for k, g in numeric.items():
        a = np.asarray(analytic[k], dtype=np.float64)
        if a.shape != g.shape or not np.all(np.isfinite(a)):
            return math.inf
        if not g.size:
            continue
        excess = max(0.0, float(np.max(np.abs(a - g))) - 10.0 * (noise or {}).get(k, 0.0))
        if excess and g_max == 0.0:
            return math.inf
        if excess:
            worst = max(worst, excess / g_max)
    return worst


def nonfinite(arrays: Any) -> int:
    if isinstance(arrays, dict):
        arrays = list(arrays.values())
    return int(sum(np.size(a) - np.count_nonzero(np.isfinite(a)) for a in arrays))


def finite_difference_grads(
    case: KernelCase, douts: list[np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Central differences in float64 of ``sum(douts[i] * outputs[i])`` w.r.t. every
    input, and each input's noise floor.

    The step is relative to the tensor's magnitude (1e-6 of its largest entry). The
    noise floor is float64 rounding of the objective and of the inputs it is computed
    from, ``eps * (sum |douts * outputs| + sum |douts| * max |inputs|)``, over the step.
    """
    k = case.n_grad_outputs

    def objective(x: dict[str, np.ndarray]) -> float:
        outs = case.forward(x, np.float64)
        return float(sum(np.sum(douts[i] * outs[i]) for i in range(k)))

    outs0 = case.forward(case.inputs, np.float64)
    x_max = max(float(np.max(np.abs(a))) for a in case.inputs.values() if a.size)
    magnitude = sum(
        float(np.sum(np.abs(douts[i] * outs0[i]))) + float(np.sum(np.abs(douts[i]))) * x_max
        for i in range(k)
    )
    grads = {}
    noise = {}
    for name, arr in case.inputs.items():
        x = {kk: vv.copy() for kk, vv in case.inputs.items()}
        flat = x[name].reshape(-1)
        step = 1e-6 * max(float(np.max(np.abs(arr))), 1e-300)
        g = np.zeros(arr.size)
        for i in range(arr.size):
            old = flat[i]
            f = {}
            for j in (-2, -1, 1, 2):
                flat[i] = old + j * step
                f[j] = objective(x)
            flat[i] = old
            # five-point stencil: truncation O(step^4), so that a step of 1e-6 * max|x|
            # (0.01 at scale 1e4) is still exact enough for entries near GELU's curvature
            g[i] = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * step)
        grads[name] = g.reshape(arr.shape)
        # rounding of each objective, times the stencil's weights (18/12), over the step
        noise[name] = 1.5 * float(np.finfo(np.float64).eps) * magnitude / step
    return grads, noise


def measure_kernel(
    name: str, shape: dict[str, int], scale: float, seed: int, abs_floor: float = 0.0
) -> dict[str, Any]:
    """Forward errors (float32, float64) relative to the reference's largest entry (or
    ``abs_floor`` when that is smaller), backward error vs finite differences, NaN/inf."""
    case = make_case(name, shape, scale, seed)
    want = case.reference(case.inputs)
    out32 = case.forward(case.inputs, np.float32)
    out64 = case.forward(case.inputs, np.float64)
    res: dict[str, Any] = {
        "kernel": name,
        "scale": scale,
        "fwd32_err": max(rel_err(o, w, abs_floor) for o, w in zip(out32, want, strict=True)),
        "fwd64_err": max(rel_err(o, w, abs_floor) for o, w in zip(out64, want, strict=True)),
        "nonfinite": nonfinite(out32) + nonfinite(out64),
        "bwd_err": 0.0,
    }
    if case.backward is not None:
        rng = np.random.default_rng(seed + 1)
        douts = [rng.standard_normal(o.shape) for o in want[: case.n_grad_outputs]]
        an64 = case.backward(case.inputs, douts, np.float64)
        an32 = case.backward(case.inputs, douts, np.float32)
        fd, noise = finite_difference_grads(case, douts)
        res["bwd_err"] = grad_err(an64, fd, noise)
        res["nonfinite"] += nonfinite(an64) + nonfinite(an32)
    return res


def _as_list(value: Any, default: list[Any]) -> list[Any]:
    if value is None or value == "all":
        return list(default)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def kernel_correctness(ctx: CheckContext) -> dict[str, Any]:
    """Every requested kernel at every requested scale, forward vs its NumPy reference,
    backward vs central finite differences, with no NaN/inf.

    params: ``kernel`` (a name, a list, or "all"), ``scale`` (a number or a list;
    softmax kernels read it as the size of the logits), ``shape`` (b, t, h, hd, d, v),
    ``seed`` (defaults to the run's seed), ``abs_floor`` (forward errors are relative
    to the reference's largest entry, or to this when that is smaller).
    """
    p = ctx.params
    names = _as_list(p.get("kernel"), list(KERNELS))
    scales = [float(x) for x in _as_list(p.get("scale"), [1.0, 1e4])]
    shape = dict(p.get("shape") or {})
    seed = int(p.get("seed", ctx.seed))
    abs_floor = float(p.get("abs_floor", 0.0))
    rows = []
    for name in names:
        for scale in scales:
            r = measure_kernel(name, shape, scale, seed, abs_floor)
            rows.append(r)
            for key in ("fwd32_err", "fwd64_err", "bwd_err"):
                ctx.metric(f"{name}.{key}", r[key] if math.isfinite(r[key]) else 1e300)
    ctx.attach_json("kernels.json", rows)

    def worst(key: str) -> tuple[float, str]:
        r = max(rows, key=lambda r: r[key])
        return float(r[key]), f"{r['kernel']}@{r['scale']:g}"

    fwd32, fwd32_at = worst("fwd32_err")
    fwd64, fwd64_at = worst("fwd64_err")
    bwd, bwd_at = worst("bwd_err")
    return {
        "kernels": len(set(names)),
        "cases": len(rows),
        "max_fwd32_err": _jsonable(fwd32),
        "max_fwd32_err_at": fwd32_at,
        "max_fwd64_err": _jsonable(fwd64),
        "max_fwd64_err_at": fwd64_at,
        "max_bwd_err": _jsonable(bwd),
        "max_bwd_err_at": bwd_at,
        "nonfinite": sum(r["nonfinite"] for r in rows),
        "max_scale": max(scales),
    }


def _jsonable(x: float) -> float:
    """inf/NaN as a huge finite number (observations must be JSON)."""
    return x if math.isfinite(x) else 1e300


# ----------------------------------------------------------------------------- models


def small_config(family: str, **overrides: Any) -> Any:
    from kernels.config import ModelConfig

    fields: dict[str, Any] = {
        "family": family,
        "n_layer": 2,
        "d_model": 16,
        "n_head": 2,
        "n_ctx": 16,
        "vocab_size": 37,
    }
    fields.update(overrides)
    return ModelConfig(**fields)


def causality(ctx: CheckContext) -> dict[str, Any]:
    """Logits at positions <= t do not change when the tokens after t change.

    params: ``families``, ``seq_len``, ``t`` (or "all": every t in 0..seq_len-2),
    ``seed``, ``n_ctx``, ``vocab_size``. Also observes that the change after t does
    change the logits after t (the perturbation took effect).
    """
    from kernels.models.registry import build_model

    p = ctx.params
    families = _as_list(p.get("families"), ["gpt2", "llama"])
    seed = int(p.get("seed", ctx.seed))
    seq_len = int(p.get("seq_len", 12))
    n_ctx = max(int(p.get("n_ctx", 16)), seq_len)
    vocab = int(p.get("vocab_size", 37))
    positions = p.get("t", "all")
    ts = list(range(seq_len - 1)) if positions == "all" else _as_list(positions, [])
    rng = np.random.default_rng(seed)
    worst_prefix = 0.0
    min_suffix = math.inf
    checked = 0
    for family in families:
        model = build_model(small_config(family, n_ctx=n_ctx, vocab_size=vocab))
        params = model.init_params(seed % (2**31))
        tokens = rng.integers(0, vocab, (2, seq_len)).astype(np.int32)
        base = model.forward(params, tokens)
        for t in ts:
            t = int(t)
            if not 0 <= t < seq_len - 1:
                raise ValueError(f"t={t} must lie in [0, seq_len - 1) = [0, {seq_len - 1})")
            changed = tokens.copy()
            tail = changed[:, t + 1 :]
            changed[:, t + 1 :] = (tail + rng.integers(1, vocab, tail.shape)) % vocab
            logits = model.forward(params, changed)
            worst_prefix = max(
                worst_prefix, float(np.abs(logits[:, : t + 1] - base[:, : t + 1]).max())
            )
            min_suffix = min(min_suffix, float(np.abs(logits[:, t + 1 :] - base[:, t + 1 :]).max()))
            checked += 1
    return {
        "families": len(families),
        "positions_checked": checked,
        "max_prefix_change": worst_prefix,
        "min_suffix_change": _jsonable(min_suffix),
    }


def runtime_parity(ctx: CheckContext) -> dict[str, Any]:
    """A checkpoint trained by ``kernels.train.train`` (a few steps, in scratch) gives
    the same logits in the numba engine and the NumPy reference engine, and the same
    tokens and logits generated with and without the KV cache.

    params: ``families``, ``steps``, ``model`` (ModelConfig overrides), ``prompts``,
    ``prompt_len``, ``new_tokens``, ``temperature``, ``top_k``.
    """
    from kernels.checkpoint import load_checkpoint
    from kernels.data.pipeline import lm_token_arrays
    from kernels.infer import generate
    from kernels.reference import reference_forward, reference_loss
    from kernels.serving import model_from_checkpoint
    from kernels.train import TrainConfig, train

    p = ctx.params
    families = _as_list(p.get("families"), ["gpt2", "llama"])
    model_over = dict(p.get("model") or {"n_layer": 2, "d_model": 32, "n_head": 2, "n_ctx": 32})
    steps = int(p.get("steps", 4))
    n_prompts = int(p.get("prompts", 3))
    prompt_len = int(p.get("prompt_len", 6))
    new_tokens = int(p.get("new_tokens", 16))
    temperature = float(p.get("temperature", 0.8))
    top_k = int(p.get("top_k", 20))
    _, val = lm_token_arrays()
    rng = ctx.numpy_rng()
    out: dict[str, Any] = {
        "families": len(families),
        "max_logit_rel_err": 0.0,
        "max_loss_diff": 0.0,
        "max_cache_logit_rel_err": 0.0,
        "greedy_mismatches": 0,
        "sampled_mismatches": 0,
        "generations": 0,
        "cache_errors": 0,
        "first_error": "",
    }
    for family in families:
        run = train(
            TrainConfig(
                family=family,
                model=model_over,
                seed=ctx.seed % 1000,
                steps=steps,
                eval_every=steps,
                ckpt_every=steps,
                eval_windows=8,
                batch_size=4,
                threads=1,
            ),
            ctx.scratch / f"run-{family}",
        )
        loaded = load_checkpoint(run.checkpoint)
        model, mcfg = model_from_checkpoint(loaded)
        params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
        n_ctx = mcfg.n_ctx
        starts = rng.integers(0, len(val) - n_ctx - 1, 2)
        windows = np.stack([val[s : s + n_ctx + 1] for s in starts]).astype(np.int32)
        # engine parity on the checkpoint: logits and the loss
        got = model.forward(params, windows[:, :-1])
        p64 = {k: v.astype(np.float64) for k, v in params.items()}
        want = reference_forward(family, mcfg, p64, windows[:, :-1])
        out["max_logit_rel_err"] = max(out["max_logit_rel_err"], rel_err(got, want))
        loss, _ = model.loss_and_grads(params, windows)
        out["max_loss_diff"] = max(
            out["max_loss_diff"], abs(loss - reference_loss(family, mcfg, p64, windows))
        )
        # KV cache vs full forward: logits position by position, then generated tokens
        seq = windows[:, : n_ctx - 1]
        full = model.forward(params, seq)
        try:
            cache = model.new_cache(seq.shape[0])
            stepped = np.stack(
                [model.forward_step(params, seq[:, j], cache) for j in range(seq.shape[1])], 1
            )
            cache_err = rel_err(stepped, full)
        except Exception as exc:  # observed: the cache must decode the whole context
            cache_err = math.inf
            out["cache_errors"] += 1
            out["first_error"] = out["first_error"] or f"{type(exc).__name__}: {exc}"
        out["max_cache_logit_rel_err"] = max(out["max_cache_logit_rel_err"], _jsonable(cache_err))
        for i in range(n_prompts):
            s = int(rng.integers(0, len(val) - prompt_len))
            prompt = val[s : s + prompt_len].astype(np.int32)
            n_new = min(new_tokens, n_ctx - prompt_len)
            for temp, k, key in (
                (0.0, 0, "greedy_mismatches"),
                (temperature, top_k, "sampled_mismatches"),
            ):
                seed = ctx.seed + i
                try:
                    with_cache = generate(
                        model, params, prompt, n_new, temp, k, seed, use_cache=True
                    )
                    without = generate(model, params, prompt, n_new, temp, k, seed, use_cache=False)
                    same = bool(np.array_equal(with_cache, without))
                except Exception as exc:  # observed: generation must not fail either way
                    same = False
                    out["cache_errors"] += 1
                    out["first_error"] = out["first_error"] or f"{type(exc).__name__}: {exc}"
                out[key] += 0 if same else 1
                out["generations"] += 1
    ctx.attach_json("parity.json", out)
    return out


# ----------------------------------------------------------------------------- robustness


def default_inputs(rng: np.random.Generator, count: int, max_len: int) -> list[bytes]:
    """Empty, short ASCII, invalid UTF-8, multi-byte UTF-8, a long text, then ``count``
    random byte strings."""
    fixed = [
        b"",
        b"def ",
        b"\xff\xfe\x00\x80 invalid utf-8 \xc3",
        "caf\u00e9 na\u00efve \u6771\u4eac \U0001f642 \u00a0\t\r\n".encode(),  # multi-byte UTF-8
        b"import os\n" * 200,
    ]
    lengths = rng.integers(0, max_len + 1, count)
    return fixed + [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in lengths]


def next_token_distribution(model: Any, params: dict, ids: np.ndarray) -> np.ndarray:
    """The core's next-token probabilities after ``ids``: the numba forward, then the
    core's log-softmax (``cross_entropy_rows``, the kernel ``kernels.infer.nll`` scores
    with): ``log p(j) = -xent(logits, j)`` for every token j."""
    from kernels.ops.xent import cross_entropy_rows

    logits = model.forward(params, np.asarray(ids, dtype=np.int32)[None, :])[0, -1]
    vocab = logits.shape[0]
    rows = np.ascontiguousarray(np.broadcast_to(logits, (vocab, vocab)))
    logp = -cross_entropy_rows(rows, np.arange(vocab, dtype=np.int32))
    return np.exp(logp)


def empty_prompt_refused(model: Any, params: dict) -> bool:
    """The model-level API refuses an empty prompt with a ValueError naming it
    (``kernels.infer.generate``: "prompt_ids must be a non-empty int array")."""
    from kernels.infer import generate

    try:
        generate(model, params, np.zeros(0, dtype=np.int32), 1)
    except ValueError as exc:
        return "prompt" in str(exc)
    return False


def inference_robustness(ctx: CheckContext) -> dict[str, Any]:
    """Arbitrary byte strings, through the shipped tokenizer and the server's prompt
    handling (``kernels.serving.prompt_ids``: an empty prompt is served as a newline, a
    prompt longer than the context keeps its end), give a finite next-token
    distribution summing to 1, and sampling a continuation does not crash. The
    model-level API refuses an empty prompt with a ValueError (as it documents).

    params: ``families``, ``inputs_hex`` (hex strings; default a fixed set plus
    ``random_inputs`` random ones up to ``random_max_len`` bytes), ``repeat`` (tile each
    input this many times), ``logit_scale`` (multiplies the final norm's gain: logits
    ~1e4 at the default), ``n_ctx``, ``new_tokens``, ``temperature``, ``as_str``
    (default true: every input is also served as the ``str`` it decodes to, invalid
    UTF-8 replaced by U+FFFD, since ``prompt_ids`` takes ``str | bytes`` and the CLI and
    the service pass ``str``; issue 13, class 1).
    """
    from kernels.data.pipeline import shipped_tokenizer
    from kernels.infer import generate
    from kernels.models.registry import build_model
    from kernels.serving import prompt_ids

    p = ctx.params
    families = _as_list(p.get("families"), ["gpt2", "llama"])
    rng = ctx.numpy_rng()
    if "inputs_hex" in p:
        inputs = [bytes.fromhex(h) for h in p["inputs_hex"]]
    else:
        inputs = default_inputs(
            rng, int(p.get("random_inputs", 6)), int(p.get("random_max_len", 400))
        )
    repeat = int(p.get("repeat", 1))
    prompts: list[str | bytes] = [x * repeat for x in inputs]
    if p.get("as_str", True):
        prompts += [x.decode("utf-8", "replace") for x in prompts]
    logit_scale = float(p.get("logit_scale", 2e4))
    n_ctx = int(p.get("n_ctx", 32))
    new_tokens = int(p.get("new_tokens", 4))
    temperature = float(p.get("temperature", 1.0))
    tok = shipped_tokenizer()
    out: dict[str, Any] = {
        "inputs": 0,
        "str_inputs": 0,
        "empty_inputs": 0,
        "longer_than_context": 0,
        "long_prompt_end_not_kept": 0,  # a long prompt is served as its last n_ctx-1 tokens
        "empty_not_served_as_newline": 0,
        "empty_prompt_refused": True,
        "crashes": 0,
        "nonfinite_distributions": 0,
        "max_sum_err": 0.0,
        "max_abs_logit": 0.0,
        "first_crash": "",
    }
    for family in families:
        cfg = small_config(family, d_model=32, n_ctx=n_ctx, vocab_size=tok.vocab_size)
        model = build_model(cfg)
        params = model.init_params(ctx.seed % (2**31))
        norm = "transformer.ln_f." if family == "gpt2" else "model.norm."
        for key in (norm + "weight", norm + "bias"):
            if key in params:
                params[key] *= np.float32(logit_scale)
        out["empty_prompt_refused"] &= empty_prompt_refused(model, params)
        newline = tok.encode("\n")
        for i, data in enumerate(prompts):
            out["inputs"] += 1
            out["str_inputs"] += int(isinstance(data, str))
            try:
                encoded = tok.encode(data)
                ids = prompt_ids(tok, data, n_ctx)
                if len(encoded) >= n_ctx:
                    out["longer_than_context"] += 1
                    out["long_prompt_end_not_kept"] += int(
                        not np.array_equal(ids, encoded[len(encoded) - (n_ctx - 1) :])
                    )
                if len(data) == 0:
                    out["empty_inputs"] += 1
                    out["empty_not_served_as_newline"] += int(not np.array_equal(ids, newline))
                probs = next_token_distribution(model, params, ids)
                logits = model.forward(params, np.asarray(ids, dtype=np.int32)[None, :])
                out["max_abs_logit"] = max(out["max_abs_logit"], float(np.abs(logits).max()))
                if not np.all(np.isfinite(probs)):
                    out["nonfinite_distributions"] += 1
                    out["max_sum_err"] = 1e300
                else:
                    out["max_sum_err"] = max(out["max_sum_err"], abs(float(probs.sum()) - 1.0))
                n_new = max(0, min(new_tokens, n_ctx - len(ids)))
                generate(model, params, ids, n_new, temperature, 0, ctx.seed + i)
            except Exception as exc:  # observed: inference must never crash
                out["crashes"] += 1
                if not out["first_crash"]:
                    out["first_crash"] = (
                        f"{family} input {i} ({len(data)} {type(data).__name__}): "
                        + (f"{type(exc).__name__}: {exc}")[:300]
                    )
    return out
