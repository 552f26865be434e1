"""Mutants of the monitoring code (kernels.monitoring) for contracts/infra.yaml.

Each is a bug an engineer could commit while touching the alert renderer or an
exporter; INV-INFRA-005 must go red under each.
"""

from __future__ import annotations

import math
from typing import Any

from kernels import monitoring
from kernels.monitoring import drift_exposition as _drift_exposition


def ks_coefficient_unadjusted(alpha: float, n_slices: int) -> float:
    """The KS coefficient at alpha itself: the Bonferroni division by the number of
    slices forgotten (the detector documents alpha as the family-wise level), so the
    alert fires on KS values the detector calls i.i.d."""
    if not 0 < alpha < 1 or n_slices < 1:
        raise ValueError(f"need alpha in (0, 1) and n_slices >= 1 (got {alpha}, {n_slices})")
    return math.sqrt(-math.log(alpha / 2.0) / 2.0)


def serving_rules_slo_in_ms(t: Any) -> list[dict[str, Any]]:
    """The latency rule with the SLO written in milliseconds against a histogram in
    seconds (``> 500.0`` instead of ``> 0.5``): the alert can never fire."""
    expr = (
        f"histogram_quantile(0.95, sum by (job, le) "
        f"(rate({monitoring.SERVING_LATENCY}_bucket[{t.serving_window}]))) "
        f"> {float(t.serving_p95_slo_ms)!r}"
    )
    return [
        {
            "alert": "ServingLatencyP95High",
            "expr": expr,
            "for": t.serving_for,
            "severity": "page",
            "summary": "p95 request latency of {{ $labels.job }} above the SLO",
            "description": (
                f"p95 over {t.serving_window} above {t.serving_p95_slo_ms:g} ms "
                f"for {t.serving_for}."
            ),
        }
    ]


def drift_exposition_renamed(report: Any) -> str:
    """The drift exporter after a tidy-up renamed ``harness_drift_ks_statistic`` to
    ``harness_drift_ks``, with the alert rules left reading the old name."""
    old = monitoring.DRIFT_KS
    text = _drift_exposition(report)
    return text.replace(old + "{", "harness_drift_ks{").replace(f" {old} ", " harness_drift_ks ")
