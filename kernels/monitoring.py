"""Metrics in the Prometheus text format, and the alert rules that watch them.

Exporters (each returns exposition text, for node_exporter's textfile collector
or a Pushgateway; Prometheus adds ``job`` and ``instance`` when it scrapes):

- :func:`training_exposition`: the last record of a run's ``metrics.jsonl``
  (step, loss) and its target step count;
- :func:`latency_exposition`: request durations as a histogram;
- :func:`drift_exposition`: a :class:`kernels.data.drift.DriftReport`, per slice
  (KS statistic, PSI) with the two sample sizes.

:func:`render_alert_rules` writes the Prometheus rule file for those metrics
from :class:`AlertThresholds`; ``deploy/monitoring/alerts.yml`` is its rendering
of :func:`product_thresholds` (the drift detector's own defaults), so the drift
alert applies the detector's rule to the exported statistics: KS above the
asymptotic critical value at ``alpha / n_slices`` (Bonferroni) AND PSI above
``psi_threshold``. ``INV-INFRA-007`` checks the shipped file against the
rendering; ``INV-INFRA-005`` unit-tests the rendering with promtool.

Nothing here imports numba except :func:`product_thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TRAIN_STEP",
    "TRAIN_STEPS_TARGET",
    "TRAIN_LOSS",
    "SERVING_LATENCY",
    "DRIFT_KS",
    "DRIFT_PSI",
    "DRIFT_N_REFERENCE",
    "DRIFT_N_CURRENT",
    "AlertThresholds",
    "product_thresholds",
    "ks_coefficient",
    "render_alert_rules",
    "training_exposition",
    "latency_exposition",
    "drift_exposition",
]

# the metric names the exporters emit and the rules read
TRAIN_STEP = "harness_train_step"
TRAIN_STEPS_TARGET = "harness_train_steps_target"
TRAIN_LOSS = "harness_train_loss"
SERVING_LATENCY = "harness_serving_request_duration_seconds"
DRIFT_KS = "harness_drift_ks_statistic"
DRIFT_PSI = "harness_drift_psi"
DRIFT_N_REFERENCE = "harness_drift_reference_samples"
DRIFT_N_CURRENT = "harness_drift_current_samples"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class AlertThresholds:
    """What the rules compare with. The drift fields are the detector's
    (``DriftDetector`` defaults, see :func:`product_thresholds`); the serving
    SLO and the training windows are declared here."""

    drift_alpha: float = 0.01
    drift_slices: int = 16
    drift_psi_threshold: float = 0.1
    serving_p95_slo_ms: float = 500.0  # p95 request latency objective
    serving_window: str = "5m"  # rate() window of the latency histogram
    serving_for: str = "10m"  # how long p95 stays above the SLO before the alert fires
    training_loss_for: str = "1m"
    training_stall_window: str = "15m"  # no step within it while below the target: stalled


def product_thresholds() -> AlertThresholds:
    """The thresholds the product uses: the drift detector's defaults (alpha,
    psi_threshold) and its default slicing (the 16 2x2 pixel blocks)."""
    import inspect

    from kernels.data.drift import DriftDetector, digit_block_slices

    defaults = inspect.signature(DriftDetector.__init__).parameters
    return AlertThresholds(
        drift_alpha=float(defaults["alpha"].default),
        drift_slices=len(digit_block_slices()),
        drift_psi_threshold=float(defaults["psi_threshold"].default),
    )


def ks_coefficient(alpha: float, n_slices: int) -> float:
    """c in the KS critical value c * sqrt((n + m) / (n m)), at the Bonferroni level
    alpha / n_slices (as ``DriftDetector.detect`` uses ``kernels.data.drift.ks_critical``)."""
    if not 0 < alpha < 1 or n_slices < 1:
        raise ValueError(f"need alpha in (0, 1) and n_slices >= 1 (got {alpha}, {n_slices})")
    level = alpha / n_slices
    return math.sqrt(-math.log(level / 2.0) / 2.0)


# ------------------------------------------------------------------ rules
def _drift_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    c = ks_coefficient(t.drift_alpha, t.drift_slices)
    n, m = DRIFT_N_REFERENCE, DRIFT_N_CURRENT
    expr = (
        f"(\n  {DRIFT_KS}\n    > ignoring(slice) group_left()\n"
        f"  ({c!r} * sqrt(({n} + {m}) / ({n} * {m})))\n)\n"
        f"and\n({DRIFT_PSI} > {t.drift_psi_threshold!r})"
    )
    return [
        {
            "alert": "InputDrift",
            "expr": expr,
            "for": "0m",
            "severity": "warning",
            "summary": "Input drift on {{ $labels.slice }}",
            "description": (
                f"KS statistic above its critical value at alpha={t.drift_alpha!r} "
                f"(Bonferroni over {t.drift_slices} slices) and PSI above "
                f"{t.drift_psi_threshold!r}: retrain on fresh data."
            ),
        }
    ]


def _serving_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    slo_s = t.serving_p95_slo_ms / 1000.0
    expr = (
        f"histogram_quantile(0.95, sum by (job, le) "
        f"(rate({SERVING_LATENCY}_bucket[{t.serving_window}]))) > {slo_s!r}"
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


def _training_rules(t: AlertThresholds) -> list[dict[str, Any]]:
    return [
        {
            "alert": "TrainingLossNotFinite",
            "expr": f"({TRAIN_LOSS} != {TRAIN_LOSS}) or (abs({TRAIN_LOSS}) == Inf)",
            "for": t.training_loss_for,
            "severity": "page",
            "summary": "Training run {{ $labels.run }} has a NaN or infinite loss",
            "description": "The loss is not finite: the run will not recover; stop it.",
        },
        {
            "alert": "TrainingStalled",
            "expr": (
                f"(changes({TRAIN_STEP}[{t.training_stall_window}]) == 0)\n"
                f"and\n({TRAIN_STEP} < {TRAIN_STEPS_TARGET})"
            ),
            "for": "0m",
            "severity": "warning",
            "summary": "Training run {{ $labels.run }} made no step in " + t.training_stall_window,
            "description": "Below its target step count and no progress: preempted or hung.",
        },
    ]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rule_yaml(rule: Mapping[str, Any]) -> list[str]:
    out = [f"      - alert: {rule['alert']}", "        expr: |"]
    out += [f"          {line}" for line in str(rule["expr"]).splitlines()]
    out += [
        f"        for: {rule['for']}",
        "        labels:",
        f"          severity: {rule['severity']}",
        "        annotations:",
        f"          summary: {_quote(rule['summary'])}",
        f"          description: {_quote(rule['description'])}",
    ]
    return out


def render_alert_rules(thresholds: AlertThresholds | None = None) -> str:
    """The Prometheus rule file (YAML text) for the training, serving and drift metrics."""
    t = thresholds if thresholds is not None else AlertThresholds()
    lines = [
        "# Generated by kernels.monitoring.render_alert_rules(product_thresholds()).",
        "# Do not edit: change the renderer or the thresholds, then re-render",
        "# (tests/acceptance/test_infra.py fails while this file differs).",
        "groups:",
    ]
    for name, rules in (
        ("harness-training", _training_rules(t)),
        ("harness-serving", _serving_rules(t)),
        ("harness-drift", _drift_rules(t)),
    ):
        lines += [f"  - name: {name}", "    rules:"]
        for rule in rules:
            lines += _rule_yaml(rule)
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------- exporters
def _value(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    parts = []
    for k, v in labels.items():
        s = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{s}"')
    return "{" + ",".join(parts) + "}"


def _family(name: str, kind: str, help_: str, samples: Sequence[tuple[str, Any, float]]) -> str:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines += [f"{n}{_labels(lab)} {_value(v)}" for n, lab, v in samples]
    return "\n".join(lines) + "\n"


def training_exposition(records: Sequence[Mapping[str, Any]], steps_target: int, run: str) -> str:
    """Gauges of a training run from its ``metrics.jsonl`` records: the last step,
    the last training loss, and the step count the run is configured for."""
    steps = [r for r in records if "loss" in r and "step" in r]
    if not steps:
        raise ValueError("no training step records (with 'step' and 'loss')")
    last = steps[-1]
    lab = {"run": run}
    return (
        _family(TRAIN_STEP, "gauge", "Last completed optimizer step.",
                [(TRAIN_STEP, lab, float(last["step"]))])
        + _family(TRAIN_STEPS_TARGET, "gauge", "Steps the run is configured for.",
                  [(TRAIN_STEPS_TARGET, lab, float(steps_target))])
        + _family(TRAIN_LOSS, "gauge", "Training loss of the last step.",
                  [(TRAIN_LOSS, lab, float(last["loss"]))])
    )  # fmt: skip


def latency_exposition(
    durations_s: Sequence[float], buckets: Sequence[float] = LATENCY_BUCKETS
) -> str:
    """Request durations (seconds) as a cumulative histogram."""
    edges = sorted(float(b) for b in buckets)
    samples: list[tuple[str, Any, float]] = []
    for le in edges:
        n = sum(1 for d in durations_s if d <= le)
        samples.append((f"{SERVING_LATENCY}_bucket", {"le": _value(le)}, float(n)))
    samples.append((f"{SERVING_LATENCY}_bucket", {"le": "+Inf"}, float(len(durations_s))))
    samples.append((f"{SERVING_LATENCY}_sum", {}, float(sum(durations_s))))
    samples.append((f"{SERVING_LATENCY}_count", {}, float(len(durations_s))))
    return _family(SERVING_LATENCY, "histogram", "Request duration in seconds.", samples)


def drift_exposition(report: Any) -> str:
    """A ``DriftReport`` as gauges: per slice the KS statistic and PSI, and the
    reference and current sample sizes (the rules recompute the critical value)."""
    ks = [(DRIFT_KS, {"slice": s.name}, s.ks) for s in report.slices]
    psi = [(DRIFT_PSI, {"slice": s.name}, s.psi) for s in report.slices]
    return (
        _family(DRIFT_KS, "gauge", "Two-sample KS statistic of a slice, current vs reference.", ks)
        + _family(DRIFT_PSI, "gauge", "Population stability index of a slice.", psi)
        + _family(DRIFT_N_REFERENCE, "gauge", "Rows in the reference sample.",
                  [(DRIFT_N_REFERENCE, {}, float(report.n_reference))])
        + _family(DRIFT_N_CURRENT, "gauge", "Rows in the current sample.",
                  [(DRIFT_N_CURRENT, {}, float(report.n_current))])
    )  # fmt: skip
