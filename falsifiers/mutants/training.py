"""Known-bad variants of the trainer and its checkpoints (for contracts/training.yaml).

Each function replaces one module-level piece of ``kernels.train`` or
``kernels.checkpoint`` (the name where the trainer looks it up at call time)
with a plausible bug that a real training stack has shipped: a shuffle that is
not seeded, a checkpoint that forgets the optimizer or the RNG, a trainer that
reports metrics without training, an accumulation that sums, an ``--init``
that trusts the stamp or silently starts from random weights, a pre-flight
gate that waves everything through. The checks of contracts/training.yaml
must turn red (KILLED) under every one of them.

Where a check trains in a child process (reruns, preemption), the child applies
the same patches as the worker (``harness.falsify.active_patches``, handed over by
``acceptance.training_child``), so these mutants are the code the child runs too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kernels.checkpoint import check_architecture_stamp as _check_architecture_stamp
from kernels.checkpoint import check_coverage as _check_coverage
from kernels.train import record_usage as _record_usage
from kernels.train.loop import train_step as _REAL_TRAIN_STEP

# ---------------------------------------------------------------- AC-TRAIN-001


def unseeded_shuffle_order(order_seed: int, n: int) -> np.ndarray:
    """The epoch order drawn from fresh OS entropy instead of the recorded order seed:
    every run sees its data in a different order, so no rerun reproduces the weights
    (the run still "records" its seed, which is what makes this bug hard to see)."""
    return np.random.default_rng().permutation(n)


def provenance_config_only(cfg: Any, records: list[dict[str, Any]], init: str | None) -> dict:
    """A provenance record with the hyperparameters and the seed only: no code commit,
    no dependency manifest or digest, no dataset checksums, no environment."""
    return {"train_config": cfg.to_dict(), "seed": cfg.seed, "init": init}


# ---------------------------------------------------------------- AC-TRAIN-002


def optimizer_arrays_without_moments(opt: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A checkpoint that saves the optimizer's step count but not its AdamW moments:
    a resumed run restarts m and v from zero (loads fine, trains differently)."""
    return {"step": np.array(opt.t, dtype=np.int64)}, {"optimizer": type(opt).__name__}


def trainer_state_without_rng(
    cfg: Any,
    step: int,
    rng: np.random.Generator,
    cursor: Any,
    tokens_seen: int,
    val_history: list[dict[str, Any]],
) -> dict[str, Any]:
    """A checkpoint whose trainer state has no real RNG state or data cursor: it stores a
    generator freshly seeded from the config and a cursor at the start of epoch 0, so a
    resumed run re-reads the first batches instead of the ones it was due."""
    from kernels.train import DataCursor, new_rng, rng_state

    return {
        "step": step,
        "rng_state": rng_state(new_rng(cfg.seed)),
        "cursor": DataCursor().to_dict(),
        "schedule": {
            "kind": "warmup+cosine",
            "lr": cfg.lr,
            "warmup": cfg.warmup,
            "steps": cfg.steps,
            "min_lr": cfg.min_lr,
        },
        "tokens_seen": tokens_seen,
        "val_history": val_history,
        "train_config": cfg.to_dict(),
    }


def save_checkpoint_latest_first(
    run_dir: Path | str,
    step: int,
    params: Mapping[str, np.ndarray],
    stamps: Mapping[str, str],
    optimizer: Mapping[str, np.ndarray] | None = None,
    optimizer_meta: Mapping[str, str] | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> Path:
    """A checkpoint writer that moves ``latest`` first and then writes the files straight
    into the final directory: a kill during the write leaves ``latest`` pointing at a
    half-written checkpoint."""
    from kernels import checkpoint as ck

    run_dir = Path(run_dir)
    final = run_dir / ck.checkpoint_name(step)
    final.mkdir(parents=True, exist_ok=True)
    ck.write_latest(run_dir, final.name)
    digests = {ck.MODEL_FILE: ck.save_weights(final / ck.MODEL_FILE, params, stamps)}
    if optimizer is not None:
        digests[ck.OPTIMIZER_FILE] = ck.save_optimizer_state(
            final / ck.OPTIMIZER_FILE, optimizer, optimizer_meta or {}
        )
    if trainer is not None:
        digests[ck.TRAINER_FILE] = ck.save_trainer_state(final / ck.TRAINER_FILE, trainer)
    ck.write_digests(final, digests)
    return final


def resource_usage_rss_as_bytes(t0_wall: float) -> dict[str, float]:
    """``ru_maxrss`` read as bytes (its unit on macOS) on Linux, where it is KiB: the
    peak memory recorded for Finance is 1024 times too small (kernels.train:resource_usage)."""
    import resource
    import time

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - t0_wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024.0**2,
    }


