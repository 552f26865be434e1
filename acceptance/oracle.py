"""Hugging Face ``transformers`` (on CPU torch) as an independent oracle (AC-KERN-005).

Every other kernels check compares the core with code of this repository (the NumPy
references, the reference engine, finite differences). These compare it with an
implementation nobody here wrote:

- ``gpt2_matches_transformers`` / ``llama_matches_transformers``: one checkpoint of our
  model, written by our own writer (``kernels.checkpoint.save_weights``) as
  ``model.safetensors`` with an HF-style ``config.json`` beside it, loads into
  ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` with ``from_pretrained(dir)`` and no tensor
  mapping (our tensor names and layouts are HF's: Conv1D ``W[in, out]`` for GPT-2,
  ``nn.Linear`` ``W[out, in]`` and rotate-half RoPE for Llama, GPT-2's head tied to
  ``wte``). Logits, loss and every parameter gradient are compared in float64 and float32;
- ``adamw_matches_torch``: steps of our ``AdamW`` with clipping active against
  ``torch.nn.utils.clip_grad_norm_`` + ``torch.optim.AdamW`` (decay on tensors with
  ndim >= 2 only, as our default), fed the same gradients: updates, both moments and the
  gradient norm.

The checkpoint is our init with its norm gains and biases moved off 1 and 0 (as training
leaves them), so a bias or gain applied wrongly shows. Where torch or transformers is not
installed the checks SKIP (the criterion is UNPROVEN, never GO). Observations are relative
errors (``max |ours - oracle| / max |oracle|`` per tensor, the worst tensor); the
tolerances are in contracts/kernels.yaml.

Two places where the oracle is less precise than float64 by design, and what we do:
HF's ``ForCausalLMLoss`` upcasts logits to float32, so the loss is
``torch.nn.functional.cross_entropy`` on HF's logits in the model's dtype; HF's Llama
computes its RMSNorm and its rotary angles in float32 whatever the dtype (and its eager
attention its softmax), so the models run with torch's SDPA attention (the default, which
keeps the dtype) and, in float64 only, the RMSNorm and the rotary table are computed in
float64 with HF's own formulas (:func:`llama_in_float64`; the rotation itself, HF's
``rotate_half``, is untouched). In float32, HF runs exactly as shipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from acceptance.kernels import _jsonable, rel_err
from harness.context import CheckContext

ORACLE_MISSING = "needs the oracle extra: pip install -e '.[oracle]'"

HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}

DTYPES = {"f64": np.float64, "f32": np.float32}


# ----------------------------------------------------------------------------- setup


def oracle_modules(ctx: CheckContext) -> tuple[Any, Any]:
    """(torch, transformers), or SKIP when either is not installed.

    A package that is installed but fails to import is an ERROR, not a SKIP.
    """
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        ctx.skip(f"{ORACLE_MISSING} ({', '.join(missing)} not installed)")
    # offline, quiet, and nothing written outside the check's scratch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HOME", str(ctx.scratch / "hf-home"))
    import torch
    import transformers

    torch.set_num_threads(1)
    return torch, transformers


def model_config(family: str, p: dict[str, Any]) -> Any:
    from kernels.config import ModelConfig

    return ModelConfig(
        family=family,
        n_layer=int(p.get("n_layer", 2)),
        d_model=int(p.get("d_model", 32)),
        n_head=int(p.get("n_head", 4)),
        n_ctx=int(p.get("n_ctx", 16)),
        vocab_size=int(p.get("vocab_size", 61)),
        init_std=float(p.get("init_std", 0.1)),
    )


def checkpoint_params(model: Any, seed: int, spread: float) -> dict[str, np.ndarray]:
    """Our init, with every 1-D tensor (norm gains, biases) moved by N(0, spread)."""
    params = model.init_params(seed)
    rng = np.random.default_rng(seed + 1)
    for a in params.values():
        if a.ndim == 1:
            a += rng.normal(0.0, spread, a.shape).astype(a.dtype)
    return params


def hf_config(cfg: Any) -> dict[str, Any]:
    """The ``config.json`` of ``cfg`` for transformers (dropout off, as in our core)."""
    if cfg.family == "gpt2":
        return {
            "model_type": "gpt2",
            "architectures": [HF_CLASSES["gpt2"]],
            "vocab_size": cfg.vocab_size,
            "n_positions": cfg.n_ctx,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_inner": cfg.d_ff,
            "activation_function": "gelu_new",  # the tanh form
            "layer_norm_epsilon": cfg.eps,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": True,
            "tie_word_embeddings": True,
            "bos_token_id": None,
            "eos_token_id": None,
        }
    if cfg.family == "llama":
        return {
            "model_type": "llama",
            "architectures": [HF_CLASSES["llama"]],
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "intermediate_size": cfg.d_ff,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_head,
            "max_position_embeddings": cfg.n_ctx,
            "rms_norm_eps": cfg.eps,
            "rope_theta": cfg.rope_theta,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "bos_token_id": None,
            "eos_token_id": None,
        }
    raise ValueError(f"no transformers class for family {cfg.family!r}")


def export_checkpoint(directory: Path, cfg: Any, params: dict[str, np.ndarray]) -> Path:
    """Write ``model.safetensors`` (our writer, our stamps) and ``config.json``.

    No renaming: our tensor names are the ones transformers expects.
    """
    from kernels.checkpoint import MODEL_FILE, identity_stamps, save_weights

    directory.mkdir(parents=True, exist_ok=True)
    stamps = {**identity_stamps(cfg.family), "config": json.dumps(cfg.to_dict(), sort_keys=True)}
    save_weights(directory / MODEL_FILE, params, stamps)
    (directory / "config.json").write_text(json.dumps(hf_config(cfg), indent=1))
    return directory / MODEL_FILE


def load_hf(torch: Any, transformers: Any, directory: Path, family: str, dtype: Any):
    """``from_pretrained(directory)`` in ``dtype``; returns (model, loading info)."""
    cls = getattr(transformers, HF_CLASSES[family])
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    model, info = cls.from_pretrained(
        directory, dtype=tdtype, attn_implementation="sdpa", output_loading_info=True
    )
    model.eval()
    if family == "llama" and dtype == np.float64:
        llama_in_float64(torch, model)
    return model, info


def llama_in_float64(torch: Any, model: Any) -> None:
    """HF's Llama with its two float32 upcasts kept in float64: the RMSNorm
    (``w * x * rsqrt(mean(x^2) + eps)``) and the rotary table (``cat(freqs, freqs)``,
    ``inv_freq = theta^(-2j/hd)``), each with HF's own formula. The rest (attention,
    ``rotate_half``, SwiGLU, the head) is HF's code as shipped."""
    cfg = model.config
    dim = cfg.hidden_size // cfg.num_attention_heads
    theta = float(cfg.rope_parameters["rope_theta"])
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))

    def rotary(x: Any, position_ids: Any) -> tuple[Any, Any]:
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def rmsnorm(norm: Any) -> Any:
        def forward(x: Any) -> Any:
            variance = x.pow(2).mean(-1, keepdim=True)
            return norm.weight * (x * torch.rsqrt(variance + norm.variance_epsilon))

        return forward

    model.model.rotary_emb.forward = rotary
    for module in model.modules():
        if type(module).__name__ == "LlamaRMSNorm":
            module.forward = rmsnorm(module)


