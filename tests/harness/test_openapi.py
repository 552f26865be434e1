"""harness.checks.openapi against a tiny FastAPI app of this test's own (not our
service), served by uvicorn on loopback in a thread: a conforming app passes, a 500,
a missing header, a body that breaks its schema and an undocumented status are found,
and a counterexample is plain JSON that replays."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("schemathesis")
fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, Phase, find, given, settings  # noqa: E402

from harness.checks import openapi  # noqa: E402

BUGS: dict[str, bool] = {}  # which bug the app has now (set by each test)
HEADERS = {"cache-control": "no-store", "content-type": r"application/(problem\+)?json"}
KNOWN = [
    {"method": "GET", "path": "/items/{item_id}", "path_parameters": {"item_id": 3}},
    {"method": "GET", "path": "/items/{item_id}", "path_parameters": {"item_id": 404}},
    {"method": "POST", "path": "/items", "body": {"name": "a", "n": 1},
     "media_type": "application/json"},
    {"method": "POST", "path": "/items", "body": {"name": 1}, "media_type": "application/json"},
]  # fmt: skip


from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402


class Item(BaseModel):
    name: str = Field(max_length=20)
    n: int = Field(ge=0, le=100)


class Problem(BaseModel):
    title: str
    status: int


def problem(status: int, title: str) -> JSONResponse:
    return JSONResponse({"title": title, "status": status}, status_code=status,
                        media_type="application/problem+json")  # fmt: skip


def make_app() -> Any:
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "content": {"application/problem+json": {}}}
        for code in (400, 404, 422)
    }  # 400: FastAPI's answer to a body it cannot decode
    app = fastapi.FastAPI(title="items")

    @app.middleware("http")
    async def no_store(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        if not (BUGS.get("header") and response.status_code >= 400):
            response.headers["cache-control"] = "no-store"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, exc: Any) -> JSONResponse:
        return problem(422, "invalid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Any, exc: Any) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.get("/items/{item_id}", response_model=Item, responses=errors)
    def get_item(item_id: int) -> Any:
        if item_id == 404:
            return problem(404, "no such item")
        if BUGS.get("field"):
            return JSONResponse({"name": "x"})  # no "n": the schema requires it
        return {"name": "item", "n": abs(item_id) % 100}

    @app.post("/items", status_code=201, response_model=Item, responses=errors)
    def post_item(item: Item) -> Any:
        if BUGS.get("crash"):
            item.n = item.n // len(item.name)  # the schema allows an empty name: 500
        if BUGS.get("status"):
            return JSONResponse(item.model_dump(), status_code=200)  # documented: 201
        return item

    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app(), log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No bug unless the test plants one; and schemathesis's patches of Hypothesis's
    internals (its printer, buffer size) are undone after each test, so that the
    Hypothesis tests run after these report as usual."""
    from hypothesis import core as root_core
    from hypothesis.internal import entropy
    from hypothesis.internal.conjecture import engine
    from hypothesis.strategies._internal import collections, core
    from schemathesis.generation.hypothesis import setup

    for mod, name in ((root_core, "RepresentationPrinter"), (root_core, "BUFFER_SIZE"),
                      (engine, "BUFFER_SIZE"), (collections, "BUFFER_SIZE"),
                      (entropy, "register_random"),
                      (core, "is_first_param_referenced_in_function")):  # fmt: skip
        monkeypatch.setattr(mod, name, getattr(mod, name))
    monkeypatch.setattr(setup, "_is_patched", getattr(setup, "_is_patched", False), raising=False)
    BUGS.clear()
    yield
    BUGS.clear()


def ctx_for(url: str, requests: list[dict[str, Any]], **params: Any) -> Any:
    return SimpleNamespace(
        params={"service": "items", "headers": HEADERS, "requests": requests, **params},
        service=lambda name: url,
        skip=pytest.skip,
    )


