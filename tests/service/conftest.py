"""Fixtures of the training service tests: an app over a temporary evidence folder."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")

with warnings.catch_warnings():  # starlette asks for httpx2; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from acceptance.service_client import parse_sse  # noqa: E402,F401  (the checks' own parser)
from kernels.service.app import create_app  # noqa: E402

SEED_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-disposition": "inline",
}
TERMINAL = ("succeeded", "failed", "cancelled")


def assert_seed_headers(response: Any, problem: bool = False) -> None:
    kind = "application/problem+json" if problem else "application/json"
    assert response.headers["content-type"] == f"{kind}; charset=utf-8"
    for key, value in SEED_HEADERS.items():
        assert response.headers.get(key) == value, key


def wait_ready(client: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)


def wait_status(client: Any, run_id: str, until: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = client.get(f"/api/training/runs/{run_id}").json()
        if until(st):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


@pytest.fixture
def evidence(tmp_path: Path) -> Path:
    return tmp_path / "evidence"


@pytest.fixture
def client(evidence: Path, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(evidence, audit_log=tmp_path / "audit.jsonl", sse_ping_s=0.2,
                     shutdown_timeout_s=30)  # fmt: skip
    with TestClient(app) as c:
        wait_ready(c)
        yield c
