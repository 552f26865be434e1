"""The kernel cases of the kernel-correctness check (acceptance/kernels.py).

``make_case(name, shape, scale, seed)`` builds one case of each kernel in
``KERNELS``: its inputs, the numba kernel's forward and backward, and its float64
NumPy reference (acceptance/kernel_references.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acceptance import kernel_references as ref

KERNELS = (
    "embedding",
    "linear_io",
    "linear_oi",
    "layernorm",
    "rmsnorm",
    "gelu",
    "silu",
    "swiglu",
    "rope",
    "attention",
    "cross_entropy",
    "adamw",
)

DEFAULT_SHAPE = {"b": 2, "t": 5, "h": 2, "hd": 4, "d": 8, "v": 13}
EPS = 1e-5


# ----------------------------------------------------------------------------- cases


@dataclass
class KernelCase:
    """One kernel on one set of inputs.

    ``inputs`` are the differentiable inputs (float64 arrays holding float32-exact
    values, so both dtypes see the same numbers); ``forward(inputs, dtype)`` runs the
    kernel and returns its outputs; ``reference(inputs)`` the float64 references;
    ``backward(inputs, douts, dtype)`` the kernel's gradients of ``sum(douts[i] *
    outputs[i])`` over the first ``n_grad_outputs`` outputs, or None.
    """

    name: str
    inputs: dict[str, np.ndarray]
    forward: Callable[[dict[str, np.ndarray], Any], list[np.ndarray]]
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    backward: Callable[..., dict[str, np.ndarray]] | None = None
    n_grad_outputs: int = 1
    meta: dict[str, Any] = field(default_factory=dict)


def _draw(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Normal values times ``scale``, rounded to float32 and held in float64."""
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def _cast(inputs: dict[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in inputs.items()}


def make_case(name: str, shape: dict[str, int], scale: float, seed: int) -> KernelCase:
    """The inputs of kernel ``name`` at ``shape`` with values of size ``scale``.

    For the softmax kernels ``scale`` is the size of the logits (the attention
    scores), so ``scale=1e4`` means logits ~1e4.
    """
    import importlib

    from kernels import optim

    # the kernel modules (kernels.ops re-exports functions under some of these names)
    mods = {
        m: importlib.import_module(f"kernels.ops.{m}")
        for m in ("activations", "attention", "embedding", "linear", "norms", "rope", "xent")
    }
    activations, attention, embedding = mods["activations"], mods["attention"], mods["embedding"]
    linear, norms, rope, xent = mods["linear"], mods["norms"], mods["rope"], mods["xent"]

    rng = np.random.default_rng(seed)
    s = {**DEFAULT_SHAPE, **(shape or {})}
    b, t, h, hd, d, v = s["b"], s["t"], s["h"], s["hd"], s["d"], s["v"]
    n = b * t

    if name == "embedding":
        tokens = rng.integers(0, v, (b, t)).astype(np.int64)
        inputs = {"weight": _draw(rng, (v, d), scale), "positions": _draw(rng, (t, d), scale)}

        def fwd(x, dt):
            c = _cast(x, dt)
            return [embedding.embedding(c["weight"], tokens, c["positions"])]

        def bwd(x, douts, dt):
            dw, dp = embedding.embedding_backward(tokens, douts[0].astype(dt), v, n_positions=t)
            return {"weight": dw, "positions": dp}

        return KernelCase(
            name,
            inputs,
            fwd,
            lambda x: [ref.embedding(x["weight"], tokens, x["positions"])],
            bwd,
        )

    if name in ("linear_io", "linear_oi"):
        layout = name[-2:]
        d_out = s.get("d_out", d + 3)
        w_shape = (d, d_out) if layout == "io" else (d_out, d)
        inputs = {
            "x": _draw(rng, (n, d), scale),
            "w": _draw(rng, w_shape, scale),
            "b": _draw(rng, (d_out,), scale),
        }

        def fwd(x, dt):
            c = _cast(x, dt)
            return [linear.linear(c["x"], c["w"], c["b"], layout)]

        def bwd(x, douts, dt):
            c = _cast(x, dt)
            dx, dw, db = linear.linear_backward(c["x"], c["w"], douts[0].astype(dt), layout)
            return {"x": dx, "w": dw, "b": db}

        return KernelCase(
            name, inputs, fwd, lambda x: [ref.linear(x["x"], x["w"], x["b"], layout)], bwd
        )

    if name == "layernorm":
        inputs = {
            "x": _draw(rng, (n, d), scale) + _draw(rng, (n, 1), scale),
            "w": _draw(rng, (d,), 1.0),
            "b": _draw(rng, (d,), 1.0),
        }

        def fwd(x, dt):
            c = _cast(x, dt)
            y, mean, rstd = norms.layernorm(c["x"], c["w"], c["b"], EPS)
            return [y, mean, rstd]

        def bwd(x, douts, dt):
            c = _cast(x, dt)
            _, mean, rstd = norms.layernorm(c["x"], c["w"], c["b"], EPS)
            dx, dw, db = norms.layernorm_backward(douts[0].astype(dt), c["x"], c["w"], mean, rstd)
            return {"x": dx, "w": dw, "b": db}

        def reference(x):
            xx = x["x"]
            m = xx.mean(-1)
            return [
                ref.layernorm(xx, x["w"], x["b"], EPS),
                m,
                1.0 / np.sqrt(((xx - m[:, None]) ** 2).mean(-1) + EPS),
            ]

        return KernelCase(name, inputs, fwd, reference, bwd)

    if name == "rmsnorm":
        inputs = {"x": _draw(rng, (n, d), scale), "w": _draw(rng, (d,), 1.0)}

        def fwd(x, dt):
            c = _cast(x, dt)
            y, rstd = norms.rmsnorm(c["x"], c["w"], EPS)
            return [y, rstd]

        def bwd(x, douts, dt):
            c = _cast(x, dt)
            _, rstd = norms.rmsnorm(c["x"], c["w"], EPS)
            dx, dw = norms.rmsnorm_backward(douts[0].astype(dt), c["x"], c["w"], rstd)
            return {"x": dx, "w": dw}

        def reference(x):
            xx = x["x"]
            return [
                ref.rmsnorm(xx, x["w"], EPS),
                1.0 / np.sqrt((xx * xx).mean(-1) + EPS),
            ]

        return KernelCase(name, inputs, fwd, reference, bwd)

    if name in ("gelu", "silu"):
        fwd_k = getattr(activations, name)
        bwd_k = getattr(activations, name + "_backward")
        ref_k = getattr(ref, name)
        inputs = {"x": _draw(rng, (n, d), scale)}
        return KernelCase(
            name,
            inputs,
            lambda x, dt: [fwd_k(_cast(x, dt)["x"])],
            lambda x: [ref_k(x["x"])],
            lambda x, douts, dt: {"x": bwd_k(_cast(x, dt)["x"], douts[0].astype(dt))},
        )

    if name == "swiglu":
        inputs = {"gate": _draw(rng, (n, d), scale), "up": _draw(rng, (n, d), scale)}

        def bwd(x, douts, dt):
            c = _cast(x, dt)
            dg, du = activations.swiglu_backward(c["gate"], c["up"], douts[0].astype(dt))
            return {"gate": dg, "up": du}

        return KernelCase(
            name,
            inputs,
            lambda x, dt: [activations.swiglu(_cast(x, dt)["gate"], _cast(x, dt)["up"])],
            lambda x: [ref.swiglu(x["gate"], x["up"])],
            bwd,
        )

    if name == "rope":
        hd_even = hd + hd % 2
        pos0 = int(s.get("pos0", 1))
        theta = 10000.0
        inputs = {"x": _draw(rng, (b, t, h * hd_even), scale)}

        def tables(dt):
            return rope.rope_tables(pos0 + t, hd_even, theta, dt)

        def fwd(x, dt):
            cos, sin = tables(dt)
            return [rope.rope(_cast(x, dt)["x"], h, cos, sin, pos0)]

        def bwd(x, douts, dt):
            cos, sin = tables(dt)
            return {"x": rope.rope_backward(douts[0].astype(dt), h, cos, sin, pos0)}

        return KernelCase(name, inputs, fwd, lambda x: [ref.rope(x["x"], h, theta, pos0)], bwd)

    if name == "attention":
        # scores q.k/sqrt(hd) of size ~scale: q, k ~ sqrt(scale) * hd^(1/4)
        qk = math.sqrt(scale) * hd**0.25
        inputs = {
            "q": _draw(rng, (b, t, h * hd), qk),
            "k": _draw(rng, (b, t, h * hd), qk),
            "v": _draw(rng, (b, t, h * hd), 1.0),
        }

        def fwd(x, dt):
            c = _cast(x, dt)
            out, probs = attention.causal_attention(c["q"], c["k"], c["v"], h)
            return [out, probs]

        def bwd(x, douts, dt):
            c = _cast(x, dt)
            _, probs = attention.causal_attention(c["q"], c["k"], c["v"], h)
            dq, dk, dv = attention.causal_attention_backward(
                douts[0].astype(dt), c["q"], c["k"], c["v"], probs, h
            )
            return {"q": dq, "k": dk, "v": dv}

        def reference(x):
            out, probs = ref.causal_attention(x["q"], x["k"], x["v"], h)
            return [out, probs]

        return KernelCase(name, inputs, fwd, reference, bwd)

    if name == "cross_entropy":
        targets = rng.integers(0, v, n).astype(np.int64)
        inputs = {"logits": _draw(rng, (n, v), scale)}

        def fwd(x, dt):
            z = _cast(x, dt)["logits"]
            rows = xent.cross_entropy_rows(z, targets)
            loss_b, _ = xent.cross_entropy_backward(z, targets)
            return [
                np.array([xent.cross_entropy(z, targets)]),
                rows,
                np.array([loss_b]),
            ]

        def bwd(x, douts, dt):
            _, dz = xent.cross_entropy_backward(_cast(x, dt)["logits"], targets)
            return {"logits": dz * float(douts[0][0])}

        def reference(x):
            rows = ref.cross_entropy_rows(x["logits"], targets)
            return [np.array([rows.mean()]), rows, np.array([rows.mean()])]

        return KernelCase(name, inputs, fwd, reference, bwd)

    if name == "adamw":
        # As every training run steps it (kernels.train.tasks: build_optimizer,
        # apply_update): global-norm clipping on (TrainConfig.clip = 1.0, active whenever
        # the gradients' norm exceeds it), and the learning rate passed per step from
        # the warmup + cosine schedule (issue 13, class 1: a reference with clipping
        # switched off and a constant lr never saw what real runs do).
        steps = int(s.get("steps", 3))
        hp = {"lr": 1e-2, "b1": 0.9, "b2": 0.95, "eps": 1e-8, "wd": 0.1, "clip": 1.0}
        lrs = [optim.lr_at(i, hp["lr"], 2, steps, hp["lr"] / 10) for i in range(steps)]
        inputs = {"w": _draw(rng, (t, d), 1.0), "g": _draw(rng, (d,), 1.0)}
        grads = [
            {"w": _draw(rng, (t, d), scale), "g": _draw(rng, (d,), scale)} for _ in range(steps)
        ]

        def fwd(x, dt):
            params = _cast(x, dt)
            opt = optim.AdamW(
                lr=hp["lr"],
                betas=(hp["b1"], hp["b2"]),
                eps=hp["eps"],
                weight_decay=hp["wd"],
                clip_norm=hp["clip"],
            )
            out = []
            for g, lr in zip(grads, lrs, strict=True):
                opt.step(params, _cast(g, dt), lr=lr)
                out += [params["w"].copy(), params["g"].copy()]
            return out

        def reference(x):
            p = dict(x)
            m = {k: np.zeros_like(a) for k, a in p.items()}
            v2 = {k: np.zeros_like(a) for k, a in p.items()}
            out = []
            for step, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
                norm = math.sqrt(sum(float(np.sum(ref.f64(a) ** 2)) for a in g.values()))
                clip = hp["clip"] / (norm + 1e-6) if norm > hp["clip"] else 1.0
                for k in ("w", "g"):
                    wd = hp["wd"] if p[k].ndim >= 2 else 0.0
                    p[k], m[k], v2[k] = ref.adamw_step(
                        p[k], ref.f64(g[k]) * clip, m[k], v2[k], step, lr, hp["b1"], hp["b2"],
                        hp["eps"], wd,
                    )  # fmt: skip
                out += [p["w"].copy(), p["g"].copy()]
            return out

        return KernelCase(name, inputs, fwd, reference, None)

    raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