def record_usage_only_when_final(
    out_dir: Path,
    process: str,
    from_step: int,
    to_step: int,
    resumed: bool,
    t0: float,
    final: bool,
    usage: dict[str, float] | None = None,
) -> None:
    """Usage written only when a run finishes: a preempted process leaves no record
    (kernels.train:record_usage)."""
    if final:
        _record_usage(out_dir, process, from_step, to_step, resumed, t0, final, usage)


# ---------------------------------------------------------------- AC-TRAIN-003


def update_skipped(
    opt: Any, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float
) -> float:
    """The update step as a no-op: gradients are computed and their norm reported, every
    metric line is written, but the weights never change ("training simulation")."""
    return math.sqrt(
        sum(float(np.sum(np.asarray(g, dtype=np.float64) ** 2)) for g in grads.values())
    )


_SIMULATED = {"calls": 0}


def simulated_val_loss(model: Any, params: Mapping[str, np.ndarray], windows: np.ndarray) -> float:
    """An evaluation that returns a made-up, nicely decreasing val loss instead of
    measuring the weights ("metrics show decreasing loss")."""
    _SIMULATED["calls"] += 1
    return 7.0 * 0.97 ** _SIMULATED["calls"]


def optimizer_recreated_each_epoch(cfg: Any, task: Any, opt: Any, st: Any) -> dict[str, Any]:
    """The optimizer built inside the epoch loop, as many training scripts do: when a
    step starts a new epoch, AdamW's moments and step counter start again from zero, so
    bias correction restarts and the first updates of every epoch are too large
    (kernels.train.loop:train_step). Invisible until the data stream wraps."""
    epoch = st.cursor.epoch
    record = _REAL_TRAIN_STEP(cfg, task, opt, st)
    if st.cursor.epoch != epoch:
        opt.t, opt.state = 0, {}
    return record


