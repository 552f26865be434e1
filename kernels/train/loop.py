"""The training loop: ``train`` (pre-flight, governance, fresh or resumed state, steps,
evaluations, checkpoints, the result, a stop at a step boundary on request) and the
per-step pieces it carries."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import kernels.train as _t  # calls to trainer functions go through the package
from kernels import checkpoint as ckpt_io
from kernels import lifecycle
from kernels.train.config import (
    CONFIG_FILE,
    METRICS_FILE,
    PROVENANCE_FILE,
    RESULT_FILE,
    TrainConfig,
    TrainError,
    TrainResult,
)
from kernels.train.data import DataCursor
from kernels.train.stop import StopFlag

ProgressFn = Callable[[int, int, Mapping[str, Any]], None]


def limit_threads(n: int) -> None:
    """Pin numba and both bundled OpenBLAS copies to n threads (see kernels.parallel)."""
    from kernels.parallel import limit_threads as _limit_threads

    _limit_threads(n)


@dataclass
class LoopState:
    """What the loop carries from step to step (all of it goes into each checkpoint,
    except ``stop``: the stop request the loop honours after each step)."""

    params: dict[str, np.ndarray]
    step: int
    rng: np.random.Generator
    cursor: DataCursor
    tokens_seen: int
    val_history: list[dict[str, Any]]
    last_val: float | None
    stop: StopFlag | None = None


def resumed_state(resumed: ckpt_io.Checkpoint, model: Any, opt: Any, metrics_path: Path):
    """Loop state, optimizer state and metrics file exactly as at the resumed checkpoint."""
    assert resumed.optimizer is not None and resumed.trainer is not None  # load_resume_state
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in resumed.params.items()}
    ckpt_io.check_coverage(params, model.param_shapes(), str(resumed.path))
    _t.restore_optimizer(opt, resumed.optimizer, resumed.optimizer_meta)
    state = resumed.trainer
    step = int(state["step"])
    _t.truncate_metrics(metrics_path, step)
    return LoopState(
        params=params, step=step, rng=_t.restore_rng(state["rng_state"]),
        cursor=DataCursor.from_dict(state["cursor"]),
        tokens_seen=int(state.get("tokens_seen", 0)),
        val_history=list(state.get("val_history", [])), last_val=resumed.val_loss,
    )  # fmt: skip


def fresh_state(cfg: TrainConfig, model: Any, task: Any, init_ckpt, spec, metrics_path: Path):
    """Initial (or ``--init``) weights, the seeded generator, and the step-0 evaluation."""
    params = (
        _t.init_weights(init_ckpt, model, cfg.family) if init_ckpt else model.init_params(cfg.seed)
    )
    ev = task.evaluate(params)
    if init_ckpt is not None:
        _t.check_init_val_loss(init_ckpt, ev["val_loss"], spec)
    metrics_path.write_text("")
    _t.append_metrics(metrics_path, {"step": 0, **ev, "purpose": cfg.purpose})
    return LoopState(
        params=params, step=0, rng=_t.new_rng(cfg.seed), cursor=DataCursor(), tokens_seen=0,
        val_history=[{"step": 0, **ev}], last_val=ev["val_loss"],
    )  # fmt: skip


def train_step(cfg: TrainConfig, task: Any, opt: Any, st: LoopState) -> dict[str, Any]:
    """Draw a step's data, accumulate gradients, update; return its metrics record."""
    t_step = time.perf_counter()
    batch, st.cursor = task.draw_step(st.rng, st.cursor, cfg.batch_size * cfg.grad_accum)
    loss, grads = _t.accumulate_gradients(task, st.params, task.split(batch, cfg.grad_accum))
    lr = _t.learning_rate(cfg, st.step)
    grad_norm = _t.apply_update(opt, st.params, grads, lr)
    st.step += 1
    units = task.units_in(batch)
    st.tokens_seen += units
    return {
        "step": st.step, "loss": float(loss), "lr": lr, "grad_norm": float(grad_norm),
        "tokens_per_s": units / max(time.perf_counter() - t_step, 1e-9),
    }  # fmt: skip


def authorize_data(records: list[dict[str, Any]]) -> Any:
    """Data governance before step 1 (policy, PII approval); every decision is an audit
    event (``kernels.data.governance``). A refusal leaves nothing written."""
    from kernels.data.governance import GovernanceError, authorize_training

    try:
        return authorize_training([r["name"] for r in records])
    except GovernanceError as exc:
        raise TrainError(f"refused by data governance: {exc}") from exc


