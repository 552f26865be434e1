"""Inference: greedy / temperature + top-k generation, perplexity, classifier predict."""

from __future__ import annotations

import math

import numpy as np

from .ops.xent import _xent_rows_kernel


def _pick(
    logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator
) -> np.ndarray:
    """Next token per row of logits[B, V]: argmax at temperature 0, else a sample."""
    if temperature == 0.0:
        return np.argmax(logits, axis=1).astype(np.int32)
    out = np.empty(logits.shape[0], dtype=np.int32)
    for b in range(logits.shape[0]):
        z = logits[b].astype(np.float64) / temperature
        if 0 < top_k < z.shape[0]:
            # keep the k largest; ties broken by lower token id (stable sort)
            order = np.argsort(-z, kind="stable")
            keep = order[:top_k]
            zk = z[keep]
        else:
            keep = np.arange(z.shape[0])
            zk = z
        p = np.exp(zk - zk.max())
        cdf = np.cumsum(p)
        u = rng.random() * cdf[-1]
        i = int(np.searchsorted(cdf, u, side="right"))
        out[b] = keep[min(i, len(keep) - 1)]
    return out


def generate(
    model,
    params: dict,
    prompt_ids,
    max_new: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    use_cache: bool = True,
) -> np.ndarray:
    """Extend ``prompt_ids`` (int[T0] or int[B, T0]) by ``max_new`` tokens.

    Returns the prompt followed by the new tokens (int32, same ndim as the
    prompt). ``temperature=0`` is greedy; otherwise softmax(logits/temperature)
    is sampled, restricted to the ``top_k`` most likely tokens when top_k > 0,
    from ``np.random.default_rng(seed)``. ``use_cache=False`` recomputes the
    full forward pass each step (same result, slower). The whole sequence must
    fit in the model's context n_ctx.
    """
    prompt = np.asarray(prompt_ids)
    single = prompt.ndim == 1
    if single:
        prompt = prompt[None, :]
    if prompt.ndim != 2 or prompt.shape[1] < 1 or prompt.dtype.kind not in "iu":
        raise ValueError(
            f"prompt_ids must be a non-empty int array [T0] or [B, T0] "
            f"(got {prompt.dtype} shape {np.asarray(prompt_ids).shape})"
        )
    if not isinstance(max_new, (int, np.integer)) or max_new < 0:
        raise ValueError(f"max_new must be an int >= 0 (got {max_new!r})")
    if not (temperature >= 0.0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and >= 0 (got {temperature})")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (got {top_k})")
    n_ctx = model.config.n_ctx
    total = prompt.shape[1] + max_new
    if total > n_ctx:
        raise ValueError(
            f"prompt ({prompt.shape[1]}) + max_new ({max_new}) = {total} "
            f"exceeds the model context n_ctx={n_ctx}"
        )
    seq = model.check_tokens(prompt)
    if max_new == 0:
        return seq[0] if single else seq
    rng = np.random.default_rng(seed)
    out = np.empty((seq.shape[0], total), dtype=np.int32)
    out[:, : seq.shape[1]] = seq
    t = seq.shape[1]
    if use_cache:
        cache = model.new_cache(seq.shape[0], model.check_params(params))
    if use_cache and temperature == 0.0 and hasattr(model, "decode_greedy"):
        # greedy: the whole loop in one compiled call (the same tokens as the loop below)
        model.decode_greedy(params, out, t, cache, check=False)
    elif use_cache:
        for j in range(t):  # params and ids were validated above
            logits = model.forward_step(params, out[:, j].copy(), cache, check=False)
        for _ in range(max_new):
            nxt = _pick(logits, temperature, top_k, rng)
            out[:, t] = nxt
            t += 1
            if t < total:
                logits = model.forward_step(params, nxt, cache, check=False)
    else:
        for _ in range(max_new):
            logits = model.forward(params, out[:, :t])[:, -1]
            out[:, t] = _pick(logits, temperature, top_k, rng)
            t += 1
    return out[0] if single else out


def nll(model, params: dict, tokens_2d, batch_size: int = 16) -> tuple[float, int]:
    """Total next-token negative log-likelihood of tokens int[N, T+1] and the count."""
    tokens = model.check_tokens(np.asarray(tokens_2d), extra=1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    total = 0.0
    count = 0
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i : i + batch_size]
        logits = model.forward(params, np.ascontiguousarray(chunk[:, :-1]))
        flat = logits.reshape(-1, logits.shape[-1])
        tgt = np.ascontiguousarray(chunk[:, 1:]).reshape(-1)
        rows = _xent_rows_kernel(flat, tgt)
        total += float(rows.sum())
        count += rows.shape[0]
    return total, count


def perplexity(model, params: dict, tokens_2d, batch_size: int = 16) -> float:
    """exp(mean next-token cross-entropy) over all rows of tokens int[N, T+1]."""
    total, count = nll(model, params, tokens_2d, batch_size)
    return math.exp(total / count)


def predict(mlp, params: dict, X: np.ndarray) -> np.ndarray:
    """Class ids int64[n] of an MLPClassifier for inputs X[n, n_in]."""
    return mlp.predict(params, X)
