"""The FastAPI application of the training service: ``create_app(evidence_root, ...)``.

Routes (docs/service.md has a curl for each): ``POST /api/training/runs``, ``GET
/api/training/runs``, ``GET|DELETE /api/training/runs/{run_id}``, ``GET
/api/training/runs/{run_id}/metrics``, ``GET /api/events/training?run_id=...`` (SSE),
``POST /api/generate``, ``GET /healthz``, ``GET /readyz``. Errors are RFC 9457
``application/problem+json`` bodies; every response carries the seed's headers
(``ResponseHeaders``). The runs themselves live in ``kernels.service.runs``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from kernels.errors import KernelsError
from kernels.service import generation
from kernels.service.runs import TERMINAL, RunNotFound, RunNotResumable, RunStore

PHASE = "stage1"
JSON_TYPE = "application/json; charset=utf-8"
PROBLEM_TYPE = "application/problem+json; charset=utf-8"
SEED_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-disposition": "inline",
}
# A model size is a preset of model overrides; None keeps the trainer's tiny preset.
MODEL_SIZES: dict[str, dict[str, Any] | None] = {
    "micro": {"n_layer": 1, "d_model": 32, "n_head": 2, "n_ctx": 32},
    "tiny": None,
}
MLP_SIZES: dict[str, dict[str, Any] | None] = {"micro": {"hidden": [32]}, "tiny": None}
DATASET_KINDS = {"mlp": "image-classification", "gpt2": "text-corpus", "llama": "text-corpus"}


class MocksRefused(KernelsError, RuntimeError):
    """``MOCKS_DISABLED=1`` and a mock or simulated code path is configured."""


# ---------------------------------------------------------------- request bodies


class TrainingRunRequest(BaseModel):
    """A training run: the model family and size, the schedule, the seed, the dataset."""

    model_config = ConfigDict(extra="forbid", strict=True)

    family: Literal["gpt2", "llama", "mlp"]
    model_size: Literal["micro", "tiny"] = "micro"
    steps: int = Field(ge=1, le=100_000)
    batch_size: int = Field(16, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    dataset: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                                description="A dataset of datasets/manifest.yaml; default: "
                                "digits for mlp, pystdlib for gpt2/llama")  # fmt: skip
    eval_every: int | None = Field(None, ge=1, description="Default: steps // 4 (at least 1).")
    ckpt_every: int | None = Field(None, ge=1, description="Default: steps // 4 (at least 1).")
    lr: float | None = Field(None, gt=0, le=1)


class GenerateRequest(BaseModel):
    """Text generated greedily (or sampled) with the KV cache from a run's checkpoint."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    checkpoint: str | None = Field(
        None, pattern=r"^ckpt-[0-9]{6}$", description="Default: the run's latest checkpoint."
    )
    prompt: str = Field("", max_length=4096)
    max_new_tokens: int = Field(32, ge=0, le=512)
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    top_k: int = Field(0, ge=0)
    seed: int = Field(0, ge=0, le=2**32 - 1)


# ---------------------------------------------------------------- response bodies
# Each documents a body the service sends, in /openapi.json (the contract's checks and
# its OpenAPI property search validate the live responses against these schemas).

RunStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class FieldError(BaseModel):
    """One invalid field of a request and what is wrong with it."""

    field: str = Field(description="Dotted path of the field ('body' for the whole body).")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``): every error."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="'about:blank': the status says what happened.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    field: str | None = Field(None, description="422: the (first) invalid field.")
    errors: list[FieldError] | None = Field(None, description="422: every invalid field.")
    rule: str | None = Field(None, description="403: the governance rule that refused.")
    dataset: str | None = Field(None, description="403: the refused dataset.")
    audit_event: str | None = Field(
        None, description="403: the hash of the governance decision's audit event."
    )


class Health(BaseModel):
    """``/healthz``: the process is up; nothing here is mocked or simulated."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]
    mocks: bool
    phase: str


class ReadinessReport(BaseModel):
    """``/readyz``: 200 once the datasets verified and the engine loaded, else 503."""

    model_config = ConfigDict(extra="forbid")

    ready: bool
    mocks: bool
    phase: str
    datasets: dict[str, str] = Field(description="Each manifest dataset: 'ok' or why not.")
    error: str | None
    loaded_s: float | None = Field(description="Seconds the loading took; null until ready.")
    accepting: bool = Field(description="False once the service is shutting down.")


class RunCreated(BaseModel):
    """A training run was accepted (its process is starting)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    status: Literal["queued"]
    location: str