def learning_rate_within_epoch(cfg: Any, task: Any, opt: Any, st: Any) -> dict[str, Any]:
    """The schedule indexed by the step within the epoch (an epoch-local batch counter
    handed to the scheduler): warmup and decay restart at every epoch
    (kernels.train.loop:train_step). Invisible until the data stream wraps."""
    import time

    from kernels import train as _t

    per_epoch = max(1, task.n_units // (cfg.batch_size * cfg.grad_accum))
    t_step = time.perf_counter()
    batch, st.cursor = task.draw_step(st.rng, st.cursor, cfg.batch_size * cfg.grad_accum)
    loss, grads = _t.accumulate_gradients(task, st.params, task.split(batch, cfg.grad_accum))
    lr = _t.learning_rate(cfg, st.step % per_epoch)
    grad_norm = _t.apply_update(opt, st.params, grads, lr)
    st.step += 1
    units = task.units_in(batch)
    st.tokens_seen += units
    return {
        "step": st.step, "loss": float(loss), "lr": lr, "grad_norm": float(grad_norm),
        "tokens_per_s": units / max(time.perf_counter() - t_step, 1e-9),
    }  # fmt: skip


# ---------------------------------------------------------------- AC-TRAIN-004


def summing_accumulation(
    task: Any, params: Mapping[str, np.ndarray], micro_batches: list[Any]
) -> tuple[float, dict[str, np.ndarray]]:
    """Gradient accumulation that sums the k micro-batch gradients instead of averaging
    them: k times the gradient of one batch of k times the size."""
    loss_sum, grads = 0.0, {}
    for batch in micro_batches:
        loss, g = task.loss_and_grads(params, batch)
        loss_sum += float(loss)
        for name, value in g.items():
            grads[name] = grads[name] + value if name in grads else np.array(value, copy=True)
    return loss_sum / len(micro_batches), grads


def learning_rate_per_micro_batch(cfg: Any, step: int) -> float:
    """The schedule stepped once per micro-batch instead of once per optimizer step:
    with accumulation, warmup ends and the decay runs ``grad_accum`` times too early
    (kernels.train:learning_rate). Gradients are untouched; only trained weights show it."""
    from kernels.train import tasks as _tasks

    return float(_tasks.learning_rate(cfg, step * cfg.grad_accum))


def dropping_accumulation(
    task: Any, params: Mapping[str, np.ndarray], micro_batches: list[Any]
) -> tuple[float, dict[str, np.ndarray]]:
    """Gradient accumulation that silently drops the last micro-batch (an off-by-one in the
    accumulation loop) and averages the rest."""
    kept = micro_batches[:-1] or micro_batches
    loss_sum, grads = 0.0, {}
    for batch in kept:
        loss, g = task.loss_and_grads(params, batch)
        loss_sum += float(loss)
        for name, value in g.items():
            grads[name] = grads[name] + value if name in grads else np.array(value, copy=True)
    scale = np.float32(1.0 / len(kept))
    return loss_sum / len(kept), {n: v * scale for n, v in grads.items()}


# ---------------------------------------------------------------- AC-TRAIN-005


def trust_stamp_loader(path: Path | str) -> Any:
    """The ``--init`` loader that dispatches on the architecture stamp and never looks at
    the tensor names (the seed's step 1: "reads the wrong architecture stamp")."""
    from kernels import checkpoint as ck

    model_file = ck.resolve_model_file(path)
    params, stamps = ck.read_safetensors(model_file)
    family = ck.family_of_stamps(stamps) or "gpt2"
    return ck.Checkpoint(path=model_file.parent, params=params, stamps=stamps, family=family)


def random_init(loaded: Any, model: Any, family: str) -> dict[str, np.ndarray]:
    """``--init`` that ignores the checkpoint's weights and starts from random ones."""
    return model.init_params(0)


def skip_init_check(loaded: Any, val_loss: float, spec: Mapping[str, Any]) -> None:
    """No comparison of the step-0 eval with the checkpoint's recorded val loss."""
    return None


def random_fallback_init(loaded: Any, model: Any, family: str) -> dict[str, np.ndarray]:
    """The seed's step 3: look the model's tensor names up in the checkpoint; when they are
    not all there (the stamp named the wrong family), fall back to random init."""
    shapes = model.param_shapes()
    if all(
        n in loaded.params and tuple(loaded.params[n].shape) == tuple(s) for n, s in shapes.items()
    ):
        return {n: np.ascontiguousarray(loaded.params[n], dtype=np.float32) for n in shapes}
    return model.init_params(0)


# ---------------------------------------------------------------- AC-TRAIN-006


def tokens_per_step_without_accumulation(cfg: Any, n_ctx: int) -> int:
    """Tokens per optimizer step counted from one micro-batch, the accumulation
    forgotten: with grad_accum > 1 a ship run is refused however long it trains
    (kernels.train:tokens_per_step)."""
    per_example = n_ctx if cfg.family != "mlp" else 1
    return int(cfg.batch_size * per_example)


def preflight_threshold_10(cfg: Any, n_params: int, n_ctx: int) -> tuple[str, float]:
    """The older gate (seed 001 §83: hard only below 10 tokens per parameter): a ship run in
    the 10-20x "ablation band" goes through."""
    from kernels.train import PreflightError, tokens_per_step

    ratio = cfg.steps * tokens_per_step(cfg, n_ctx) / max(n_params, 1)
    if cfg.purpose == "ship" and ratio < 10.0:
        raise PreflightError(f"pre-flight: {ratio:.2f} tokens per parameter (< 10)")
    return ("ship" if cfg.purpose == "ship" else "ablation (not for release)"), ratio


def preflight_unlabelled(cfg: Any, n_params: int, n_ctx: int) -> tuple[str, float]:
    """A gate that refuses correctly but labels every run it lets through "ship": an
    ablation is indistinguishable from a release candidate."""
    from kernels.train import MIN_TOKENS_PER_PARAM, PreflightError, tokens_per_step

    ratio = cfg.steps * tokens_per_step(cfg, n_ctx) / max(n_params, 1)
    if cfg.purpose == "ship" and ratio < MIN_TOKENS_PER_PARAM:
        raise PreflightError(f"pre-flight: {ratio:.2f} tokens per parameter")
    return "ship", ratio


# ---------------------------------------------------------------- AC-TRAIN-005: every family


def identity_check_lm_only(stamps: Mapping[str, str], names: Any, where: str) -> str:
    """The identity check run only for the language-model families: "a classifier has no
    Hugging Face class to compare", so a classifier checkpoint's stamps are never compared
    with its tensor names (an mlp stamped llama loads as the classifier it is)."""
    from kernels.checkpoint import detect_tensor_family

    names = list(names)
    if detect_tensor_family(names) == "mlp":
        return "mlp"
    return _check_architecture_stamp(stamps, names, where)


# ---------------------------------------------------------------- AC-TRAIN-005: the tensors


def _coverage(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    shapes: bool = True,
    extras: bool = True,
) -> None:
    """The loader's coverage check as it was before dtypes were checked, with its shape or
    extra-tensor comparison optionally left out (the variants below)."""
    from kernels.checkpoint import CheckpointError

    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{where}: tensors do not cover the model: missing {missing[0]}")
    if shapes:
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != tuple(shape):
                raise CheckpointError(
                    f"{where}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                    f"the model expects {tuple(shape)}"
                )
    extra = sorted(set(tensors) - set(expected))
    if extras and extra:
        raise CheckpointError(f"{where}: unexpected tensors not in the model: {extra[0]}")


def coverage_names_only(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    dtype: Any = None,
) -> None:
    """A loader that compares the tensor names with the model's and nothing else: a
    transposed or truncated tensor gets through to the first forward pass."""
    _coverage(tensors, expected, where, shapes=False)


def coverage_ignoring_extras(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    dtype: Any = None,
) -> None:
    """``load_state_dict(strict=False)``: missing and misshapen tensors are refused, tensors
    the model does not have are silently ignored."""
    _coverage(tensors, expected, where, extras=False)
    if dtype is not None:
        _check_dtypes(tensors, expected, where, dtype)


def coverage_casting_dtypes(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    dtype: Any = None,
) -> None:
    """A loader that checks names and shapes and leaves dtypes to a cast (``astype``): a
    float16 tensor trains as float32, its lost bits never reported."""
    _coverage(tensors, expected, where)


def coverage_counting_not_naming(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    dtype: Any = None,
) -> None:
    """The full check with a "tidier" message that counts the bad tensors and names none
    (the user cannot tell which tensor to fix)."""
    from kernels.checkpoint import CheckpointError

    try:
        _check_coverage(tensors, expected, where, dtype)
    except CheckpointError:
        bad = len(set(expected) ^ set(tensors)) or 1
        raise CheckpointError(
            f"{where}: checkpoint does not match the model ({bad} tensor(s) differ)"
        ) from None


def _check_dtypes(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, Any], where: str, dtype: Any
) -> None:
    from kernels.checkpoint import CheckpointError

    for name in expected:
        if name in tensors and tensors[name].dtype != np.dtype(dtype):
            raise CheckpointError(f"{where}: tensor {name} has dtype {tensors[name].dtype}")


