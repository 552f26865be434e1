"""Checks of the training service's API (contracts/service.yaml, the api section).

Each check talks HTTP to a live service that trains the real core: the contract's
shared ``training`` service (``ctx.service("training")``, its folder
``ctx.service_dir("training")``), or a service process of the check's own
(``acceptance.service_client.start_service``) where it must watch one from its first
instant or run one under another data policy. Runs are the check's own (the service
is shared: ids come from the service, never assumed). The checks observe; the YAML's
``expect`` judges.

- ``endpoints`` (AC-SVC-001): every route, each answer's status, its body against the
  schema the live service's own ``/openapi.json`` gives for that status and media
  type, and the seed's four headers; unknown runs 404, bad input 422 naming the
  field, a dataset the data policy refuses 403 naming the rule.
- ``evidence_layout`` (AC-SVC-002): a run's folder has the seed's layout and its
  files verify against their digests (checkpoints, datasets, final weights).
- ``readiness`` (AC-SVC-002): ``/healthz`` and ``/readyz`` say no mocks and stage1;
  ``/readyz`` is 503 until the datasets verify and the engine is loaded, watched from
  the first instant of a service process the check starts.
- ``metrics_are_the_runs_own`` (AC-SVC-003): the API's metrics equal the run's
  metrics.jsonl, and each checkpoint's val loss recomputed with the core; val loss
  falls over the checkpoints.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from acceptance.service_client import (
    TERMINAL,
    client,
    header_problems,
    start_run,
    start_service,
    wait_status,
)
from harness.context import CheckContext

SERVICE = "training"
EXAMPLES = 5  # violations described in an observation (all of them go to the evidence)


def run_folder(ctx: CheckContext, run_id: str) -> Path:
    """Where the shared service keeps a run (``{dir}/training/{run_id}``)."""
    return Path(ctx.service_dir(SERVICE)) / "training" / run_id


def terminal(http: httpx.Client, run_id: str, timeout: float) -> dict[str, Any]:
    return wait_status(http, run_id, lambda st: st["status"] in TERMINAL, timeout)


# ---------------------------------------------------------------- AC-SVC-001 endpoints


@dataclass
class Probe:
    """One request of ``endpoints`` and what it found."""

    method: str
    route: str  # the path template of the OpenAPI document
    status: int
    expected: tuple[int, ...]
    want_field: str | None = None  # a 422 must name this field
    headers: list[str] = field(default_factory=list)
    schema: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def take(self, doc: Mapping[str, Any], response: httpx.Response, stream: bool = False) -> None:
        self.status = response.status_code
        if stream and response.status_code == 200:
            self.headers += sse_header_problems(response)
        else:
            self.headers += header_problems(response)
        self.schema += schema_problems(doc, self, response)
        if response.status_code >= 400:
            self.fields += field_problems(self, response)


def schema_for(doc: Mapping[str, Any], method: str, route: str, status: int, media: str) -> Any:
    """The schema ``doc`` declares for that answer, made self-contained (its ``$ref``s
    resolve into the document's components); a string saying why there is none."""
    op = doc.get("paths", {}).get(route, {}).get(method.lower())
    if op is None:
        return f"{method} {route} is not in the document"
    response = op.get("responses", {}).get(str(status))
    if response is None:
        return f"{method} {route}: status {status} is not documented"
    content = response.get("content", {})
    if media not in content:
        return f"{method} {route} {status}: {media} not documented (only {sorted(content)})"
    schema = content[media].get("schema")
    if schema is None:
        return f"{method} {route} {status}: no schema for {media}"
    return {**schema, "components": doc.get("components", {})}


def schema_problems(doc: Mapping[str, Any], probe: Probe, response: httpx.Response) -> list[str]:
    import jsonschema

    media = response.headers.get("content-type", "").split(";")[0].strip()
    schema = schema_for(doc, probe.method, probe.route, response.status_code, media)
    if isinstance(schema, str):
        return [schema]
    if media == "text/event-stream":
        return []  # a stream, not a JSON body (its events are AC-SVC-004's)
    try:
        body = response.json()
    except ValueError:
        return [f"{probe.method} {probe.route} {response.status_code}: body is not JSON"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{probe.method} {probe.route} {response.status_code}: "
        f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message[:160]}"
        for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    ]


