"""The OpenAPI document describes what the service really sends: every route's success
body, its problem statuses under application/problem+json, and no FastAPI default 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest

from kernels.service.app import RunStatus, create_app
from kernels.service.runs import STATUSES
from tests.service.conftest import TERMINAL, TestClient, wait_status

SMALL_RUN = {"family": "mlp", "model_size": "micro", "steps": 4, "batch_size": 8}
PROBLEM_REF = "#/components/schemas/Problem"


def response_schema(doc: dict[str, Any], path: str, method: str, status: int, media: str):
    """The schema ``doc`` gives for that response, made self-contained (``$ref``s into
    ``#/components`` resolve against the document's components)."""
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: {status} not documented"
    content = responses[str(status)]["content"]
    assert media in content, f"{method.upper()} {path} {status}: {sorted(content)}"
    return {**content[media]["schema"], "components": doc["components"]}


def assert_conforms(doc, path, method, response) -> None:
    media = response.headers["content-type"].split(";")[0]
    schema = response_schema(doc, path, method, response.status_code, media)
    jsonschema.Draft202012Validator(schema).validate(response.json())


@pytest.fixture
def doc(client) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_problem_statuses_are_problem_json_and_fastapi_422_is_gone(doc):
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "ValidationError" not in doc["components"]["schemas"]
    seen = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert (
                "200" in op["responses"] or "201" in op["responses"] or "202" in op["responses"]
            ), (method, path)
            for code, response in op["responses"].items():
                content = response.get("content", {})
                if int(code) >= 400 and not (path == "/readyz" and code == "503"):
                    assert list(content) == ["application/problem+json"], (method, path, code)
                    assert content["application/problem+json"]["schema"]["$ref"] == PROBLEM_REF
                    seen += 1
    assert seen >= 10


def test_routes_whose_parameters_cannot_be_invalid_document_no_422(doc):
    for path in ("/api/training/runs/{run_id}", "/api/training/runs/{run_id}/metrics"):
        for op in doc["paths"][path].values():
            assert "422" not in op["responses"], path
            assert "404" in op["responses"], path
    for path, method in (("/api/training/runs", "post"), ("/api/generate", "post"),
                         ("/api/events/training", "get")):  # fmt: skip
        assert "422" in doc["paths"][path][method]["responses"], path


def test_run_status_names_are_the_stores():
    assert set(get_args(RunStatus.model_fields["status"].annotation)) == set(STATUSES)


def test_live_responses_conform_to_the_document(client, doc):
    checked = 0

    def check(path, method, response):
        nonlocal checked
        assert_conforms(doc, path, method, response)
        checked += 1

    check("/healthz", "get", client.get("/healthz"))
    check("/readyz", "get", client.get("/readyz"))
    check("/api/training/runs", "get", client.get("/api/training/runs"))
    check("/api/training/runs", "post", client.post("/api/training/runs", json={"steps": 1}))
    bad_dataset = {**SMALL_RUN, "dataset": "pystdlib"}
    check("/api/training/runs", "post", client.post("/api/training/runs", json=bad_dataset))
    for method, path in (("get", "/api/training/runs/{run_id}"),
                         ("get", "/api/training/runs/{run_id}/metrics"),
                         ("delete", "/api/training/runs/{run_id}")):  # fmt: skip
        check(path, method, client.request(method, path.replace("{run_id}", "run-x")))
    check("/api/events/training", "get", client.get("/api/events/training?run_id=../x"))
    check("/api/events/training", "get", client.get("/api/events/training?run_id=run-x"))
    check("/api/generate", "post", client.post("/api/generate", json={"prompt": 3}))
    check("/api/generate", "post", client.post("/api/generate", json={"run_id": "run-x"}))

    created = client.post("/api/training/runs", json=SMALL_RUN)
    check("/api/training/runs", "post", created)
    run_id = created.json()["run_id"]
    check("/api/generate", "post", client.post("/api/generate", json={"run_id": run_id}))
    wait_status(client, run_id, lambda st: st["status"] in TERMINAL)
    for method, path in (("get", "/api/training/runs/{run_id}"),
                         ("get", "/api/training/runs/{run_id}/metrics"),
                         ("delete", "/api/training/runs/{run_id}")):  # fmt: skip
        check(path, method, client.request(method, path.replace("{run_id}", run_id)))
    check("/api/training/runs", "get", client.get("/api/training/runs"))
    check("/api/generate", "post", client.post("/api/generate", json={"run_id": run_id}))
    assert checked == 19


def test_readyz_503_conforms(tmp_path: Path, monkeypatch):
    from kernels.service.app import Readiness

    monkeypatch.setattr(Readiness, "load", lambda self: None)  # never ready
    with TestClient(create_app(tmp_path / "evidence")) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert_conforms(c.get("/openapi.json").json(), "/readyz", "get", r)


def test_a_metric_line_that_is_not_a_number_or_text_does_not_conform(client, doc):
    schema = response_schema(doc, "/api/training/runs/{run_id}/metrics", "get", 200,
                             "application/json")  # fmt: skip
    good = {"run_id": "r", "source": "metrics.jsonl", "count": 1,
            "metrics": [{"step": 0, "val_loss": 2.5, "purpose": "ablation"}]}  # fmt: skip
    jsonschema.Draft202012Validator(schema).validate(good)
    bad = {**good, "metrics": [{"step": 0, "val_loss": [2.5]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(bad)


def test_a_500_is_a_problem_with_the_seed_headers(tmp_path: Path):
    from tests.service.conftest import assert_seed_headers

    app = create_app(tmp_path / "evidence")

    def boom(run_id: str) -> Any:
        raise RuntimeError("disk on fire")

    app.state.store.status = boom
    with TestClient(app, raise_server_exceptions=False) as c:
        (tmp_path / "evidence" / "training" / "run-x").mkdir(parents=True)
        (tmp_path / "evidence" / "training" / "run-x" / "config.json").write_text("{}")
        r = c.get("/api/training/runs/run-x")
    assert r.status_code == 500
    assert_seed_headers(r, problem=True)
    assert r.json()["detail"] == "RuntimeError: disk on fire"