def observe(url: str, requests: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return openapi.conforms(ctx_for(url, requests, **params))


FAULTS = ("server_errors", "undocumented_status", "undocumented_content_type",
          "schema_violations", "header_violations", "no_response", "unsendable")  # fmt: skip


def faults(obs: dict[str, Any]) -> dict[str, int]:
    return {k: obs[k] for k in FAULTS if obs[k]}


def test_a_conforming_app_passes_known_and_generated_requests(url: str) -> None:
    obs = observe(url, KNOWN)
    assert faults(obs) == {}, obs["problems"]
    assert obs["responses"] == 4 and obs["statuses"] == {"200": 1, "404": 1, "201": 1, "422": 1}

    seen: list[str] = []

    @settings(max_examples=40, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(openapi.generated_requests(url=url))
    def search(params: dict[str, Any]) -> None:
        obs = observe(url, params["requests"])
        seen.append(params["requests"][0]["mode"])
        assert faults(obs) == {}, (params, obs["problems"])

    search()
    assert {"positive", "negative"} <= set(seen)


def find_counterexample(url: str, fault: str) -> dict[str, Any]:
    """The first generated request with ``fault`` (not shrunk: the harness's engine
    shrinks; here it would cost seconds)."""
    return find(  # type: ignore[no-any-return]
        openapi.generated_requests(url=url),
        lambda params: observe(url, params["requests"])[fault] > 0,
        settings=settings(max_examples=200, database=None, deadline=None,
                          phases=[Phase.generate], suppress_health_check=list(HealthCheck)),
    )  # fmt: skip


def test_a_500_on_an_edge_input_is_found_and_the_counterexample_is_plain_json(url: str) -> None:
    BUGS["crash"] = True
    found = find_counterexample(url, "server_errors")
    saved = json.loads(json.dumps(found))  # what the regression store keeps
    assert saved == found
    assert saved["requests"][0]["path"] == "/items"
    assert saved["requests"][0]["body"]["name"] == ""
    replay = observe(url, saved["requests"])  # replays against the service
    assert replay["server_errors"] == 1 and replay["undocumented_status"] == 1
    assert "500" in replay["problems"][0]
    BUGS.clear()
    assert faults(observe(url, saved["requests"])) == {}


def test_a_missing_header_a_broken_body_and_an_undocumented_status_are_found(url: str) -> None:
    BUGS["header"] = True
    obs = observe(url, KNOWN)
    assert faults(obs) == {"header_violations": 2}  # the 404 and the 422
    assert "no cache-control header" in obs["problems"][0]

    BUGS.clear()
    BUGS["field"] = True
    obs = observe(url, KNOWN[:1])
    assert faults(obs) == {"schema_violations": 1}
    assert '"n" is a required property' in obs["problems"][0]

    BUGS.clear()
    BUGS["status"] = True
    found = find_counterexample(url, "undocumented_status")
    assert found["requests"][0]["method"] == "POST"


def test_headers_apply_only_to_the_media_types_named(url: str) -> None:
    BUGS["header"] = True
    obs = observe(url, KNOWN, headers_for="^application/json$")  # not problem+json
    assert faults(obs) == {}


def test_fixtures_are_substituted_and_a_missing_one_or_operation_is_an_error(url: str) -> None:
    request = {
        "method": "GET",
        "path": "/items/{item_id}",
        "path_parameters": {"item_id": "{{item}}"},
    }
    obs = openapi.conformance(ctx_for(url, [request]), fixtures={"item": 404})
    assert obs["statuses"] == {"404": 1}
    with pytest.raises(openapi.OpenAPIError, match="fixture"):
        observe(url, [request])
    with pytest.raises(openapi.OpenAPIError, match="no operation GET /nope"):
        observe(url, [{"method": "GET", "path": "/nope"}])

    @settings(max_examples=30, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(openapi.generated_requests(url=url, fixtures=["item_id"], modes=["positive"],
                                      caps={"POST /items": {"n": 5}}))  # fmt: skip
    def search(params: dict[str, Any]) -> None:
        (r,) = params["requests"]
        assert r["mode"] == "positive"
        if r["path"] == "/items":
            assert r["body"]["n"] <= 5
        else:
            assert r["path_parameters"]["item_id"] in ("{{item_id}}",) or isinstance(
                r["path_parameters"]["item_id"], int
            )

    search()


def test_no_service_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_SERVICE_MY_API_URL", raising=False)
    with pytest.raises(openapi.OpenAPIError, match=r"\$HARNESS_SERVICE_MY_API_URL"):
        openapi.service_url("my-api")
    monkeypatch.setenv("HARNESS_SERVICE_MY_API_URL", "http://127.0.0.1:9/")
    assert openapi.service_url("my-api") == "http://127.0.0.1:9"


def test_the_check_skips_and_harness_imports_without_schemathesis(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "schemathesis", None)  # import schemathesis: ImportError
    with pytest.raises(pytest.skip.Exception, match="schemathesis is not installed"):
        observe(url, KNOWN)
    code = (
        "import sys; sys.modules['schemathesis'] = None\n"
        "import harness.checks.openapi, harness.cli, harness.runner\n"
        "assert 'schemathesis' not in [m for m in sys.modules if sys.modules[m]]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