def field_problems(probe: Probe, response: httpx.Response) -> list[str]:
    """A 422 must name the field (``field``, and in its ``detail``); a 403 the rule."""
    where = f"{probe.method} {probe.route} {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return [f"{where}: body is not JSON"]
    if not isinstance(body, dict):
        return [f"{where}: body is not an object"]
    found = []
    if probe.want_field is not None:
        if body.get("field") != probe.want_field:
            found.append(f"{where}: field {body.get('field')!r}, wanted {probe.want_field!r}")
        if probe.want_field not in str(body.get("detail", "")):
            found.append(f"{where}: detail does not name {probe.want_field!r}")
    return found


def policy_refusing(root: Path, dataset: str, out: Path) -> Path:
    """The shipped data-use policy with ``dataset`` withdrawn by name (datasets.deny)."""
    import yaml

    policy = yaml.safe_load((root / "datasets" / "policy.yaml").read_text())
    policy.setdefault("datasets", {})["deny"] = [dataset]
    out.write_text(yaml.safe_dump(policy, sort_keys=False))
    return out


@dataclass
class Refusal:
    """What the service under a policy refusing a dataset answered to a run of it."""

    probe: Probe
    names_rule: bool
    names_dataset: bool
    runs_started: int


def refusal(ctx: CheckContext, doc: Mapping[str, Any], route: str) -> Refusal:
    """POST a run of ``params.refused_dataset`` to a service of the check's own, started
    under the shipped policy with that dataset withdrawn: a 403 naming the rule and the
    dataset, and no run started."""
    p = ctx.params
    refused = str(p["refused_dataset"])
    policy = policy_refusing(ctx.root, refused, ctx.scratch / "policy.yaml")
    svc = start_service(ctx.scratch / "evidence", ctx.scratch / "refusing-service.log",
                        env={"KERNELS_DATA_POLICY": str(policy),
                             "KERNELS_AUDIT_LOG": str(ctx.scratch / "audit.jsonl")},
                        ready=False)  # fmt: skip
    try:
        pr = Probe("POST", route, 0, (403,))
        body = {"family": p.get("refused_family", "mlp"), "steps": 1, "dataset": refused}
        with client(svc.url) as http:
            r = http.post(route, json=body)
        pr.take(doc, r)
        try:
            answer = r.json()
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        rule = str(answer.get("rule") or "")
        started = [x for x in (svc.evidence / "training").glob("*") if x.is_dir()]
        return Refusal(pr, bool(rule) and rule in str(answer.get("detail", "")),
                       answer.get("dataset") == refused, len(started))  # fmt: skip
    finally:
        svc.stop()