def _count(info: dict[str, Any], key: str) -> int:
    return len(info.get(key) or ())


# ----------------------------------------------------------------------------- models


def compare_with_transformers(ctx: CheckContext, family: str) -> dict[str, Any]:
    """Logits, loss and every gradient of our model against transformers' on one checkpoint.

    params: ``n_layer``, ``d_model``, ``n_head``, ``n_ctx``, ``vocab_size``, ``init_std``,
    ``spread`` (of the gains and biases), ``batch``; the sequences fill the context.
    """
    torch, transformers = oracle_modules(ctx)
    from kernels.checkpoint import read_safetensors
    from kernels.models.registry import build_model

    p = ctx.params
    cfg = model_config(family, p)
    model = build_model(cfg)
    directory = ctx.scratch / family
    model_file = export_checkpoint(
        directory, cfg, checkpoint_params(model, ctx.seed, float(p.get("spread", 0.1)))
    )
    stored, _ = read_safetensors(model_file)  # the same file, read by our reader
    rng = ctx.numpy_rng()
    tokens = rng.integers(0, cfg.vocab_size, (int(p.get("batch", 3)), cfg.n_ctx))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    obs: dict[str, Any] = {"hf_missing": 0, "hf_unexpected": 0, "hf_mismatched": 0}
    for tag, dtype in DTYPES.items():
        params = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in stored.items()}
        loss, grads = model.loss_and_grads(params, tokens)
        logits = model.forward(params, inputs)

        hf, info = load_hf(torch, transformers, directory, family, dtype)
        obs["hf_missing"] += _count(info, "missing_keys")
        obs["hf_unexpected"] += _count(info, "unexpected_keys")
        obs["hf_mismatched"] += _count(info, "mismatched_keys")
        hf_params = dict(hf.named_parameters())
        out = hf(input_ids=torch.from_numpy(tokens)).logits[:, :-1]
        hf_loss = torch.nn.functional.cross_entropy(
            out.reshape(-1, cfg.vocab_size), torch.from_numpy(targets).reshape(-1)
        )
        hf_loss.backward()

        obs["unmatched_tensors"] = len(set(grads) ^ set(hf_params))
        obs["tensors"] = len(set(grads) & set(hf_params))
        obs[f"logits_rel_err_{tag}"] = _jsonable(rel_err(logits, out.detach().numpy()))
        want = float(hf_loss.detach())
        obs[f"loss_rel_err_{tag}"] = _jsonable(abs(loss - want) / max(abs(want), 1e-300))
        worst, worst_at = 0.0, ""
        for name, g in grads.items():
            t = hf_params.get(name)
            if t is None or t.grad is None:
                worst, worst_at = float("inf"), name
                continue
            e = rel_err(g, t.grad.numpy())
            if e > worst or not worst_at:
                worst, worst_at = max(worst, e), name
        obs[f"grad_rel_err_{tag}"] = _jsonable(worst)
        obs[f"grad_rel_err_{tag}_at"] = worst_at
        obs[f"loss_{tag}"] = float(loss)
    return obs


