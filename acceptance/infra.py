"""Checks for seed items that need infrastructure this machine does not have
(a cloud account, a cluster, GPUs, a KMS). They SKIP with the reason when the
precondition is unmet, so a report shows them as not shown, never as passed;
where the precondition holds they run the declared probe for real."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from harness.context import CheckContext


def infrastructure_probe(ctx: CheckContext) -> dict[str, Any]:
    """params: programs (must be on PATH), env (variables that must be set),
    probe (argv run when both hold), reason (what this needs, for the skip).
    observations: exit_code of the probe, probe (its argv as text)."""
    programs = list(ctx.params.get("programs", []))
    env = list(ctx.params.get("env", []))
    missing = [p for p in programs if shutil.which(p) is None]
    missing += [f"${v}" for v in env if not os.environ.get(v)]
    if missing:
        ctx.skip(
            f"{ctx.params.get('reason', 'needs infrastructure')}: "
            f"{', '.join(missing)} not available on this machine"
        )
    probe = [str(a) for a in ctx.params["probe"]]
    proc = subprocess.run(
        probe, capture_output=True, text=True, timeout=float(ctx.params.get("probe_timeout", 300))
    )
    print(proc.stdout)
    print(proc.stderr)
    return {"exit_code": proc.returncode, "probe": " ".join(probe)}
