"""Session-wide settings for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _lifecycle_audit_log(tmp_path_factory: pytest.TempPathFactory):
    """The core appends lifecycle events (training, checkpoints, canary, backup) to
    ``$KERNELS_AUDIT_LOG``, else to the repository's evidence/: tests keep theirs in a
    temporary folder, as checks keep theirs in their scratch (``[tool.harness] check-env``)."""
    old = os.environ.get("KERNELS_AUDIT_LOG")
    os.environ["KERNELS_AUDIT_LOG"] = str(tmp_path_factory.mktemp("lifecycle") / "audit.jsonl")
    yield
    if old is None:
        os.environ.pop("KERNELS_AUDIT_LOG", None)
    else:
        os.environ["KERNELS_AUDIT_LOG"] = old
