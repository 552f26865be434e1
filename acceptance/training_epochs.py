"""A trained run over several epochs, replayed checkpoint to checkpoint by an
independent optimizer (AC-TRAIN-003, issue 13 classes 2 and 3).

The other training checks stop long before the data stream wraps. This one
trains the MLP classifier on the digits set for more than three epochs, then
recomputes every checkpoint from the one before it: the saved weights, moments,
RNG state and data cursor, the model's gradients, and an AdamW written here in
float64 NumPy from the documented formula (torch.optim.AdamW with
clip_grad_norm_), with the learning rate from the check's own schedule. A
trainer whose optimizer or schedule does something different after an epoch
boundary (a step counter reset per epoch, a schedule indexed by the step within
the epoch) cannot match it. It also resumes the run from a checkpoint in the
second epoch and requires the same final bytes.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from acceptance.training import checkpoint_dirs, config_from, lr_schedule, run_seed
from acceptance.training_reruns import final_digest
from harness.context import CheckContext


def reference_adamw_step(
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    moments: dict[str, np.ndarray],
    t: int,
    lr: float,
    cfg: Any,
) -> float:
    """One AdamW step in float64 (params and moments updated in place; params are
    rounded to their own dtype, as the trainer stores them). Clipping as torch's
    ``clip_grad_norm_(max_norm=cfg.clip)``: scale ``clip / (norm + 1e-6)`` when the
    global norm exceeds it. Weight decay on matrices only. Returns the pre-clip norm."""
    b1, b2 = cfg.betas
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    scale = cfg.clip / (norm + 1e-6) if cfg.clip > 0 and norm > cfg.clip else 1.0
    bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
    for name, p in params.items():
        g = grads[name].astype(np.float64) * scale
        m = b1 * moments["m." + name] + (1.0 - b1) * g
        v = b2 * moments["v." + name] + (1.0 - b2) * g * g
        moments["m." + name], moments["v." + name] = m, v
        wd = cfg.weight_decay if p.ndim >= 2 else 0.0
        new = p.astype(np.float64) * (1.0 - lr * wd) - (lr / bc1) * m / (np.sqrt(v / bc2) + cfg.eps)
        params[name] = new.astype(p.dtype)
    return norm


def mean_gradients(model: Any, params: dict[str, np.ndarray], micro: list[Any]) -> dict[str, Any]:
    grads: dict[str, np.ndarray] = {}
    for x, y in micro:
        _, g = model.loss_and_grads(params, x, y)
        for name, value in g.items():
            grads[name] = grads.get(name, 0.0) + value.astype(np.float64) / len(micro)
    return grads


def expected_cursor(step: int, per_step: int, n: int) -> tuple[int, int]:
    """(epoch, position) of the data cursor after ``step`` steps of ``per_step`` draws
    over ``n`` examples: an epoch starts when the next draw needs it."""
    drawn = step * per_step
    epoch = max(drawn - 1, 0) // n
    return epoch, drawn - epoch * n


def resume_from(run: Path, ckpt: Path, into: Path, cfg: Any) -> str:
    """Copy ``run`` as it stood at ``ckpt`` into ``into``, resume it to the end, and
    return the final model digest."""
    from kernels.checkpoint import write_latest
    from kernels.train import train

    into.mkdir(parents=True)
    for item in run.iterdir():
        if item.name.startswith("ckpt-"):
            if item.name <= ckpt.name:
                shutil.copytree(item, into / item.name)
        elif item.is_file() and item.name != "latest":
            shutil.copy2(item, into / item.name)
    write_latest(into, ckpt.name)
    train(cfg, into, resume=True)
    return final_digest(into)


def epochs_replayed(ctx: CheckContext) -> dict[str, Any]:
    """params: TrainConfig fields of an mlp run long enough for several epochs."""
    from kernels.checkpoint import load_checkpoint
    from kernels.train import DataCursor, build_task, new_rng, restore_rng, train

    cfg = config_from(ctx.params, seed=run_seed(ctx))
    run = ctx.scratch / "run"
    train(cfg, run)
    model, task, _, _, _ = build_task(cfg, None)
    n, per_step = task.n_units, cfg.batch_size * cfg.grad_accum
    params = {k: np.ascontiguousarray(v) for k, v in model.init_params(cfg.seed).items()}
    moments = {f"{w}.{k}": np.zeros(v.shape) for k, v in params.items() for w in "mv"}
    state: dict[str, Any] = {
        "step": 0, "params": params, "moments": moments, "rng": new_rng(cfg.seed),
        "cursor": DataCursor(),
    }  # fmt: skip
    worst, cursors_wrong, steps_wrong, replayed, epochs = 0.0, 0, 0, 0, []
    missing_moments = 0
    second_epoch_ckpt: Path | None = None
    for d in checkpoint_dirs(run):
        loaded = load_checkpoint(d, with_state=True)
        assert loaded.optimizer is not None and loaded.trainer is not None
        p, mom, rng, cursor = state["params"], state["moments"], state["rng"], state["cursor"]
        for s in range(state["step"], loaded.step):
            batch, cursor = task.draw_step(rng, cursor, per_step)
            grads = mean_gradients(model, p, task.split(batch, cfg.grad_accum))
            reference_adamw_step(p, grads, mom, s + 1, lr_schedule(cfg, s), cfg)
            replayed += 1
        scale = max(float(np.max(np.abs(v))) for v in loaded.params.values())
        diff = max(float(np.max(np.abs(p[k].astype(np.float64) - loaded.params[k]))) for k in p)
        worst = max(worst, diff / scale)
        saved = DataCursor.from_dict(loaded.trainer["cursor"])
        epochs.append(saved.epoch)
        cursors_wrong += (saved.epoch, saved.pos) != expected_cursor(loaded.step, per_step, n)
        steps_wrong += int(np.asarray(loaded.optimizer["step"]).reshape(-1)[0]) != loaded.step
        if saved.epoch == 1 and second_epoch_ckpt is None and loaded.step < cfg.steps:
            second_epoch_ckpt = d
        # the next segment starts from what the trainer saved (errors never accumulate);
        # a checkpoint without a parameter's moments is counted, and they start at zero
        saved_moments = {k: v for k, v in loaded.optimizer.items() if k != "step"}
        wanted = [f"{w}.{k}" for k in loaded.params for w in "mv"]
        missing_moments += any(k not in saved_moments for k in wanted)
        state = {
            "step": loaded.step,
            "params": {k: np.array(v) for k, v in loaded.params.items()},
            "moments": {
                k: np.asarray(saved_moments[k], dtype=np.float64)
                if k in saved_moments
                else np.zeros(loaded.params[k.split(".", 1)[1]].shape)
                for k in wanted
            },
            "rng": restore_rng(loaded.trainer["rng_state"]),
            "cursor": saved,
        }
    resumed_same = False
    if second_epoch_ckpt is not None:
        resumed_same = resume_from(run, second_epoch_ckpt, ctx.scratch / "resumed", cfg) == (
            final_digest(run)
        )
    ctx.attach(run / "metrics.jsonl", "metrics.jsonl")
    return {
        "train_examples": n,
        "epochs_reached": (max(epochs) + 1) if epochs else 0,
        "checkpoints": len(epochs),
        "checkpoint_epochs": epochs,
        "steps_replayed": replayed,
        "replay_max_rel_diff": worst,
        "cursor_mismatches": cursors_wrong,
        "optimizer_step_mismatches": steps_wrong,
        "checkpoints_missing_moments": missing_moments,
        "resumed_in_second_epoch": second_epoch_ckpt is not None,
        "resumed_weights_identical": resumed_same,
    }
