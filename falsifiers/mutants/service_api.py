"""Known-bad variants of the training service's API (contracts/service.yaml, api section).

Each replaces one name of ``kernels.service`` with a bug a real service has shipped:
security headers only on successes, FastAPI's default 422 body, a checkpoint folder
published without its digests, readiness before the engine is loaded, metrics
simulated for the response or served from a cache. The harness applies a mutant
inside the service process and every Python process it starts (the training children
too), so the checks of the api section, which only talk HTTP and read the run's
folder, must turn red against each.

This module is imported by every process of a mutated service, training children
included: it imports nothing heavy at module level (the web framework only inside the
functions that run in the service).
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernels.service.runs import CONFIG, RunStore, read_json

# ---------------------------------------------------------------- INV-SVC-001


class SuccessOnlyHeaders:
    """The service's header middleware with the seed's headers added to successful
    responses only ("errors are not cached anyway"): a 404, 422 or 403 leaves without
    ``cache-control: no-store``, ``content-disposition: inline`` or the charset."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.datastructures import MutableHeaders

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                headers = MutableHeaders(scope=message)  # type: ignore[arg-type]
                base = headers.get("content-type", "").split(";")[0].strip()
                if base in ("application/json", "application/problem+json"):
                    headers["content-type"] = f"{base}; charset=utf-8"
                    headers["content-disposition"] = "inline"
                headers["cache-control"] = "no-store"
                headers["x-content-type-options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def validation_errors_as_detail(request: Any, exc: Exception) -> Any:
    """The validation handler of FastAPI's documentation: pydantic's errors as
    ``detail``, no problem document, no field named (``loc`` lists are left to the
    client)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})


# ---------------------------------------------------------------- INV-SVC-002


def link_weights_only(src: Path, dest_root: Path) -> Path:
    """Publish a checkpoint into ``checkpoints/`` as its weights file only ("generation
    only needs the weights"): no digests.json, optimizer or trainer state, so nothing
    there can be verified or resumed."""
    dest = dest_root / src.name
    if dest.is_dir():
        return dest
    stage = dest_root / f".{src.name}.partial"
    stage.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "model.safetensors", stage / "model.safetensors")
    stage.replace(dest)
    return dest


# ---------------------------------------------------------------- INV-SVC-003


def load_without_engine(self: Any) -> None:
    """``Readiness.load`` that reports ready once the datasets verified and leaves the
    inference engine to be imported by the first generation request ("it loads on
    first use anyway"): /readyz says 200 while numba has not been loaded."""
    t0 = time.perf_counter()
    try:
        from kernels.data.manifest import verify_all

        self.datasets = verify_all(self.manifest)
        bad = {k: v for k, v in self.datasets.items() if v != "ok"}
        if bad:
            self.error = "; ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
            return
    except Exception as exc:
        self.error = " ".join(str(exc).split()) or type(exc).__name__
        return
    self.loaded_s = time.perf_counter() - t0
    self.ready.set()


# ---------------------------------------------------------------- INV-SVC-004


def simulated_metrics(self: RunStore, run_id: str) -> list[dict[str, Any]]:
    """``RunStore.metrics`` as seed 004's "training simulation implemented with real
    metrics": a smooth curve computed from the run's config up to the step the run
    reached (loss from ln(classes or vocab) towards a floor, the documented lr schedule,
    an eval every ``eval_every`` steps), with the trainer's keys, instead of the lines
    the trainer wrote."""
    cfg = read_json(self.run_dir(run_id) / CONFIG).get("train_config", {})
    reached = self.status(run_id)["step"]
    steps = int(cfg.get("steps", 1))
    every = int(cfg.get("eval_every", max(1, steps // 4)))
    lr, warmup, min_lr = float(cfg.get("lr", 3e-3)), int(cfg.get("warmup", 10)), 3e-4
    start = math.log(10 if cfg.get("family") == "mlp" else 1024)
    floor = 0.6 * start

    def loss(step: int) -> float:
        return floor + (start - floor) * math.exp(-step / max(1.0, steps / 2))

    lines: list[dict[str, Any]] = [{"purpose": "ablation", "step": 0, "val_loss": loss(0)}]
    for step in range(1, reached + 1):
        s = step - 1
        if s < warmup:
            rate = lr * (s + 1) / warmup
        else:
            frac = min(1.0, (s - warmup) / max(1, steps - warmup))
            rate = min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * frac))
        line: dict[str, Any] = {"grad_norm": 1.0 / (1.0 + 0.05 * step), "loss": loss(step),
                                "lr": rate, "step": step, "tokens_per_s": 50000.0}  # fmt: skip
        if step % every == 0 or step == steps:
            line["val_loss"] = loss(step) + 0.01
        lines.append(line)
    return lines


_REAL_METRICS = RunStore.metrics  # captured at import, before the patch replaces it
_METRICS_CACHE: dict[tuple[int, str], list[dict[str, Any]]] = {}
_METRICS_LOCK = threading.Lock()


def cached_metrics(self: RunStore, run_id: str) -> list[dict[str, Any]]:
    """``RunStore.metrics`` read from metrics.jsonl once per run and kept ("the file
    only grows, and reading it on every poll is wasteful"): whoever asks while the run
    trains freezes what every later request sees."""
    key = (id(self), run_id)
    with _METRICS_LOCK:
        if key not in _METRICS_CACHE:
            _METRICS_CACHE[key] = _REAL_METRICS(self, run_id)
        return [dict(line) for line in _METRICS_CACHE[key]]