def gpt2_matches_transformers(ctx: CheckContext) -> dict[str, Any]:
    """Our GPT-2 against ``transformers.GPT2LMHeadModel`` on the same checkpoint."""
    return compare_with_transformers(ctx, "gpt2")


def llama_matches_transformers(ctx: CheckContext) -> dict[str, Any]:
    """Our Llama against ``transformers.LlamaForCausalLM`` on the same checkpoint."""
    return compare_with_transformers(ctx, "llama")


# ----------------------------------------------------------------------------- AdamW


def adamw_matches_torch(ctx: CheckContext) -> dict[str, Any]:
    """``steps`` of our AdamW with clipping against clip_grad_norm_ + torch.optim.AdamW.

    Both get the same gradients (our model's, on a fresh batch each step, at our current
    params). params: ``family``, the model sizes of :func:`compare_with_transformers`,
    ``lr``, ``betas``, ``eps``, ``weight_decay``, ``clip_norm``, ``steps``, ``batch``.
    Observes the worst relative error of the parameters after the steps, of the
    accumulated update (``p - p0``), of both moments and of the gradient norm, and
    ``min_clip_ratio`` (norm / clip_norm over the steps: > 1 means clipping was active
    on every step). The update is the sharper measure, but in float32 it carries the
    rounding of the parameter itself (one ulp of a gain ~1 is ~6e-6 of an update of
    lr = 1e-2), so the YAML judges the update in float64 and the parameters in float32.
    """
    torch, _ = oracle_modules(ctx)
    from kernels.models.registry import build_model
    from kernels.optim import AdamW

    p = ctx.params
    family = str(p.get("family", "gpt2"))
    cfg = model_config(family, p)
    model = build_model(cfg)
    start = checkpoint_params(model, ctx.seed, float(p.get("spread", 0.1)))
    lr, eps, wd = float(p.get("lr", 1e-2)), float(p.get("eps", 1e-8)), float(p["weight_decay"])
    b1, b2 = (float(b) for b in p.get("betas", [0.9, 0.95]))
    clip = float(p["clip_norm"])
    steps = int(p.get("steps", 2))
    shape = (steps, int(p.get("batch", 3)), cfg.n_ctx)
    batches = ctx.numpy_rng().integers(0, cfg.vocab_size, shape)

    obs: dict[str, Any] = {"steps": steps, "min_clip_ratio": float("inf")}
    for tag, dtype in DTYPES.items():
        params = {k: v.astype(dtype) for k, v in start.items()}
        p0 = {k: v.copy() for k, v in params.items()}
        ours = AdamW(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, clip_norm=clip)
        tp = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
        groups = [
            {"params": [t for t in tp.values() if t.ndim >= 2], "weight_decay": wd},
            {"params": [t for t in tp.values() if t.ndim < 2], "weight_decay": 0.0},
        ]
        theirs = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
        norm_err = 0.0
        for step in range(steps):
            _, grads = model.loss_and_grads(params, batches[step])
            for name, t in tp.items():
                t.grad = torch.from_numpy(grads[name].copy())
            t_norm = float(torch.nn.utils.clip_grad_norm_(list(tp.values()), clip))
            theirs.step()
            norm = ours.step(params, grads)
            obs["min_clip_ratio"] = min(obs["min_clip_ratio"], norm / clip)
            norm_err = max(norm_err, abs(norm - t_norm) / t_norm)
        update, moments, final = 0.0, 0.0, 0.0
        for name, t in tp.items():
            theirs_now = t.detach().numpy()
            final = max(final, rel_err(params[name], theirs_now))
            want = theirs_now.astype(np.float64) - p0[name]
            update = max(update, rel_err(params[name].astype(np.float64) - p0[name], want))
            state = theirs.state[t]
            for ours_key, their_key in (("m.", "exp_avg"), ("v.", "exp_avg_sq")):
                moments = max(
                    moments, rel_err(ours.state[ours_key + name], state[their_key].numpy())
                )
        obs[f"param_rel_err_{tag}"] = _jsonable(final)
        obs[f"update_rel_err_{tag}"] = _jsonable(update)
        obs[f"moment_rel_err_{tag}"] = _jsonable(moments)
        obs[f"norm_rel_err_{tag}"] = _jsonable(norm_err)
    obs["min_clip_ratio"] = _jsonable(obs["min_clip_ratio"])
    return obs