def init_weights_checked_only_with_config_stamp(
    loaded: Any, model: Any, family: str
) -> dict[str, np.ndarray]:
    """``--init`` that leaves the tensor check to the loader ("load_checkpoint already checks
    coverage"), which runs it only against a stamped config: a checkpoint without a config
    stamp is taken as it is, cast to float32."""
    from kernels.checkpoint import CheckpointError

    if loaded.family != family:
        raise CheckpointError(
            f"{loaded.path}: checkpoint architecture {loaded.family!r} does not match the "
            f"requested family {family!r}"
        )
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}


# ---------------------------------------------------------------- the stream over epochs


def next_indices_dropping_epoch_tail(
    rng: Any, cursor: Any, n: int, count: int
) -> tuple[np.ndarray, Any]:
    """A new epoch starts whenever the rest of the current one is shorter than a batch:
    the last windows of every epoch are never visited (kernels.train:next_indices)."""
    from kernels.train import DataCursor, draw_order_seed, shuffle_order

    epoch, pos, order_seed = cursor.epoch, cursor.pos, cursor.order_seed
    if order_seed is None or pos + count > n:
        if order_seed is not None:
            epoch, pos = epoch + 1, 0
        order_seed = draw_order_seed(rng)
    idx = shuffle_order(order_seed, n)[pos : pos + count]
    return idx, DataCursor(epoch, pos + len(idx), order_seed)


def next_indices_one_order(rng: Any, cursor: Any, n: int, count: int) -> tuple[np.ndarray, Any]:
    """The order's seed is drawn once, for the first epoch: every later epoch repeats the
    first one's order (kernels.train:next_indices)."""
    from kernels.train import DataCursor, draw_order_seed, shuffle_order

    out: list[np.ndarray] = []
    epoch, pos, order_seed = cursor.epoch, cursor.pos, cursor.order_seed
    need = count
    while need:
        if order_seed is None:
            order_seed = draw_order_seed(rng)
        if pos >= n:
            epoch, pos = epoch + 1, 0
        order = shuffle_order(order_seed, n)
        take = min(need, n - pos)
        out.append(order[pos : pos + take])
        pos += take
        need -= take
    return np.concatenate(out), DataCursor(epoch, pos, order_seed)
