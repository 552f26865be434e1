"""Checks for contracts/training.yaml: the trainer and its checkpoints, for real.

Every check trains TINY models (one layer, d_model 8-32, a dozen steps, one
thread) of the real core (``kernels.train``) on the real shipped corpus, in
``ctx.scratch``, and observes; thresholds live in the YAML.

Checks here: the loss falls and every metric is recomputed (AC-TRAIN-003), gradient
accumulation (AC-TRAIN-004), ``--init`` (AC-TRAIN-005) and the pre-flight gate
(AC-TRAIN-006). The checks that rerun or interrupt training in a child process
(AC-TRAIN-001, -002, -007) are in acceptance/training_reruns.py, the child itself in
acceptance/training_child.py.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.context import CheckContext

# ---------------------------------------------------------------- configs and runs (shared)


def config_from(params: Mapping[str, Any], **overrides: Any) -> Any:
    """A ``TrainConfig`` from the TrainConfig fields among ``params`` (+ overrides), 1 thread."""
    from kernels.train import TrainConfig

    fields = {k: v for k, v in params.items() if k in TrainConfig.__dataclass_fields__}
    fields.update(overrides)
    fields.setdefault("threads", 1)
    return TrainConfig.from_dict(fields)


def family_params(params: Mapping[str, Any], family: str) -> dict[str, Any]:
    """``params`` with ``model`` set to the family's own (``models: {family: {...}}``):
    the LM families share a model override, the MLP classifier has another."""
    out = dict(params)
    models = params.get("models") or {}
    if family in models:
        out["model"] = models[family]
    out.pop("models", None)
    return out


def run_seed(ctx: CheckContext) -> int:
    """The training seed: ``params.seed`` if given, else derived from the run's seed."""
    return int(ctx.params.get("seed", ctx.seed % (2**31)))


def checkpoint_dirs(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("ckpt-*") if p.is_dir())


# ---------------------------------------------------------------- AC-TRAIN-003


