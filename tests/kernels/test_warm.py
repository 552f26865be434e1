"""kernels.warm: the fork server's preload that loads the compiled kernels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_warm_loads_every_family_and_writes_nothing(tmp_path):
    # in a fresh interpreter (the fork server is one), from an empty working directory
    code = (
        "import threading, kernels.warm as w; parts = w.warm(); "
        "assert sorted(parts) == ['gpt2', 'llama', 'mlp'], parts; "
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERNELS_AUDIT_LOG": str(tmp_path / "a.jsonl")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