def endpoints(ctx: CheckContext) -> dict[str, Any]:
    """Every route of the live service: status, body against its own OpenAPI schema,
    the seed's headers; unknown run 404, bad input 422 naming the field, a refused
    dataset 403 naming the rule (under a policy refusing it, in a service of its own,
    asked meanwhile in a thread)."""
    from concurrent.futures import ThreadPoolExecutor

    p = ctx.params
    timeout = float(p.get("run_timeout_s", 60))
    runs, one = "/api/training/runs", "/api/training/runs/{run_id}"
    metrics, events = "/api/training/runs/{run_id}/metrics", "/api/events/training"
    resume = "/api/training/runs/{run_id}/resume"
    probes: list[Probe] = []
    with client(ctx.service(SERVICE)) as http, ThreadPoolExecutor(1) as pool:
        doc_response = http.get("/openapi.json")
        doc = doc_response.json()
        documented = {
            (m.upper(), route) for route, item in doc.get("paths", {}).items() for m in item
        }
        refused = pool.submit(refusal, ctx, doc, runs)

        def probe(method: str, route: str, expected: tuple[int, ...], *, url: str | None = None,
                  want_field: str | None = None, **kw: Any) -> httpx.Response:  # fmt: skip
            pr = Probe(method, route, 0, expected, want_field)
            t0 = time.perf_counter()
            if route == events:  # a stream: its headers, then close it
                with http.stream(method, url or route, **kw) as r:
                    if r.status_code != 200:
                        r.read()
                    pr.take(doc, r, stream=True)
            else:
                r = http.request(method, url or route, **kw)
                pr.take(doc, r)
            pr.seconds = round(time.perf_counter() - t0, 4)
            probes.append(pr)
            return r

        # a real run (a language model, so that generation answers 200)
        created = probe("POST", runs, (201,), json=dict(p["run"]))
        run_id = created.json().get("run_id") if created.status_code == 201 else None
        if run_id is None:
            raise AssertionError(f"POST {runs}: {created.status_code} {created.text[:300]}")
        location_ok = created.headers.get("location") == f"/api/training/runs/{run_id}"
        at = one.replace("{run_id}", run_id)
        # generation before its first checkpoint: 409 (200 only if one is already there)
        early = probe("POST", "/api/generate", (409, 200), json={"run_id": run_id})
        if early.status_code == 200 and http.get(at).json().get("checkpoint_count", 0) == 0:
            probes[-1].schema.append("POST /api/generate 200 before any checkpoint")

        # while it trains: health, unknown runs (404 problem+json from every route that
        # takes one), bad input (422 problem+json naming the field)
        probe("GET", "/healthz", (200,))
        probe("GET", "/readyz", (200,))
        probe("GET", one, (200,), url=at)
        unknown = f"run-unknown-{secrets.token_hex(4)}"
        for method, route in (("GET", one), ("GET", metrics), ("DELETE", one), ("POST", resume)):
            probe(method, route, (404,), url=route.replace("{run_id}", unknown))
        probe("GET", events, (404,), url=f"{events}?run_id={unknown}")
        probe("POST", "/api/generate", (404,), json={"run_id": unknown})
        for bad in p["bad_requests"]:
            kw = {k: bad[k] for k in ("json", "headers", "content") if k in bad}
            if "content" in kw:
                kw["content"] = str(kw["content"]).encode()
                kw.setdefault("headers", {})["content-type"] = "application/json"
            probe(bad["method"], bad["route"], (422,), url=bad.get("url"),
                  want_field=bad["field"], **kw)  # fmt: skip

        final = terminal(http, run_id, timeout)
        if final["status"] != "succeeded":
            raise AssertionError(f"run {run_id} ended {final['status']}: {final.get('error')}")
        probe("GET", one, (200,), url=at)
        probe("GET", metrics, (200,), url=metrics.replace("{run_id}", run_id))
        listing = probe("GET", runs, (200,))
        listed = run_id in [r.get("run_id") for r in listing.json().get("runs", [])]
        gen = {"run_id": run_id, "prompt": p.get("prompt", ""), "max_new_tokens": 4}
        probe("POST", "/api/generate", (200,), json=gen)
        probe("POST", "/api/generate", (404,), json={"run_id": run_id, "checkpoint": "ckpt-999999"})
        probe("GET", events, (200,), url=f"{events}?run_id={run_id}")
        probe("DELETE", one, (200,), url=at)  # already ended: 200, unchanged
        probe("POST", resume, (409,), url=resume.replace("{run_id}", run_id))  # it succeeded

        # a dataset the data policy refuses: 403 naming the rule (the thread's service)
        refuse = refused.result()
        probes.append(refuse.probe)

    covered = {(pr.method, pr.route) for pr in probes}
    wrong_status = [pr for pr in probes if pr.status not in pr.expected]
    schema = [m for pr in probes for m in pr.schema]
    fields = [m for pr in probes for m in pr.fields]
    headers = [f"{pr.method} {pr.route} {pr.status}: {m}" for pr in probes for m in pr.headers]
    ctx.attach_json("probes.json", [pr.__dict__ for pr in probes])
    return {
        "openapi_status": doc_response.status_code,
        "endpoints_checked": len(probes),
        "routes_documented": len(documented),
        "routes_not_checked": len(documented - covered),
        "routes_not_documented": len(covered - documented),
        "status_mismatches": len(wrong_status),
        "status_mismatch_examples": [
            f"{pr.method} {pr.route}: {pr.status}, wanted {'/'.join(map(str, pr.expected))}"
            for pr in wrong_status[:EXAMPLES]
        ],
        "schema_violations": len(schema),
        "schema_violation_examples": schema[:EXAMPLES],
        "field_violations": len(fields),
        "field_violation_examples": fields[:EXAMPLES],
        "header_violations": len(headers),
        "header_violation_examples": headers[:EXAMPLES],
        "location_matches": location_ok,
        "run_listed": listed,
        "bad_requests": len(p["bad_requests"]),
        "refusal_status": refuse.probe.status,
        "refusal_names_rule": refuse.names_rule,
        "refusal_names_dataset": refuse.names_dataset,
        "refused_runs_started": refuse.runs_started,
    }


def sse_header_problems(response: httpx.Response) -> list[str]:
    """An event stream: ``text/event-stream``, ``cache-control: no-store`` and
    ``x-content-type-options: nosniff`` (content-disposition is for JSON bodies)."""
    found = []
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        found.append(f"content-type {ctype!r}, wanted 'text/event-stream'")
    for key in ("cache-control", "x-content-type-options"):
        want = {"cache-control": "no-store", "x-content-type-options": "nosniff"}[key]
        if response.headers.get(key) != want:
            found.append(f"{key} {response.headers.get(key)!r}, wanted {want!r}")
    return found


