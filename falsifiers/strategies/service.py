"""Strategies for the service contract (contracts/service.yaml).

``api_requests``: requests schemathesis generates from the training service's own
OpenAPI document (``harness.checks.openapi.generated_requests``), valid and invalid,
as params of ``acceptance.service_openapi:api_conforms``. Choices, each for a reason:

- about half of the requests name the check's fixture run (``"{{run_id}}"``) wherever
  the document has a ``run_id``, so the search reaches the status, metrics, events,
  cancel and generation of a run that exists instead of stopping at a 404;
- ``POST /api/generate`` is drawn 4 times as often as each other operation: it has the
  deepest code behind it (a checkpoint loaded, the prompt tokenized, generation with
  the KV cache), where the others read a file or two;
- whole numbers go as ints: schemathesis spells some integers as floats (``2.0``,
  valid JSON Schema), which the service's strict models refuse with a 422, so a valid
  request would rarely get past validation (the service's choice, not this
  invariant's subject);
- valid training runs stay cheap: at most 1 step of at most 8 windows (the search is
  about how the API answers, not about training).
"""

from __future__ import annotations

from typing import Any


def api_requests() -> Any:
    from harness.checks.openapi import generated_requests

    return generated_requests(
        "training",
        modes=("positive", "negative"),
        fixtures=("run_id",),
        weights={"POST /api/generate": 4},
        whole_floats=False,
        caps={"POST /api/training/runs": {"steps": 1, "batch_size": 8}},
    )