def lr_schedule(cfg: Any, step: int) -> float:
    """Warmup + cosine, recomputed from the documented formula (0-based step)."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * frac))


def val_windows(tokens: Any, n_ctx: int, n: int) -> Any:
    """The first ``n`` val windows of n_ctx+1 tokens at stride n_ctx (the stamped eval set)."""
    import numpy as np

    n = min(n, (len(tokens) - 1) // n_ctx)
    return np.stack([tokens[i * n_ctx : i * n_ctx + n_ctx + 1] for i in range(n)]).astype(np.int32)


def recomputed_val_loss(model: Any, params: Mapping[str, Any], windows: Any) -> float:
    """Mean next-token loss with ``kernels.infer.nll`` (not the trainer's evaluate)."""
    from kernels.infer import nll

    total, count = nll(model, dict(params), windows, batch_size=16)
    return total / count


def step_loss_and_norm(model: Any, params: Mapping[str, Any], batch: Any, k: int) -> tuple:
    """The loss and global grad norm of one step's batch, averaged over its k micro-batches."""
    import numpy as np

    losses, sums = [], None
    for micro in np.split(batch, k):
        loss, grads = model.loss_and_grads(dict(params), np.ascontiguousarray(micro))
        losses.append(float(loss))
        g64 = {n: np.asarray(v, dtype=np.float64) for n, v in grads.items()}
        sums = g64 if sums is None else {n: sums[n] + g64[n] for n in sums}
    assert sums is not None
    norm = math.sqrt(sum(float(np.sum((v / k) ** 2)) for v in sums.values()))
    return sum(losses) / k, norm


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def loss_decreases(ctx: CheckContext) -> dict[str, Any]:
    """A real run's val loss falls at each of >= 3 checkpoints, and every reported metric
    (val loss in metrics and stamps, train loss, grad norm, lr) equals its recomputation
    from the saved checkpoints (weights, RNG state and data cursor)."""
    import numpy as np

    from kernels import checkpoint as ckpt_io
    from kernels.reference import reference_loss
    from kernels.serving import model_from_checkpoint
    from kernels.train import (
        DataCursor,
        build_task,
        load_lm_data,
        new_rng,
        read_metrics,
        restore_rng,
        train,
    )

    cfg = config_from(ctx.params)
    run = ctx.scratch / "run"
    train(cfg, run)
    metrics = {rec["step"]: rec for rec in read_metrics(run / "metrics.jsonl")}
    model, task, mcfg, _, _ = build_task(cfg, None)
    data = load_lm_data(cfg.dataset)
    windows = val_windows(data.val, mcfg.n_ctx, cfg.eval_windows)
    # step 0 and each checkpoint: (step, reported val, stamped val, recomputed val)
    rows = [
        (
            0,
            metrics[0]["val_loss"],
            None,
            recomputed_val_loss(model, model.init_params(cfg.seed), windows),
        )
    ]
    starts = [(0, model.init_params(cfg.seed), new_rng(cfg.seed), DataCursor())]
    ref_diff = 0.0
    for d in checkpoint_dirs(run):
        loaded = ckpt_io.load_checkpoint(d, with_state=True)
        ck_model, _ = model_from_checkpoint(loaded)
        params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
        step = loaded.step
        rows.append(
            (
                step,
                metrics.get(step, {}).get("val_loss"),
                loaded.val_loss,
                recomputed_val_loss(ck_model, params, windows),
            )
        )
        if step < cfg.steps and loaded.trainer is not None:
            state = loaded.trainer
            starts.append(
                (
                    step,
                    params,
                    restore_rng(state["rng_state"]),
                    DataCursor.from_dict(state["cursor"]),
                )
            )
        if d == checkpoint_dirs(run)[-1]:
            ref = reference_loss(cfg.family, mcfg, params, windows)
            ref_diff = abs(ref - rows[-1][3])
    val_diff = max(abs(r - c) for _, r, _, c in rows if r is not None) if rows else math.inf
    stamp_diff = max((abs(s - c) for _, _, s, c in rows if s is not None), default=math.inf)
    unreported = sum(1 for _, r, _, _ in rows if r is None)
    # the step after each checkpoint: its loss and grad norm from the saved state
    loss_rel, norm_rel = 0.0, 0.0
    for step, params, rng, cursor in starts:
        batch, _ = task.draw_step(rng, cursor, cfg.batch_size * cfg.grad_accum)
        loss, norm = step_loss_and_norm(model, params, batch, cfg.grad_accum)
        rec = metrics.get(step + 1, {})
        loss_rel = max(loss_rel, rel(rec.get("loss", math.inf), loss))
        norm_rel = max(norm_rel, rel(rec.get("grad_norm", math.inf), norm))
    lr_rel = max(rel(rec["lr"], lr_schedule(cfg, s - 1)) for s, rec in metrics.items() if s > 0)
    vals = [c for _, _, _, c in rows]
    for step, _, _, c in rows:
        ctx.metric("val_loss", c, step=step)
    for s, rec in sorted(metrics.items()):
        if "loss" in rec:
            ctx.metric("train_loss", rec["loss"], step=s)
    ctx.attach(run / "metrics.jsonl", "metrics.jsonl")
    return {
        "checkpoints": len(rows) - 1,
        "val_losses": [round(v, 5) for v in vals],
        "val_loss_decreasing": all(b < a for a, b in zip(vals, vals[1:], strict=False)),
        "val_loss_drop": vals[0] - vals[-1],
        "val_loss_max_abs_diff": val_diff,
        "stamped_val_loss_max_abs_diff": stamp_diff,
        "unreported_val_losses": unreported,
        "reference_engine_abs_diff": ref_diff,
        "train_loss_max_rel_diff": loss_rel,
        "grad_norm_max_rel_diff": norm_rel,
        "lr_max_rel_diff": lr_rel,
        "steps_recomputed": len(starts),
    }


# ---------------------------------------------------------------- AC-TRAIN-004


def grad_rel_err(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """max over tensors of ||a - b|| / ||b|| (float64); inf when the names differ."""
    import numpy as np

    if set(a) != set(b):
        return math.inf
    worst = 0.0
    for n in b:
        ref = np.asarray(b[n], dtype=np.float64)
        diff = np.linalg.norm(np.asarray(a[n], dtype=np.float64) - ref)
        worst = max(worst, float(diff / max(np.linalg.norm(ref), 1e-30)))
    return worst


def grad_accumulation(ctx: CheckContext) -> dict[str, Any]:
    """k micro-batches of b windows through the trainer's accumulation equal one batch of
    k*b windows: the gradient, the loss, and the weights after a few trained steps, the
    weights judged against the noise floor of float32 summation order (the largest
    distance of the one-batch run again on ``floor_threads`` threads), measured in the
    same check.

    The 2-thread run is the floor only if its data parallelism is right, so that is
    observed too: ``DataParallel(model, 2)``'s loss and gradient on the one batch and on
    a batch of odd size (split unevenly over the workers, which a batch size that 2
    divides never is; ``--threads N`` takes any batch) against the single call (issue
    13, class 1: a form a documented option allows, never generated)."""
    import numpy as np

    from kernels import checkpoint as ckpt_io
    from kernels.parallel import DataParallel
    from kernels.train import DataCursor, accumulate_gradients, build_task, new_rng, train

    k, b = int(ctx.params["k"]), int(ctx.params["micro_batch"])
    seed = run_seed(ctx)
    acc = config_from(ctx.params, seed=seed, batch_size=b, grad_accum=k)
    one = config_from(ctx.params, seed=seed, batch_size=k * b, grad_accum=1)
    model, task, _, _, _ = build_task(acc, None)
    params = model.init_params(seed)
    batch, _ = task.draw_step(new_rng(seed), DataCursor(), k * b)
    loss_one, grads_one = model.loss_and_grads(params, batch)
    loss_acc, grads_acc = accumulate_gradients(task, params, task.split(batch, k))
    odd = np.ascontiguousarray(batch[: len(batch) - 1 + len(batch) % 2])
    dp_grad, dp_loss, dp_rows = 0.0, 0.0, []
    with DataParallel(model, 2) as dp:
        for rows in (batch, odd):
            loss_1, grads_1 = model.loss_and_grads(params, rows)
            loss_2, grads_2 = dp.loss_and_grads(params, rows)
            dp_grad = max(dp_grad, grad_rel_err(grads_2, grads_1))
            dp_loss = max(dp_loss, abs(float(loss_2) - float(loss_1)))
            dp_rows.append(len(rows))
    # the noise floor: the one-batch run again on 2, 3, ... threads is the same
    # mathematics in other float32 summation orders; AdamW (eps 1e-8) turns such rounding
    # in near-zero gradient coordinates into weight differences of up to ~lr/20. One
    # order is one sample of that noise and can fall far below it (gpt2, k 3, b 3, seed
    # 97: 1.8e-6 on 2 threads, 5.7e-5 on 3, accumulation 5.8e-5), so the floor is the
    # largest of them. Accumulation is one more order, judged against it.
    threads = [int(t) for t in ctx.params.get("floor_threads", [2])]
    orders = [(f"one-batch-{t}-threads", config_from(ctx.params, seed=seed, batch_size=k * b,
                                                      grad_accum=1, threads=t))
              for t in threads]  # fmt: skip
    runs = {}
    for name, cfg in (("accumulated", acc), ("one-batch", one), *orders):
        train(cfg, ctx.scratch / name)
        runs[name] = ckpt_io.load_checkpoint(ctx.scratch / name)
    wa, wb = runs["accumulated"].params, runs["one-batch"].params
    weights_diff = max(float(np.max(np.abs(wa[n] - wb[n]))) for n in wb)
    floors = {
        name: max(float(np.max(np.abs(runs[name].params[n] - wb[n]))) for n in wb)
        for name, _ in orders
    }
    floor = max(floors.values())
    floor_min = float(ctx.params.get("floor_min", 1e-6))
    va, vb = runs["accumulated"].val_loss, runs["one-batch"].val_loss
    return {
        "k": k,
        "micro_batch": b,
        "family": acc.family,
        "grad_max_rel_err": grad_rel_err(grads_acc, grads_one),
        "loss_abs_err": abs(float(loss_acc) - float(loss_one)),
        "weights_max_abs_diff": weights_diff,
        "noise_floor_max_abs_diff": floor,
        "noise_floors": floors,
        "weights_diff_over_noise_floor": weights_diff / max(floor, floor_min),
        "val_loss_abs_diff": abs(va - vb) if va is not None and vb is not None else math.inf,
        "data_parallel_rows": dp_rows,
        "data_parallel_grad_max_rel_err": dp_grad,
        "data_parallel_loss_abs_err": dp_loss,
    }


# ---------------------------------------------------------------- AC-TRAIN-005


def trained_past_step0(run: Path) -> bool:
    """Whether a run directory shows any optimizer step (a metrics record or checkpoint)."""
    if checkpoint_dirs(run):
        return True
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return False
    return any(json.loads(x).get("step", 0) >= 1 for x in metrics.read_text().splitlines() if x)


def family_names(family: str) -> tuple[str, ...]:
    """The ways a stamp can name ``family``: slug, hf model_type, hf architecture class."""
    from kernels.checkpoint import HF_IDENTITY

    return (family, *HF_IDENTITY.get(family, ()))


def claimed_family(value: str) -> str | None:
    """The family a stamp value names (``llama``, ``LlamaForCausalLM``, ...), or None."""
    from kernels.checkpoint import HF_IDENTITY

    return next((f for f in HF_IDENTITY if value in family_names(f)), None)


def names_family(message: str, family: str) -> bool:
    """Whether an error message names ``family`` (quoted, by any of its names)."""
    return any(f"'{name}'" in message for name in family_names(family))


def contradiction_file(ctx: CheckContext, source: Path, index: int, claim: str) -> tuple[Path, str]:
    """A copy of ``source``'s weights whose architecture stamp claims ``claim``.

    The stamp is rewritten by the ``set_metadata`` fault when the fault claims this
    family, else by the same injector class here. The file has a neutral name so
    an error message cannot name a family by quoting the path."""
    from harness.falsify.faults import SetMetadata
    from kernels.checkpoint import resolve_model_file

    dest = ctx.scratch / "contradictions" / f"init-{index}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resolve_model_file(source), dest)
    fault = ctx.fault
    if fault is not None and claimed_family(str(fault.params.get("value", ""))) == claim:
        fault.inject(path=dest)
        return dest, "fault"
    SetMetadata({"key": "architecture", "value": claim}, ctx.seed).inject(path=dest)
    return dest, "check"


def init_from_checkpoint(ctx: CheckContext) -> dict[str, Any]:
    """``init`` from a trained checkpoint evaluates, at step 0, to the checkpoint's recorded
    val loss; a checkpoint whose architecture stamp contradicts its tensor names is
    refused before step 1, by an error naming both families."""
    from kernels import checkpoint as ckpt_io
    from kernels.train import read_metrics, train

    families = list(ctx.params.get("families", ["gpt2", "llama", "mlp"]))
    seed = run_seed(ctx)
    sources: dict[str, Path] = {}
    inits_ok, step0_diffs, below_random, init_stamped, errors = 0, [], 0, 0, []
    for fam in families:
        params = family_params(ctx.params, fam)
        src = ctx.scratch / f"source-{fam}"
        train(config_from(params, family=fam, seed=seed), src)
        sources[fam] = src
        recorded = ckpt_io.load_checkpoint(src).val_loss
        random_val = read_metrics(src / "metrics.jsonl")[0]["val_loss"]
        out = ctx.scratch / f"init-{fam}"
        cfg = config_from(
            params,
            family=fam,
            seed=seed + 1,
            steps=ctx.params["init_steps"],
            eval_every=ctx.params["init_steps"],
            ckpt_every=ctx.params["init_steps"],
        )
        try:
            train(cfg, out, init=src)
        except Exception as exc:  # a refused or failed init is an observation
            errors.append(f"{fam}: {type(exc).__name__}: {exc}"[:300])
            step0_diffs.append(math.inf)
            continue
        inits_ok += 1
        step0 = read_metrics(out / "metrics.jsonl")[0]["val_loss"]
        step0_diffs.append(abs(step0 - recorded) if recorded is not None else math.inf)
        below_random += step0 < random_val
        stamps = ckpt_io.read_stamps(out)
        init_stamped += stamps.get("init_sha256") == ckpt_io.weights_digest(src)
    tried = refused = naming_both = trained = 0
    attempts = []
    index = 0
    for tensors in families:
        for claim in families:
            if claim == tensors:
                continue
            index += 1
            bad, by = contradiction_file(ctx, sources[tensors], index, claim)
            for fam in (claim, tensors):  # dispatch on the stamp, and on the truth
                tried += 1
                out = ctx.scratch / "refused" / f"attempt-{tried}"
                cfg = config_from(
                    family_params(ctx.params, fam),
                    family=fam,
                    seed=seed,
                    steps=ctx.params["init_steps"],
                )
                message = ""
                try:
                    train(cfg, out, init=bad)
                except Exception as exc:  # the refusal is the observation
                    message = " ".join(str(exc).split())
                    refused += 1
                named = names_family(message, claim) and names_family(message, tensors)
                naming_both += named
                trained += trained_past_step0(out)
                attempts.append(
                    {
                        "tensors": tensors,
                        "stamped": claim,
                        "family": fam,
                        "stamp_by": by,
                        "refused": bool(message),
                        "names_both": named,
                        "message": message[:240],
                    }
                )
    ctx.attach_json("contradiction_attempts.json", attempts)
    return {
        "inits": len(families),
        "inits_ok": inits_ok,
        "init_errors": errors,
        "step0_max_abs_diff": max(step0_diffs) if step0_diffs else math.inf,
        "step0_below_random_init": below_random,
        "init_digest_stamped": init_stamped,
        "contradictions_tried": tried,
        "contradictions_refused": refused,
        "refusals_naming_both": naming_both,
        "trained_past_step0": trained,
    }


# ---------------------------------------------------------------- AC-TRAIN-006


def preflight_gate(ctx: CheckContext) -> dict[str, Any]:
    """A "ship" config below ``min_tokens_per_param`` is refused before any training (at
    several ratios up to just below the bound); one above it trains; an "ablation" config
    below it trains and is labelled ablation in its stamps, metrics and result."""
    from kernels import checkpoint as ckpt_io
    from kernels.train import PreflightError, build_task, count_params, read_metrics, train

    bound = float(ctx.params["min_tokens_per_param"])
    base = config_from(ctx.params, seed=run_seed(ctx))
    model, _, mcfg, _, _ = build_task(base, None)
    n_params = count_params(model.param_shapes())
    per_step = base.batch_size * base.grad_accum * mcfg.n_ctx

    def config_at(ratio: float, purpose: str, above: bool) -> tuple[Any, float]:
        steps = (
            math.ceil(ratio * n_params / per_step) if above else int(ratio * n_params // per_step)
        )
        cfg = config_from(
            ctx.params,
            seed=base.seed,
            steps=max(steps, 1),
            purpose=purpose,
            eval_every=max(steps, 1),
            ckpt_every=max(steps, 1),
        )
        return cfg, cfg.steps * per_step / n_params

    below = [float(r) * bound for r in ctx.params["ship_below_fractions"]]
    refused, refused_clean, tried_ratios, messages = 0, 0, [], []
    for i, target in enumerate(below):
        cfg, ratio = config_at(target, "ship", above=False)
        tried_ratios.append(round(ratio, 3))
        out = ctx.scratch / f"ship-below-{i}"
        try:
            train(cfg, out)
        except PreflightError as exc:
            refused += 1
            refused_clean += not out.exists() or not trained_past_step0(out)
            messages.append(str(exc))
    obs: dict[str, Any] = {
        "n_params": n_params,
        "ship_below_ratios": tried_ratios,
        "ship_below_all_under_bound": all(r < bound for r in tried_ratios),
        "ship_below_tried": len(below),
        "ship_below_refused": refused,
        "refused_before_training": refused_clean,
    }
    labels: dict[str, dict[str, Any]] = {}
    for name, purpose, target in (
        ("ship_above", "ship", bound * float(ctx.params["ship_above_fraction"])),
        ("ablation", "ablation", bound * float(ctx.params["ablation_fraction"])),
    ):
        cfg, ratio = config_at(target, purpose, above=True)
        out = ctx.scratch / name
        try:
            train(cfg, out)
        except PreflightError as exc:
            labels[name] = {"trained": False, "error": str(exc)[:200]}
            continue
        loaded = ckpt_io.load_checkpoint(out)
        tensors = sum(int(v.size) for v in loaded.params.values())
        recomputed = cfg.steps * per_step / tensors
        result = json.loads((out / "result.json").read_text())
        labels[name] = {
            "trained": True,
            "ratio": round(recomputed, 3),
            "stamp_purpose": loaded.stamps.get("purpose"),
            "stamp_label": loaded.stamps.get("purpose_label"),
            "metrics_purpose": read_metrics(out / "metrics.jsonl")[0].get("purpose"),
            "result_label": result.get("extra", {}).get("label"),
            "tokens_per_param_matches": math.isclose(
                float(loaded.stamps.get("tokens_per_param", "nan")), recomputed, rel_tol=1e-3
            ),
        }
    ship, abl = labels["ship_above"], labels["ablation"]
    obs.update(
        ship_above_trained=ship["trained"],
        ship_above_ratio=ship.get("ratio"),
        ship_label=ship.get("stamp_label"),
        ablation_trained=abl["trained"],
        ablation_ratio=abl.get("ratio"),
        ablation_stamp_purpose=abl.get("stamp_purpose"),
        ablation_stamp_label=abl.get("stamp_label"),
        ablation_metrics_purpose=abl.get("metrics_purpose"),
        ablation_result_label=abl.get("result_label"),
        tokens_per_param_stamped_right=bool(
            ship.get("tokens_per_param_matches") and abl.get("tokens_per_param_matches")
        ),
    )
    ctx.attach_json("preflight.json", {"refusals": messages, "runs": labels})
    return obs