# ---------------------------------------------------------------- AC-SVC-002 evidence


def evidence_layout(ctx: CheckContext) -> dict[str, Any]:
    """A real run's ``{dir}/training/{run_id}/``: the seed's layout, every checkpoint in
    ``checkpoints/`` verified against its digests.json (and loadable: stamps and tensor
    names agree), the dataset digests in provenance.json recomputed from the files, the
    checkpoints' stamps equal to the provenance, the final weights' digest equal to the
    one the run reported."""
    from kernels import checkpoint as ckpt_io
    from kernels.checkpoint import CheckpointError
    from kernels.data.manifest import dataset_path, sha256_file

    p = ctx.params
    with client(ctx.service(SERVICE)) as http:
        run_id = start_run(http, dict(p["run"]))
        final = terminal(http, run_id, float(p.get("run_timeout_s", 60)))
    run = run_folder(ctx, run_id)
    layout = [str(x) for x in p["layout"]]
    missing = [x for x in layout if not ((run / x.rstrip("/")).is_dir() if x.endswith("/")
                                         else (run / x).is_file())]  # fmt: skip
    config = (
        json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    )
    prov_path = run / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    records = prov.get("datasets") or []

    dataset_mismatches = []
    for rec in records:
        try:
            actual = sha256_file(dataset_path(rec["name"], verify=False))
        except Exception as exc:  # a dataset that cannot be found does not verify
            actual = f"unreadable: {exc}"
        if actual != rec.get("sha256"):
            dataset_mismatches.append(
                f"{rec.get('name')}: recorded {rec.get('sha256')}, file {actual}"
            )

    ckpts = (
        sorted(d for d in (run / "checkpoints").glob("ckpt-*"))
        if (run / "checkpoints").is_dir()
        else []
    )
    unverified, unlisted, disagree, symlinks, not_trainers = [], [], [], 0, []
    for d in ckpts:
        symlinks += d.is_symlink()
        try:
            listed = ckpt_io.verify_digests(d)
            if listed is None:
                unverified.append(f"{d.name}: no digests.json")
                continue
            loaded = ckpt_io.load_checkpoint(d)
        except CheckpointError as exc:
            unverified.append(f"{d.name}: {' '.join(str(exc).split())[:200]}")
            continue
        files = {f.name for f in d.iterdir() if f.is_file()} - {ckpt_io.DIGESTS_FILE}
        unlisted += [f"{d.name}/{f}" for f in sorted(files - set(listed))]
        if f"ckpt-{loaded.step:06d}" != d.name:
            disagree.append(f"{d.name}: stamped step {loaded.step}")
        if json.loads(loaded.stamps.get("datasets", "null")) != records:
            disagree.append(f"{d.name}: stamped datasets differ from provenance.json")
        if loaded.stamps.get("source_sha256") != prov.get("source_sha256"):
            disagree.append(f"{d.name}: stamped source_sha256 differs from provenance.json")
        own = run / d.name  # the trainer's own checkpoint, which checkpoints/ must hold
        for f in sorted(files):
            if not (own / f).is_file() or (own / f).read_bytes() != (d / f).read_bytes():
                not_trainers.append(f"{d.name}/{f}")

    status = (
        json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
    )
    try:
        final_digest = ckpt_io.weights_digest(ckpts[-1]) if ckpts else ""
    except CheckpointError:
        final_digest = ""
    requested = config.get("request", {})
    ctx.attach_json("evidence-check.json", {
        "run_id": run_id, "missing": missing, "datasets": dataset_mismatches,
        "unverified": unverified, "unlisted": unlisted, "disagree": disagree,
        "not_the_trainers": not_trainers, "status": status,
    })  # fmt: skip
    return {
        "run_status": final["status"],
        "layout_missing": len(missing),
        "layout_missing_names": missing,
        "config_names_run": config.get("run_id") == run_id,
        "config_records_request": all(requested.get(k) == v for k, v in p["run"].items()),
        "datasets_recorded": len(records),
        "dataset_digest_mismatches": len(dataset_mismatches),
        "checkpoints": len(ckpts),
        "checkpoints_unverified": len(unverified),
        "checkpoint_problems": (unverified + disagree)[:EXAMPLES],
        "files_without_digest": len(unlisted),
        "stamps_disagreeing": len(disagree),
        "files_not_the_trainers": len(not_trainers),
        "symlinked_checkpoints": symlinks,
        "final_weights_digest_matches": bool(final_digest)
        and final_digest == status.get("weights_sha256"),
    }