def train(
    cfg: TrainConfig,
    out_dir: Path | str,
    init: Path | str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    stop: StopFlag | None = None,
) -> TrainResult:
    """Train per ``cfg`` into ``out_dir``; ``resume`` continues from ``out_dir/latest``.

    ``stop`` (e.g. from ``stop_on_signals``, which SIGTERM and SIGINT set): once it is
    set, the step in progress finishes, a complete checkpoint of it is written (not
    evaluated unless the step evaluates anyway: its ``val_loss`` stamp is then empty)
    and the result comes back with ``stopped=True`` and no ``result.json``; resuming
    gives the bytes of a run that was never stopped."""
    from kernels.parallel import DataParallel, engine_threads

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    engine_threads(cfg.threads)
    resumed = _t.load_resume_state(out_dir, cfg) if resume else None
    if not resume and ckpt_io.latest_checkpoint(out_dir) is not None:
        raise TrainError(f"{out_dir} already holds a run; use resume or another directory")
    init_ckpt = _t.read_init_checkpoint(init) if init is not None and resumed is None else None
    model, task, mcfg, records, data = _t.build_task(cfg, init_ckpt)
    n_params = _t.count_params(model.param_shapes())
    label, ratio = _t.preflight(cfg, n_params, getattr(mcfg, "n_ctx", 1))
    decision = _t.authorize_data(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    lifecycle.record(
        "training.start", run=str(out_dir), family=cfg.family, purpose=cfg.purpose,
        steps=cfg.steps, seed=cfg.seed, resume=resumed is not None,
        config_sha256=ckpt_io.sha256_bytes(json.dumps(cfg.to_dict(), sort_keys=True).encode()),
        datasets=[{"name": r["name"], "sha256": r.get("sha256")} for r in records],
        governance=decision.event_hash,
        init_sha256=ckpt_io.weights_digest(init) if init is not None else None,
    )  # fmt: skip

    opt = _t.build_optimizer(cfg)
    metrics_path = out_dir / METRICS_FILE
    extra_stamps: dict[str, Any] = {"purpose_label": label, "tokens_per_param": f"{ratio:.4f}"}
    if resumed is not None:
        st = _t.resumed_state(resumed, model, opt, metrics_path)
        if "init_sha256" in resumed.stamps:
            extra_stamps["init_sha256"] = resumed.stamps["init_sha256"]
    else:
        ckpt_io.atomic_write_text(out_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=1))
        prov = _t.provenance(cfg, records, str(init) if init else None)
        ckpt_io.atomic_write_text(out_dir / PROVENANCE_FILE, json.dumps(prov, indent=1))
        spec = _t.eval_spec(cfg, mcfg)
        st = _t.fresh_state(cfg, model, task, init_ckpt, spec, metrics_path)
        if init_ckpt is not None:
            extra_stamps["init_sha256"] = ckpt_io.weights_digest(init)

    start_step = st.step
    st.stop = stop
    stopped = False
    process = f"{os.getpid()}-{time.time_ns()}"
    task.grads_by = DataParallel(model, cfg.threads)
    try:
        while st.step < cfg.steps:
            record = _t.train_step(cfg, task, opt, st)
            periodic = st.step % cfg.ckpt_every == 0 or st.step == cfg.steps
            evaluated = st.step % cfg.eval_every == 0 or periodic
            if evaluated:
                ev = task.evaluate(st.params)
                st.last_val = ev["val_loss"]
                record.update(ev)
                st.val_history.append({"step": st.step, **ev})
            _t.append_metrics(metrics_path, record)
            # asked once per step, after it completed (a request arriving while this
            # step's checkpoint is written is honoured after the next step)
            stopped = st.step < cfg.steps and _t.stop_requested(st)
            if periodic or stopped:
                val = st.last_val if evaluated else None  # a stop checkpoint is not evaluated
                stamps = _t.build_stamps(cfg, mcfg, data, records, st.step, val, extra_stamps)
                state = _t.trainer_state(
                    cfg, st.step, st.rng, st.cursor, st.tokens_seen, st.val_history
                )
                _t.write_checkpoint(out_dir, cfg, st.step, st.params, opt, stamps, state)
                # usage so far, so that a process killed later still has a record
                _t.record_usage(
                    out_dir, process, start_step, st.step, resumed is not None, t0, False
                )
            if progress is not None:
                progress(st.step, cfg.steps, record)
            if stopped:
                break
    finally:
        task.grads_by.close()

    final = ckpt_io.latest_checkpoint(out_dir)
    usage = _t.resource_usage(t0)
    result = TrainResult(
        out_dir=out_dir, step=st.step, val_loss=st.last_val, checkpoint=final,
        weights_sha256=ckpt_io.weights_digest(final) if final else "",
        purpose=cfg.purpose, tokens_per_param=ratio, n_params=n_params, resources=usage,
        extra={"label": label, "tokens_seen": st.tokens_seen}, stopped=stopped,
    )  # fmt: skip
    lifecycle.record(
        "training.finish", run=str(out_dir), step=st.step, stopped=stopped,
        checkpoint=str(final) if final else None, weights_sha256=result.weights_sha256,
        val_loss=st.last_val,
    )  # fmt: skip
    if stopped:  # not finished: no result.json; the usage line of the stop checkpoint stands
        return result
    summary = {**asdict(result), "out_dir": str(out_dir), "checkpoint": str(final)}
    ckpt_io.atomic_write_text(out_dir / RESULT_FILE, json.dumps(summary, indent=1))
    _t.record_usage(out_dir, process, start_step, st.step, resumed is not None, t0, True, usage)
    return result
