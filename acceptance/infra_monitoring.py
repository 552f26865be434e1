"""AC-INFRA-005: the alert rules for training, serving latency and drift load in
promtool, fire on triggered series and stay quiet on healthy ones.

The rules are rendered by ``kernels.monitoring.render_alert_rules`` from the
product's thresholds (the drift detector's alpha, slices and PSI threshold).
Two checks, judged apart so that each goes red for its own reason:

- ``shipped_rules_are_the_rendering`` (INV-INFRA-007): the shipped
  ``deploy/monitoring/alerts.yml`` equals that rendering, byte for byte. It
  needs no promtool.
- ``alert_rules_fire`` (INV-INFRA-005): the *rendering* (never the shipped file)
  is written to the check's scratch directory, where promtool checks it, then
  runs every group of ``deploy/monitoring/alerts_test.yml`` on its own (so passes
  and failures are counted), then two cases built from the product itself: the
  drift detector run on an i.i.d. and on a shifted sample of the digits, its
  report exported by ``kernels.monitoring.drift_exposition``, and a promtool test
  that expects exactly the slices the detector flagged to raise ``InputDrift``.
  A renderer bug can only turn this check red through promtool: a unit test
  that fires or stays quiet when it should not.

Each check returns its judged observations at the top level and what it only
records, never judged, under ``info``.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.context import CheckContext

DRIFT_LABELS = {"job": "harness-drift", "instance": "drift-cronjob"}
_METRIC = re.compile(r"\b(harness_[a-z0-9_]+)\b")


def _promtool(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def exposition_samples(text: str) -> list[tuple[str, dict[str, str], str]]:
    """``(name, labels, value)`` of every sample line of Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        selector, value = line.rsplit(" ", 1)
        name, _, rest = selector.partition("{")
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', rest))
        out.append((name, labels, value))
    return out