class RunStatus(BaseModel):
    """A run's status, with its progress counted from its own files."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    status: RunStatusName
    step: int = Field(ge=0, description="The last step in metrics.jsonl.")
    steps: int | None = Field(description="The steps the run was asked for.")
    metrics_count: int = Field(ge=0, description="Lines in metrics.jsonl.")
    checkpoint_count: int = Field(ge=0, description="Checkpoints in checkpoints/.")
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    stopped_by: str | None = Field(
        description="'DELETE', 'shutdown' or 'service-lost' for a cancelled run."
    )
    error: str | None


class RunList(BaseModel):
    """Every run in the evidence folder, oldest first."""

    model_config = ConfigDict(extra="forbid")

    runs: list[RunStatus]


class MetricLine(BaseModel):
    """One line of the trainer's metrics.jsonl, as it wrote it (step 0: the initial
    evaluation; eval steps add ``val_loss`` and, for a classifier, ``val_accuracy``)."""

    model_config = ConfigDict(extra="allow")

    step: int = Field(ge=0)
    __pydantic_extra__: dict[str, float | str]


class RunMetrics(BaseModel):
    """The lines of the run's own metrics.jsonl (never generated for the response)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    source: Literal["metrics.jsonl"]
    count: int = Field(ge=0)
    metrics: list[MetricLine]


class Generation(BaseModel):
    """Text generated from a run's checkpoint with the KV cache."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    checkpoint: str
    prompt: str
    text: str
    kv_cache: bool
    latency_s: float = Field(ge=0)


PROBLEM_STATUSES = {
    400: "The body could not be read (it is not UTF-8)",
    403: "Refused by data governance (names the rule and the dataset)",
    404: "Unknown training run (or checkpoint)",
    409: "The run has no checkpoint yet",
    422: "Invalid request (names the field)",
    503: "The service is shutting down",
}


# One event of the stream, as OpenAPI 3.1 describes a text/event-stream item: its id (a
# number, increasing), its type, and its data (a JSON document).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": ["step", "checkpoint", "resume", "end"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route's problem statuses (``openapi_document`` files their
    schema under ``application/problem+json``)."""
    return {code: {"model": Problem, "description": PROBLEM_STATUSES[code]} for code in statuses}


def train_config_fields(req: TrainingRunRequest, dataset: str) -> dict[str, Any]:
    """The ``TrainConfig`` fields of a request (what ``config.json`` records)."""
    every = max(1, req.steps // 4)
    sizes = MLP_SIZES if req.family == "mlp" else MODEL_SIZES
    fields: dict[str, Any] = {
        "family": req.family, "model": sizes[req.model_size], "seed": req.seed,
        "steps": req.steps, "batch_size": req.batch_size, "dataset": dataset,
        "eval_every": req.eval_every or every, "ckpt_every": req.ckpt_every or every,
        "warmup": min(10, req.steps), "purpose": "ablation", "threads": 1,
    }  # fmt: skip
    if req.lr is not None:
        fields["lr"] = req.lr
    return fields


# ---------------------------------------------------------------- problems and headers


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document (``Problem``); ``ResponseHeaders`` adds the seed's
    headers and the charset on its way out, as to every other response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE.split(";")[0])


def field_name(loc: Sequence[Any], kind: str = "") -> str:
    """The dotted field of a validation error's ``loc``; a body that is not JSON at all
    is ``body`` (its ``loc`` ends with a character offset, which names no field)."""
    if kind == "json_invalid":
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


