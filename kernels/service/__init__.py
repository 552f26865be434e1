"""The training service over our core: an HTTP API that starts real training runs of
``kernels.train`` in their own processes, streams their steps and checkpoints as
Server-Sent Events, and generates from their checkpoints (``harness core serve``;
docs/service.md).

Modules: ``runs`` (the run store: evidence layout, status, events, the child processes;
standard library only), ``child`` (``python -m kernels.service.child RUN_DIR``: one
training run), ``generation`` (loaded checkpoints kept for ``/api/generate``), ``router``
(a canary router over two service processes; standard library only), ``app`` (the
FastAPI application, ``create_app``), ``server`` (uvicorn on a loopback port,
``serve``). FastAPI, uvicorn and sse-starlette (the ``service`` extra) are imported only
by ``app`` and ``server``: ``import kernels.service`` needs none of them.
"""

from __future__ import annotations
