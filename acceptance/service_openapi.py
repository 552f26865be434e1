"""INV-SVC-100: every response of the training service conforms to its own OpenAPI
document and carries the seed's headers (contracts/service.yaml, AC-SVC-009).

The tool's check (``harness.checks.openapi``) sends the requests and observes; what
is ours is the fixture: a tiny finished run (``params.fixture_run``), so that requests
naming ``"{{run_id}}"`` reach the code behind an existing run (its status, metrics,
events, cancel, generation from its checkpoints) instead of stopping at a 404. One
fixture per service instance and worker: a property search calls the check once per
example in the same worker, and pays for the run once.
"""

from __future__ import annotations

from typing import Any

from acceptance.service_client import TERMINAL, client, start_run, wait_status
from harness.checks.openapi import conformance, service_url
from harness.context import CheckContext

_FIXTURES: dict[str, str] = {}  # service URL -> the id of its fixture run


def fixture_run(url: str, body: dict[str, Any], timeout: float) -> str:
    """The id of a finished run with a checkpoint on the service at ``url`` (started
    here the first time)."""
    if url not in _FIXTURES:
        with client(url) as http:
            run_id = start_run(http, body)
            st = wait_status(http, run_id, lambda s: s["status"] in TERMINAL, timeout)
        if st["status"] != "succeeded" or not st["checkpoint_count"]:
            raise AssertionError(f"the fixture run {run_id} ended {st['status']}: {st}")
        _FIXTURES[url] = run_id
    return _FIXTURES[url]


def api_conforms(ctx: CheckContext) -> dict[str, Any]:
    """``harness.checks.openapi.conformance`` of ``params.requests`` against the
    training service, with ``{{run_id}}`` the fixture run. Observations: the tool's,
    and ``fixture_run`` (its id)."""
    p = ctx.params
    url = service_url(str(p["service"]), ctx)
    run_id = fixture_run(url, dict(p["fixture_run"]), float(p.get("fixture_timeout_s", 60)))
    return {**conformance(ctx, fixtures={"run_id": run_id}), "fixture_run": run_id}