class ResponseHeaders:
    """ASGI middleware: every response gets ``cache-control: no-store`` and
    ``x-content-type-options: nosniff``; a JSON one (problem documents too) also
    ``content-disposition: inline`` and an explicit ``charset=utf-8``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)  # type: ignore[arg-type]
                ctype = headers.get("content-type", "")
                base = ctype.split(";")[0].strip()
                if base in ("application/json", "application/problem+json"):
                    headers["content-type"] = f"{base}; charset=utf-8"
                    headers["content-disposition"] = "inline"
                headers["cache-control"] = "no-store"
                headers["x-content-type-options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """A body, query or header the route's schema refuses: 422, naming each field."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": field_name(e["loc"], e.get("type", "")), "message": e["msg"]}
              for e in exc.errors()]  # fmt: skip
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid request", detail, errors=errors,
                   field=errors[0]["field"] if errors else None)  # fmt: skip


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (an unknown path: 404, a wrong method: 405) as problems."""
    assert isinstance(exc, StarletteHTTPException)
    return problem(exc.status_code, str(exc.detail), str(exc.detail))


async def unknown_run(request: Request, exc: Exception) -> JSONResponse:
    return problem(404, "Unknown training run", str(exc))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A 500 leaves through Starlette's outermost middleware, outside ``ResponseHeaders``:
    the seed's headers are set here."""
    response = problem(500, "Internal error", f"{type(exc).__name__}: {exc}")
    response.headers.update({**SEED_HEADERS, "content-type": PROBLEM_TYPE})
    return response


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI document with the service's real error bodies: each problem
    status under ``application/problem+json`` (FastAPI files every model under
    ``application/json``), and no ``HTTPValidationError`` (the service never sends
    FastAPI's default 422 body: ``invalid_request`` answers with a problem)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description=app.description)  # fmt: skip
    problem_ref = "#/components/schemas/Problem"
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            for code, response in list(responses.items()):
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if schema.get("$ref") == problem_ref:
                    content["application/problem+json"] = content.pop("application/json")
                elif schema.get("$ref", "").endswith("/HTTPValidationError"):
                    del responses[code]  # a route whose parameters cannot be invalid
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = doc
    return doc


# ---------------------------------------------------------------- events


async def training_event_stream(
    store: RunStore, run_id: str, after: int, poll_s: float
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of a run after id ``after`` (a reconnect's ``Last-Event-ID``): each
    line of its ``events.jsonl`` with the line number as its id, polled every ``poll_s``
    seconds until the run has ended and every event is sent. The keep-alive comments
    come from ``EventSourceResponse`` (``ping``), between any two of these.

    The child writes its final status, then its ``end`` event, then exits: a final
    status alone does not end the stream while the child may still write (it would lose
    ``end``); the ``end`` event does, and so does the child's exit (one that died
    without writing ``end``)."""
    last = after
    ended = False
    while True:
        batch = store.events(run_id, last)
        for ev in batch:
            last = int(ev["id"])
            ended = ev["event"] == "end"
            yield ServerSentEvent(data=json.dumps(ev["data"], sort_keys=True),
                                  event=ev["event"], id=str(last))  # fmt: skip
        if batch:
            continue
        if store.status(run_id)["status"] in TERMINAL and (ended or not store.writing(run_id)):
            if not store.events(run_id, last):  # nothing written after the last look
                return
            continue
        await asyncio.sleep(poll_s)


# ---------------------------------------------------------------- the application


class Readiness:
    """Readiness: the manifest's datasets verified against their digests and the
    inference engine imported (numba kernels loaded), in a thread at start-up."""

    def __init__(self, manifest: str | None) -> None:
        self.manifest = manifest
        self.ready = threading.Event()
        self.error: str | None = None
        self.datasets: dict[str, str] = {}
        self.loaded_s: float | None = None

    def load(self) -> None:
        t0 = time.perf_counter()
        try:
            from kernels.data.manifest import verify_all

            self.datasets = verify_all(self.manifest)
            import kernels.infer  # noqa: F401  (numba kernels of generation)
            import kernels.serving  # noqa: F401

            bad = {k: v for k, v in self.datasets.items() if v != "ok"}
            if bad:
                self.error = "; ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
                return
        except Exception as exc:  # reported by /readyz, which then stays 503
            self.error = " ".join(str(exc).split()) or type(exc).__name__
            return
        self.loaded_s = time.perf_counter() - t0
        self.ready.set()


def create_app(
    evidence_root: str | Path,
    *,
    manifest: str | Path | None = None,
    policy: str | Path | None = None,
    audit_log: str | Path | None = None,
    mocks: Sequence[str] = (),
    sse_ping_s: float = 15.0,
    sse_poll_s: float = 0.1,
    shutdown_timeout_s: float = 60.0,
) -> FastAPI:
    """The service over ``{evidence_root}/training``. ``manifest``, ``policy`` and
    ``audit_log`` default as the core's (``$KERNELS_DATA_MANIFEST``, ...) and are handed
    to each run's process. ``mocks`` names mock or simulated code paths: there are none,
    and with ``MOCKS_DISABLED=1`` any named one refuses to build the app."""
    if mocks and os.environ.get("MOCKS_DISABLED") == "1":
        raise MocksRefused(
            f"MOCKS_DISABLED=1 but mock or simulated paths are configured: "
            f"{', '.join(mocks)}; remove them or unset MOCKS_DISABLED"
        )
    env = {}
    for key, value in (("KERNELS_DATA_MANIFEST", manifest), ("KERNELS_DATA_POLICY", policy),
                       ("KERNELS_AUDIT_LOG", audit_log)):  # fmt: skip
        if value is not None:
            env[key] = str(Path(value).resolve())
    store = RunStore(Path(evidence_root) / "training", env=env)
    readiness = Readiness(env.get("KERNELS_DATA_MANIFEST"))
    status_body = {"mocks": bool(mocks), "phase": PHASE}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=readiness.load, name="service-readiness", daemon=True).start()
        yield
        await asyncio.to_thread(store.shutdown, shutdown_timeout_s)

    app = FastAPI(title="ml-contract-harness training service", version="0.1.0",
                  lifespan=lifespan)  # fmt: skip
    app.state.store = store
    app.state.readiness = readiness
    app.add_middleware(ResponseHeaders)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RunNotFound, unknown_run)
    app.add_exception_handler(Exception, internal_error)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]

    # ------------------------------------------------------------ health

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", **status_body}

    @app.get(
        "/readyz",
        response_model=ReadinessReport,
        responses={
            503: {"model": ReadinessReport, "description": "Not ready yet, or shutting down"}
        },
    )
    def readyz() -> JSONResponse:
        body = {"ready": readiness.ready.is_set(), **status_body,
                "datasets": readiness.datasets, "error": readiness.error,
                "loaded_s": readiness.loaded_s, "accepting": store.accepting}  # fmt: skip
        code = 200 if readiness.ready.is_set() and store.accepting else 503
        return JSONResponse(body, status_code=code)

    # ------------------------------------------------------------ training runs

    @app.post("/api/training/runs", status_code=201, response_model=RunCreated,
              responses=problems(400, 403, 422, 503))  # fmt: skip
    def start_run(req: TrainingRunRequest) -> JSONResponse:
        from kernels.data.governance import decide
        from kernels.data.manifest import load_manifest

        known = load_manifest(env.get("KERNELS_DATA_MANIFEST")).datasets
        default = "digits" if req.family == "mlp" else "pystdlib"
        dataset = req.dataset or default
        entry = known.get(dataset)
        if entry is None or entry.kind != DATASET_KINDS[req.family]:
            fits = sorted(k for k, e in known.items() if e.kind == DATASET_KINDS[req.family])
            why = "not in the manifest" if entry is None else f"a {entry.kind} dataset"
            detail = f"dataset: {dataset!r} is {why}; {req.family} trains on {', '.join(fits)}"
            return problem(422, "Invalid request", detail, field="dataset",
                           errors=[{"field": "dataset", "message": detail}])  # fmt: skip
        decision = decide([dataset], manifest=env.get("KERNELS_DATA_MANIFEST"),
                          policy=env.get("KERNELS_DATA_POLICY"),
                          audit=env.get("KERNELS_AUDIT_LOG"))  # fmt: skip
        if not decision.allowed:
            return problem(403, "Refused by data governance", decision.reason,
                           rule=decision.rule, dataset=dataset,
                           audit_event=decision.event_hash)  # fmt: skip
        if not store.accepting:
            return problem(503, "Shutting down", "the service is stopping; no new runs")
        fields = train_config_fields(req, dataset)
        from kernels.train import TrainConfig

        TrainConfig.from_dict(fields)  # the trainer's own checks, before anything starts
        run_id = store.create(req.model_dump(), fields)
        location = f"/api/training/runs/{run_id}"
        return JSONResponse({"run_id": run_id, "status": "queued", "location": location},
                            status_code=201, headers={"location": location})  # fmt: skip

    @app.get("/api/training/runs", response_model=RunList)
    def list_runs() -> dict[str, Any]:
        return {"runs": [store.status(run_id) for run_id in store.run_ids()]}

    @app.get("/api/training/runs/{run_id}", response_model=RunStatus, responses=problems(404))
    def run_status(run_id: str) -> dict[str, Any]:
        return store.status(run_id)

    @app.get("/api/training/runs/{run_id}/metrics", response_model=RunMetrics,
             responses=problems(404))  # fmt: skip
    def run_metrics(run_id: str) -> JSONResponse:
        metrics = store.metrics(run_id)  # the lines as they are: no model re-serializes them
        return JSONResponse({"run_id": run_id, "source": "metrics.jsonl",
                             "count": len(metrics), "metrics": metrics})  # fmt: skip

    @app.delete("/api/training/runs/{run_id}", status_code=202, response_model=RunStatus,
                responses={200: {"model": RunStatus, "description": "The run had already ended"},
                           **problems(404)})  # fmt: skip
    def cancel_run(run_id: str) -> JSONResponse:
        before = store.status(run_id)
        if before["status"] in TERMINAL:
            return JSONResponse(before, status_code=200)
        return JSONResponse(store.cancel(run_id), status_code=202)

    @app.post("/api/training/runs/{run_id}/resume", status_code=202, response_model=RunStatus,
              responses={**problems(404, 503), 409: {"model": Problem, "description":
                         "The run is still running, or it succeeded"}})  # fmt: skip
    def resume_run(run_id: str) -> JSONResponse:
        """Continue a failed (e.g. interrupted) or cancelled run from its latest
        checkpoint: 202 and its status; 409 while it runs or once it succeeded."""
        store.run_dir(run_id)  # 404 first
        if not store.accepting:
            return problem(503, "Shutting down", "the service is stopping; no run resumes")
        try:
            st = store.resume(run_id)
        except RunNotResumable as exc:
            return problem(409, "Cannot resume", str(exc))
        location = f"/api/training/runs/{run_id}"
        return JSONResponse(st, status_code=202, headers={"location": location})

    # ------------------------------------------------------------ events

    @app.get("/api/events/training", response_class=EventSourceResponse, responses={
        200: {"description": "Server-Sent Events: step, checkpoint, resume, end (each with an id)",
              "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}},
        **problems(404, 422)})  # fmt: skip
    async def training_events(
        run_id: str = Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"),
        last_event_id: int | None = Header(None, alias="Last-Event-ID", ge=0),
    ) -> EventSourceResponse:
        store.run_dir(run_id)  # 404 before the stream starts
        stream = training_event_stream(store, run_id, last_event_id or 0, sse_poll_s)
        return EventSourceResponse(stream, ping=sse_ping_s)

    # ------------------------------------------------------------ generation

    @app.post("/api/generate", response_model=Generation,
              responses=problems(400, 404, 409, 422))  # fmt: skip
    def generate(req: GenerateRequest) -> dict[str, Any]:
        from kernels.checkpoint import CheckpointError

        run_dir = store.run_dir(req.run_id)
        if req.checkpoint is not None:
            ckpt = run_dir / "checkpoints" / req.checkpoint
            if not ckpt.is_dir():
                return problem(404, "Unknown checkpoint",
                               f"run {req.run_id} has no checkpoint {req.checkpoint}")  # fmt: skip
        else:
            latest = store.latest_checkpoint(req.run_id)
            if latest is None:
                return problem(409, "No checkpoint yet",
                               f"run {req.run_id} has not written a checkpoint yet")  # fmt: skip
            ckpt = latest
        t0 = time.perf_counter()
        try:
            text = generation.generate_text(ckpt, req.prompt, req.max_new_tokens,
                                            req.temperature, req.top_k, req.seed)  # fmt: skip
        except CheckpointError as exc:
            detail = " ".join(str(exc).split())
            return problem(422, "Cannot generate", detail, field="run_id",
                           errors=[{"field": "run_id", "message": detail}])  # fmt: skip
        return {"run_id": req.run_id, "checkpoint": ckpt.name, "prompt": req.prompt,
                "text": text, "kv_cache": True,
                "latency_s": round(time.perf_counter() - t0, 6)}  # fmt: skip

    return app
