"""What a run writes and reads back: metrics lines, checkpoints (stamps, trainer and
optimizer state), the ``--init`` and resume checkpoints, provenance, and the
resources each process used."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import kernels.train as _t  # calls to trainer functions go through the package
from kernels import checkpoint as ckpt_io
from kernels import lifecycle
from kernels.train.config import (
    CONFIG_FILE,
    DIGITS_NAME,
    EVAL_CHUNK,
    RESOURCES_FILE,
    TrainConfig,
    TrainError,
)
from kernels.train.data import DataCursor, LMData

# ---------------------------------------------------------------- metrics


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (left by a killed run) before resuming from ``step``."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("step", 0) <= step:
            keep.append(line)
    ckpt_io.atomic_write_text(path, "".join(line + "\n" for line in keep))


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- --init


def read_init_checkpoint(path: Path | str) -> ckpt_io.Checkpoint:
    """The ``--init`` checkpoint, its stamps checked against its tensor names."""
    return ckpt_io.load_checkpoint(path)


def init_weights(loaded: ckpt_io.Checkpoint, model: Any, family: str) -> dict[str, np.ndarray]:
    """Weights from ``--init``, checked to be exactly ``model``'s tensors (names, shapes,
    float32), whether or not the checkpoint stamps a config; never falls back to random init."""
    if loaded.family != family:
        raise ckpt_io.CheckpointError(
            f"{loaded.path}: checkpoint architecture {loaded.family!r} does not match the "
            f"requested family {family!r}"
        )
    ckpt_io.check_coverage(loaded.params, model.param_shapes(), str(loaded.path), np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}


def check_init_val_loss(
    loaded: ckpt_io.Checkpoint, val_loss: float, spec: Mapping[str, Any]
) -> None:
    """Refuse init weights whose step-0 eval differs from the loss stamped with them."""
    recorded = loaded.val_loss
    stamped_spec = loaded.stamps.get("eval_spec")
    if recorded is None or stamped_spec is None or json.loads(stamped_spec) != dict(spec):
        return  # not comparable: different eval set
    if not math.isclose(val_loss, recorded, rel_tol=1e-5, abs_tol=1e-6):
        raise ckpt_io.CheckpointError(
            f"{loaded.path}: step-0 eval loss {val_loss:.6f} differs from the checkpoint's "
            f"recorded val loss {recorded:.6f}; the weights did not load as trained"
        )


# ---------------------------------------------------------------- stamps and state


def build_stamps(
    cfg: TrainConfig,
    mcfg: Any,
    data: LMData | None,
    records: list[dict[str, Any]],
    step: int,
    val_loss: float | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The metadata stamped into every weights file (no wall-clock values: bytes reproduce)."""
    stamps = ckpt_io.identity_stamps(cfg.family)
    stamps.update(
        config=json.dumps(mcfg.to_dict(), sort_keys=True),
        datasets=json.dumps(records, sort_keys=True),
        code_version=ckpt_io.code_version(),
        source_sha256=ckpt_io.source_digest(),
        train_config=json.dumps(cfg.to_dict(), sort_keys=True),
        seed=str(cfg.seed),
        step=str(step),
        val_loss=repr(float(val_loss)) if val_loss is not None else "",
        purpose=cfg.purpose,
        eval_spec=json.dumps(_t.eval_spec(cfg, mcfg), sort_keys=True),
    )
    if data is not None:
        stamps["tokenizer"] = data.tokenizer_json
        stamps["tokenizer_sha256"] = data.tokenizer_sha256
    for key, value in (extra or {}).items():
        stamps[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return stamps


def eval_spec(cfg: TrainConfig, mcfg: Any) -> dict[str, Any]:
    """What the stamped val loss was computed on (init compares it before trusting)."""
    if cfg.family == "mlp":
        return {"dataset": DIGITS_NAME, "split": "val"}
    return {
        "dataset": cfg.dataset,
        "split": "val",
        "windows": cfg.eval_windows,
        "n_ctx": mcfg.n_ctx,
        "chunk": EVAL_CHUNK,
    }


def trainer_state(
    cfg: TrainConfig,
    step: int,
    rng: np.random.Generator,
    cursor: DataCursor,
    tokens_seen: int,
    val_history: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "step": step,
        "rng_state": _t.rng_state(rng),
        "cursor": cursor.to_dict(),
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


def optimizer_arrays(opt: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The optimizer's state as safetensors arrays (m.*, v.*, step) and metadata."""
    return dict(opt.state_dict()), {"optimizer": type(opt).__name__}


def restore_optimizer(opt: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> None:
    state = dict(arrays)
    if "step" in state:  # accept a step saved as shape (1,) as well as 0-d
        state["step"] = np.asarray(state["step"]).reshape(())
    opt.load_state_dict(state)


def write_checkpoint(
    out_dir: Path,
    cfg: TrainConfig,
    step: int,
    params: Mapping[str, np.ndarray],
    opt: Any,
    stamps: Mapping[str, str],
    state: Mapping[str, Any],
) -> Path:
    arrays, meta = _t.optimizer_arrays(opt)
    final = ckpt_io.save_checkpoint(
        out_dir, step, params, stamps, optimizer=arrays, optimizer_meta=meta, trainer=state
    )
    lifecycle.record(
        "checkpoint.write", run=str(out_dir), checkpoint=str(final), step=step,
        purpose=cfg.purpose, weights_sha256=ckpt_io.weights_digest(final),
        files=lifecycle.folder_digests(final),
    )  # fmt: skip
    return final


def load_resume_state(out_dir: Path, cfg: TrainConfig) -> ckpt_io.Checkpoint | None:
    """The latest checkpoint of ``out_dir`` with optimizer and trainer state, checked."""
    latest = ckpt_io.latest_checkpoint(out_dir)
    if latest is None:
        return None
    loaded = ckpt_io.load_checkpoint(latest, with_state=True)
    if loaded.optimizer is None or loaded.trainer is None:
        raise ckpt_io.CheckpointError(
            f"{latest}: cannot resume exactly: optimizer or trainer state missing"
        )
    for key in ("rng_state", "cursor", "step"):
        if key not in loaded.trainer:
            raise ckpt_io.CheckpointError(
                f"{latest / ckpt_io.TRAINER_FILE}: no {key}; cannot resume"
            )
    saved = loaded.trainer.get("train_config")
    if saved is not None and TrainConfig.from_dict(saved) != cfg:
        raise TrainError(
            f"{latest}: was trained with a different config; resume with the run's own "
            f"{CONFIG_FILE} (`core resume {out_dir}`)"
        )
    return loaded


# ---------------------------------------------------------------- provenance and usage


def provenance(cfg: TrainConfig, records: list[dict[str, Any]], init: str | None) -> dict[str, Any]:
    import platform
    import sys
    from importlib import metadata

    deps: dict[str, str | None] = {}
    for dist in ("numpy", "numba", "llvmlite", "scipy", "safetensors", "click"):
        try:
            deps[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            deps[dist] = None
    return {
        "code_version": ckpt_io.code_version(),
        "source_sha256": ckpt_io.source_digest(),
        "dependencies": deps,
        "dependency_sha256": ckpt_io.sha256_bytes(json.dumps(deps, sort_keys=True).encode()),
        "datasets": records,
        "train_config": cfg.to_dict(),
        "seed": cfg.seed,
        "init": init,
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": cfg.threads,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
        },
    }


def resource_usage(t0_wall: float) -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - t0_wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024.0,
    }


def record_usage(
    out_dir: Path,
    process: str,
    from_step: int,
    to_step: int,
    resumed: bool,
    t0: float,
    final: bool,
    usage: dict[str, float] | None = None,
) -> None:
    """Append this process's cumulative usage to resources.jsonl (at each checkpoint and
    at the end); a process's last line is its total, ``final`` when it finished."""
    record = {
        "process": process,
        "from_step": from_step,
        "to_step": to_step,
        "resumed": resumed,
        "final": final,
        **(usage or _t.resource_usage(t0)),
    }
    _t.append_metrics(out_dir / RESOURCES_FILE, record)