# ---------------------------------------------------------------- AC-SVC-002 health


def engine_loaded(pid: int) -> bool | None:
    """Whether the inference engine (numba over llvmlite) is mapped into process ``pid``;
    None where /proc cannot tell."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "llvmlite" in maps and "numba" in maps


def readiness(ctx: CheckContext) -> dict[str, Any]:
    """``/healthz`` and ``/readyz`` of the shared service say no mocks and stage1; a
    service process of the check's own, polled from the instant it announces its URL,
    answers ``/readyz`` 503 until the manifest's datasets verified (its body lists each
    as ok) and the engine is loaded (numba and llvmlite mapped into the process, read
    from /proc right after the answer), and 200 only then."""
    from kernels.data.manifest import load_manifest

    p = ctx.params
    phase = str(p["phase"])
    with client(ctx.service(SERVICE)) as http:
        health = http.get("/healthz")
        ready = http.get("/readyz")
    shared_bodies = [health.json(), ready.json()]
    names = sorted(load_manifest().datasets)

    svc = start_service(ctx.scratch / "evidence", ctx.scratch / "service.log", ready=False)
    t0 = time.monotonic()
    polls, not_ready, premature, wrong_503, first_200 = 0, 0, [], [], None
    engine_seen = None
    try:
        deadline = t0 + float(p["ready_timeout_s"])
        after_ready = int(p.get("polls_after_ready", 20))
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            while time.monotonic() < deadline and after_ready > 0:
                try:
                    r = http.get("/readyz")
                except httpx.TransportError:
                    continue  # not accepting yet
                polls += 1
                body = r.json()
                if r.status_code == 200:
                    loaded = engine_loaded(svc.proc.pid)
                    engine_seen = loaded if engine_seen is None else engine_seen and loaded
                    why = []
                    if sorted(body.get("datasets", {})) != names:
                        why.append(f"datasets {sorted(body.get('datasets', {}))}, manifest {names}")
                    if any(v != "ok" for v in body.get("datasets", {}).values()):
                        why.append(f"datasets not all ok: {body.get('datasets')}")
                    if loaded is False:
                        why.append("the engine (numba, llvmlite) is not loaded in the process")
                    if body.get("ready") is not True or body.get("loaded_s") is None:
                        why.append(
                            f"body says ready={body.get('ready')} loaded_s={body.get('loaded_s')}"
                        )
                    if why:
                        premature.append(
                            f"poll {polls} at {time.monotonic() - t0:.3f} s: {'; '.join(why)}"
                        )
                    if first_200 is None:
                        first_200 = time.monotonic() - t0
                    after_ready -= 1
                elif r.status_code == 503:
                    not_ready += 1
                    if (
                        body.get("ready") is not False
                        or body.get("mocks") is not False
                        or (body.get("phase") != phase)
                    ):
                        wrong_503.append(f"poll {polls}: {body}")
                else:
                    wrong_503.append(f"poll {polls}: status {r.status_code}")
            own_health = http.get("/healthz").json()
    finally:
        svc.stop()
    bodies = [*shared_bodies, own_health]
    ctx.attach_json("readiness.json", {"premature": premature, "wrong_not_ready": wrong_503,
                                       "bodies": bodies})  # fmt: skip
    return {
        "healthz_status": health.status_code,
        "readyz_status": ready.status_code,
        "bodies_with_mocks": sum(1 for b in bodies if b.get("mocks") is not False),
        "bodies_not_in_phase": sum(1 for b in bodies if b.get("phase") != phase),
        "polls": polls,
        "not_ready_answers": not_ready,
        "became_ready": first_200 is not None,
        "first_ready_s": first_200 if first_200 is not None else -1.0,
        "premature_ready_answers": len(premature),
        "premature_examples": premature[:EXAMPLES],
        "wrong_not_ready_answers": len(wrong_503),
        "engine_observable": engine_seen is not None,
    }


# ---------------------------------------------------------------- AC-SVC-003 metrics


def recomputed_val_losses(run: Path, steps: list[int]) -> dict[int, float]:
    """The val loss at step 0 (the initial weights) and at each checkpoint in
    ``checkpoints/``, recomputed with the core on the val split the trainer used, as
    the run's config names it, with the trainer's thread settings (``kernels.infer.nll``
    for a language model, a float64 softmax of the forward pass for the classifier)."""
    import numpy as np

    from acceptance.training import recomputed_val_loss, val_windows
    from kernels import checkpoint as ckpt_io
    from kernels.parallel import engine_threads
    from kernels.serving import model_from_checkpoint
    from kernels.train import TrainConfig, build_task, load_digits_splits, load_lm_data

    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train_config"])
    engine_threads(cfg.threads)  # the trainer's BLAS and numba threads: the same sums
    init_model, _, mcfg, _, _ = build_task(cfg, None)
    if cfg.family == "mlp":
        X, y = load_digits_splits()["val"]

        def loss_of(model: Any, params: Mapping[str, Any]) -> float:
            z = np.asarray(model.forward(dict(params), X), dtype=np.float64)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return float(-logp[np.arange(len(y)), y].mean())
    else:
        windows = val_windows(load_lm_data(cfg.dataset).val, mcfg.n_ctx, cfg.eval_windows)

        def loss_of(model: Any, params: Mapping[str, Any]) -> float:
            return recomputed_val_loss(model, params, windows)

    out = {0: loss_of(init_model, init_model.init_params(cfg.seed))}
    for d in sorted((run / "checkpoints").glob("ckpt-*")):
        loaded = ckpt_io.load_checkpoint(d)
        if loaded.step not in steps:
            continue
        model, _ = model_from_checkpoint(loaded)
        params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
        out[loaded.step] = loss_of(model, params)
    return out


def metrics_are_the_runs_own(ctx: CheckContext) -> dict[str, Any]:
    """A real run through the API: its ``/metrics`` asked while it trains and after it
    ended; at the end they must equal the run's own metrics.jsonl line for line, and the
    val loss they report at step 0 and at each checkpoint must equal its recomputation
    from the initial weights and from that checkpoint with the core; that val loss must
    fall from checkpoint to checkpoint."""
    p = ctx.params
    timeout = float(p.get("run_timeout_s", 60))
    with client(ctx.service(SERVICE)) as http:
        run_id = start_run(http, dict(p["run"]))
        path = f"/api/training/runs/{run_id}/metrics"
        during = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ask while it trains (a cache would show later)
            st = http.get(f"/api/training/runs/{run_id}").json()
            if st["status"] in TERMINAL:
                break
            if st["metrics_count"] > 0:
                r = http.get(path)
                during += r.status_code == 200
            time.sleep(float(p.get("poll_s", 0.2)))
        final = terminal(http, run_id, timeout)
        api = http.get(path).json()
    run = run_folder(ctx, run_id)
    file_lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    api_lines = api.get("metrics", [])
    differing = sum(1 for a, b in zip(api_lines, file_lines, strict=False) if a != b)
    differing += abs(len(api_lines) - len(file_lines))

    ckpt_steps = sorted(int(d.name.split("-")[1]) for d in (run / "checkpoints").glob("ckpt-*"))
    reported = {int(m["step"]): m["val_loss"] for m in api_lines if "val_loss" in m}
    recomputed = recomputed_val_losses(run, ckpt_steps)
    steps = [0, *ckpt_steps]
    unreported = [s for s in steps if s not in reported]
    diffs = [abs(reported[s] - recomputed[s]) for s in steps if s in reported and s in recomputed]
    vals = [reported[s] for s in steps if s in reported]
    for s in steps:
        if s in recomputed:
            ctx.metric("val_loss_recomputed", recomputed[s], step=s)
        if s in reported:
            ctx.metric("val_loss_reported", reported[s], step=s)
    ctx.attach(run / "metrics.jsonl", "metrics.jsonl")
    ctx.attach_json("api-metrics.json", api)
    return {
        "run_status": final["status"],
        "metrics_requests_during_run": during,
        "api_source": str(api.get("source")),
        "api_lines": len(api_lines),
        "file_lines": len(file_lines),
        "api_count_matches": api.get("count") == len(api_lines),
        "lines_differing_from_file": differing,
        "checkpoints": len(ckpt_steps),
        "unreported_val_losses": len(unreported),
        "val_losses": [round(v, 6) for v in vals],
        "val_loss_decreasing": len(vals) >= 2
        and all(b < a for a, b in zip(vals, vals[1:], strict=False)),
        "val_loss_drop": vals[0] - vals[-1] if vals else 0.0,
        "val_loss_max_abs_diff": max(diffs) if diffs else 1.0e9,
    }
