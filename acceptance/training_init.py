"""The ``--init`` corruption class for contracts/training.yaml (AC-TRAIN-005).

AC-TRAIN-005 replays the historical incident (a stamp contradicting the tensor
names) in ``acceptance.training:init_from_checkpoint``. This check covers the
class the incident belongs to: a checkpoint whose tensors are not exactly the
model's. For EVERY family the trainer accepts (gpt2, llama, mlp) it trains a tiny
source checkpoint, then enumerates the corruptions

    missing   one tensor of the model left out
    renamed   one tensor under another name (``.weight`` -> ``.kernel``, Flax-style)
    extra     one tensor the model does not have (``<module>.inv_freq``, an HF buffer)
    shape     one tensor transposed (the Conv1D vs nn.Linear layout), or a row short
    dtype     one tensor in float16

each in a checkpoint that keeps every stamp and in one without its config and eval
stamps (``config``, ``eval_spec``, ``val_loss``, ``train_config``: a checkpoint
exported by another tool). Each case corrupts a different tensor, walking the
model's tensors in order, so the cases together touch embeddings, attention, MLP,
norms and the head. For each case it observes whether ``train(..., init=case)``
was refused, whether the refusal came before any training step (no step >= 1
metric, no checkpoint), whether the error names the offending tensor, and whether
it names the checkpoint (a refusal by the loader, not a crash inside a kernel or
the optimizer), and whether it came before the weights were even evaluated (no
metrics line at all: the loader refused them).
The uncorrupted checkpoint in both stamp variants is the control: it must init and
train. Observations are counts; the YAML judges them against the case count.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from typing import Any

from acceptance.training import config_from, family_params, run_seed, trained_past_step0
from harness.context import CheckContext

KINDS = ("missing", "renamed", "extra", "shape", "dtype")
# The stamps a checkpoint written by another tool lacks: model config and eval record.
CONFIG_EVAL_STAMPS = ("config", "eval_spec", "val_loss", "train_config")
STAMP_VARIANTS = ("stamped", "no-config-eval")


def corrupt(
    tensors: Mapping[str, Any], order: list[str], kind: str, index: int
) -> tuple[dict[str, Any], list[str]]:
    """(corrupted tensors, the names an error may give for the offending tensor).

    ``index`` picks the tensor: the index-th of the model's tensors, in model order."""
    import numpy as np

    out = dict(tensors)
    name = order[index % len(order)]
    if kind == "missing":
        del out[name]
        return out, [name]
    if kind == "renamed":
        base, leaf = name.rsplit(".", 1)
        new = f"{base}.{'kernel' if leaf == 'weight' else leaf + '_0'}"
        out[new] = out.pop(name)
        return out, [name, new]
    if kind == "extra":
        new = f"{name.rsplit('.', 1)[0]}.inv_freq"
        out[new] = np.ones(4, dtype=np.float32)
        return out, [new]
    if kind == "shape":
        arr = out[name]
        if arr.ndim == 2 and arr.shape[0] != arr.shape[1]:
            out[name] = np.ascontiguousarray(arr.T)
        else:
            out[name] = np.ascontiguousarray(arr[:-1])
        return out, [name]
    if kind == "dtype":
        out[name] = out[name].astype(np.float16)
        return out, [name]
    raise ValueError(f"unknown corruption kind {kind!r} (expected one of {', '.join(KINDS)})")


def names_any(message: str, names: list[str]) -> bool:
    """Whether ``message`` names one of ``names`` as a whole tensor name (not a prefix)."""
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", message) for n in names)


def init_refuses_corrupted_tensors(ctx: CheckContext) -> dict[str, Any]:
    """Every family, every corruption kind, with and without config/eval stamps: ``--init``
    is refused before step 1 by an error naming the tensor and the checkpoint; the
    uncorrupted checkpoint (the control) inits and trains."""
    from kernels import checkpoint as ckpt_io
    from kernels.train import build_task, train

    families = list(ctx.params.get("families", ["gpt2", "llama", "mlp"]))
    kinds = list(ctx.params.get("kinds", KINDS))
    seed = run_seed(ctx)
    counts = dict.fromkeys(
        (
            "cases",
            "refused",
            "refused_before_step1",
            "refused_before_eval",
            "named_tensor",
            "named_checkpoint",
        ),
        0,
    )
    controls = controls_trained = 0
    records: list[dict[str, Any]] = []
    number = 0
    for fam in families:
        params = family_params(ctx.params, fam)
        src = ctx.scratch / f"source-{fam}"
        train(config_from(params, family=fam, seed=seed), src)
        tensors, stamps = ckpt_io.read_safetensors(ckpt_io.resolve_model_file(src))
        model, _, _, _, _ = build_task(config_from(params, family=fam), None)
        order = list(model.param_shapes())
        init_cfg = config_from(params, family=fam, seed=seed + 1, steps=1)
        for v, variant in enumerate(STAMP_VARIANTS):
            kept = dict(stamps)
            if variant != "stamped":
                for key in CONFIG_EVAL_STAMPS:
                    kept.pop(key, None)
            cases: list[tuple[str, dict[str, Any], list[str]]] = [("control", dict(tensors), [])]
            for k, kind in enumerate(kinds):
                bad, names = corrupt(tensors, order, kind, v * len(kinds) + k)
                cases.append((kind, bad, names))
            for kind, case_tensors, names in cases:
                number += 1
                case_dir = ctx.scratch / "cases" / f"init-{number:03d}"
                case_dir.mkdir(parents=True)
                (case_dir / ckpt_io.MODEL_FILE).write_bytes(
                    ckpt_io.encode_safetensors(case_tensors, kept)
                )
                out = ctx.scratch / "runs" / f"run-{number:03d}"
                message = ""
                try:
                    train(init_cfg, out, init=case_dir)
                except Exception as exc:  # the refusal is the observation
                    message = " ".join(f"{type(exc).__name__}: {exc}".split())
                stepped = trained_past_step0(out)
                evaluated = (out / "metrics.jsonl").is_file()
                if kind == "control":
                    controls += 1
                    controls_trained += not message and stepped
                else:
                    counts["cases"] += 1
                    counts["refused"] += bool(message)
                    counts["refused_before_step1"] += bool(message) and not stepped
                    counts["refused_before_eval"] += bool(message) and not evaluated
                    counts["named_tensor"] += bool(message) and names_any(message, names)
                    counts["named_checkpoint"] += case_dir.name in message
                records.append(
                    {
                        "case": case_dir.name,
                        "family": fam,
                        "stamps": variant,
                        "kind": kind,
                        "tensor": names,
                        "refused": bool(message),
                        "trained_past_step0": stepped,
                        "evaluated": evaluated,
                        "message": message[:300],
                    }
                )
                shutil.rmtree(out, ignore_errors=True)
    ctx.attach_json("init_corruption_cases.json", records)
    unrefused = [
        f"{r['family']}/{r['stamps']}/{r['kind']}"
        for r in records
        if r["kind"] != "control" and not r["refused"]
    ]
    return {
        **counts,
        "families": len(families),
        "kinds": len(kinds),
        "controls": controls,
        "controls_trained": controls_trained,
        "not_refused": unrefused[:10],
    }