def _selector(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def drift_test_group(
    exposition: str, drifted: list[str], rule: dict[str, Any], name: str
) -> dict[str, Any]:
    """A promtool test group: the exported drift series (held for 20 minutes) and,
    at 5m, exactly one ``InputDrift`` alert per slice in ``drifted``."""
    series = [
        {"series": _selector(n, {**DRIFT_LABELS, **lab}), "values": f"{v}x20"}
        for n, lab, v in exposition_samples(exposition)
    ]
    notes = rule.get("annotations", {})
    alerts = [
        {
            "exp_labels": {**rule.get("labels", {}), **DRIFT_LABELS, "slice": s},
            "exp_annotations": {
                k: str(v).replace("{{ $labels.slice }}", s) for k, v in notes.items()
            },
        }
        for s in drifted
    ]
    test = {"eval_time": "5m", "alertname": rule["alert"], "exp_alerts": alerts}
    return {"name": name, "interval": "1m", "input_series": series, "alert_rule_test": [test]}


def _run_group(
    promtool: str, work: Path, group: dict[str, Any], index: int, interval: Any
) -> tuple[bool, str]:
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": interval, "tests": [group]}
    path = work / f"test_{index:02d}.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    proc = _promtool([promtool, "test", "rules", path.name], work)
    return proc.returncode == 0, proc.stdout + proc.stderr


def _digits_sample(
    seed: int, n_ref: int, n_cur: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A reference and a current sample drawn without replacement from the shipped
    digits, and the dataset's manifest reference. Written here on purpose (a few
    lines over public ``kernels.data`` functions) rather than imported: the data
    checks' helpers in ``acceptance/data_pipeline.py`` are private to that module."""
    from kernels.data.digits import load_digits
    from kernels.data.manifest import load_manifest

    X, _ = load_digits()
    entry = load_manifest().datasets["digits"]
    order = np.random.default_rng(seed).permutation(X.shape[0])
    ref, cur = X[order[:n_ref]], X[order[n_ref : n_ref + n_cur]].copy()
    return ref, cur, {"name": entry.name, "sha256": entry.sha256}


def _detector_reports(ctx: CheckContext) -> list[tuple[str, Any]]:
    """The product's drift detector (its default alpha, PSI threshold and slices) on
    an i.i.d. sample and on one with a brightness shift of one pixel block."""
    from kernels.data.drift import DriftDetector, digit_block_slices

    n_ref, n_cur = int(ctx.params.get("n_ref", 1257)), int(ctx.params.get("n_cur", 270))
    ref, cur, dsref = _digits_sample(int(ctx.seed) % (2**31), n_ref, n_cur)
    slices = digit_block_slices()
    block = list(slices)[int(ctx.params.get("block", 5))]
    det = DriftDetector(ref, dataset=dsref)
    shifted = cur.copy()
    idx = slices[block]
    shifted[:, idx] = np.clip(shifted[:, idx] + np.float32(ctx.params.get("shift", 0.3)), 0, 1)
    return [("i.i.d. sample", det.detect(cur)), (f"shift of {block}", det.detect(shifted))]


def _rendering() -> str:
    from kernels import monitoring

    return monitoring.render_alert_rules(monitoring.product_thresholds())


def shipped_rules_are_the_rendering(ctx: CheckContext) -> dict[str, Any]:
    """params: rules (the shipped rule file, relative to the project root).
    observations: shipped_matches_rendering; info: lines_differing, diff (the
    first 60 lines of a unified diff, shipped -> rendering)."""
    shipped = Path(ctx.root) / str(ctx.params.get("rules", "deploy/monitoring/alerts.yml"))
    rendered = _rendering()
    text = shipped.read_text() if shipped.is_file() else ""
    diff = list(
        difflib.unified_diff(
            text.splitlines(), rendered.splitlines(), str(shipped.name), "rendering", lineterm=""
        )
    )
    changed = [ln for ln in diff[2:] if ln[:1] in "+-"]
    if diff:
        ctx.attach("\n".join(diff).encode(), "alerts.shipped-vs-rendering.diff")
    return {
        "shipped_matches_rendering": shipped.is_file() and text == rendered,
        "info": {"lines_differing": len(changed), "diff": diff[:60]},
    }


def alert_rules_fire(ctx: CheckContext) -> dict[str, Any]:
    """params: tests (the shipped promtool unit tests, relative to the project root),
    shift and block (the detector's drifted case), n_ref, n_cur. The rules under test
    are the rendering, not the shipped file (INV-INFRA-007 holds them equal).
    observations: rules_check_exit, rules_loaded, test_groups, test_groups_failed,
    firing_tests_passed, quiet_tests_passed, alerts_not_shown_firing,
    alerts_not_shown_quiet, rule_metrics_not_exported, detector_cases,
    detector_cases_failed, detector_drift_alerts. info (recorded, never judged):
    promtool (its version), failed_groups, unexported_metrics, detector_flagged (the
    slices the detector flagged in each case; on the i.i.d. sample it flags some on
    about alpha of the seeds, by design, so that count cannot be judged eq 0: what is
    judged is that promtool raises exactly what the detector flagged)."""
    from kernels import monitoring

    promtool = shutil.which("promtool")
    if promtool is None:
        ctx.skip("needs promtool (Debian package prometheus; .ci/run installs it): not on PATH")
    tests_file = Path(ctx.root) / str(ctx.params.get("tests", "deploy/monitoring/alerts_test.yml"))
    rendered = _rendering()
    work = ctx.scratch / "monitoring"
    work.mkdir(parents=True, exist_ok=True)
    (work / "alerts.yml").write_text(rendered)
    ctx.attach(work / "alerts.yml", "alerts.rendered.yml")

    checked = _promtool([promtool, "check", "rules", "alerts.yml"], work)
    print(checked.stdout, checked.stderr)
    found = re.search(r"SUCCESS: (\d+) rules found", checked.stdout)
    rules = [
        r for g in (yaml.safe_load(rendered) or {}).get("groups", []) for r in g.get("rules", [])
    ]
    alert_names = {str(r["alert"]) for r in rules if "alert" in r}

    # the shipped unit tests, one promtool run per group, against the rendering
    spec = yaml.safe_load(tests_file.read_text())
    interval = spec.get("evaluation_interval", "1m")
    groups = list(spec.get("tests", []))
    failed: list[str] = []  # names of the shipped groups that failed
    firing = quiet = 0
    shown_firing: set[str] = set()
    shown_quiet: set[str] = set()
    log = []
    for i, group in enumerate(groups):
        ok, out = _run_group(promtool, work, group, i, interval)
        log.append(f"== {group.get('name', i)}: {'PASS' if ok else 'FAIL'}\n{out}")
        if not ok:
            failed.append(str(group.get("name", i)))
            continue
        for t in group.get("alert_rule_test", []):
            if t.get("exp_alerts"):
                firing += 1
                shown_firing.add(str(t["alertname"]))
            else:
                quiet += 1
                shown_quiet.add(str(t["alertname"]))

    # the product's detector, exported, must raise exactly the alerts it decided
    reports = _detector_reports(ctx)
    drift_rule = next((r for r in rules if r.get("alert") == "InputDrift"), None)
    det_failed = 0
    for j, (label, report) in enumerate(reports):
        if drift_rule is None:
            det_failed += 1
            continue
        group = drift_test_group(
            monitoring.drift_exposition(report), report.drifted, drift_rule, f"detector: {label}"
        )
        ok, out = _run_group(promtool, work, group, len(groups) + j, interval)
        log.append(f"== detector, {label} (flagged {report.drifted}): {'PASS' if ok else 'FAIL'}")
        log.append(out)
        det_failed += not ok

    # every metric a rule reads is one an exporter emits
    exported = {
        n
        for text in (
            monitoring.training_exposition([{"step": 1, "loss": 2.0}], 10, "run"),
            monitoring.latency_exposition([0.1, 0.2]),
            monitoring.drift_exposition(reports[0][1]),
        )
        for n, _, _ in exposition_samples(text)
    }
    referenced = {m for r in rules for m in _METRIC.findall(str(r.get("expr", "")))}
    unexported = sorted(referenced - exported)
    ctx.attach("\n".join(log).encode(), "promtool-tests.log")
    return {
        "rules_check_exit": checked.returncode,
        "rules_loaded": int(found.group(1)) if found else 0,
        "test_groups": len(groups),
        "test_groups_failed": len(failed),
        "firing_tests_passed": firing,
        "quiet_tests_passed": quiet,
        "alerts_not_shown_firing": len(alert_names - shown_firing),
        "alerts_not_shown_quiet": len(alert_names - shown_quiet),
        "rule_metrics_not_exported": len(unexported),
        "detector_cases": len(reports),
        "detector_cases_failed": det_failed,
        "detector_drift_alerts": len(reports[1][1].drifted),
        "info": {
            "promtool": " ".join(_promtool([promtool, "--version"], work).stdout.split()[:3]),
            "failed_groups": failed,
            "unexported_metrics": unexported,
            "detector_flagged": {label: list(r.drifted) for label, r in reports},
        },
    }
