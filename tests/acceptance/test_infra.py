"""contracts/infra.yaml: the alert renderer and exporters (kernels.monitoring), the
promtool check, the Kubernetes manifest check and the judges of the
infrastructure probes, on recorded tool output (tests/fixtures/infra/)."""

from __future__ import annotations

import difflib
import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import yaml

from acceptance import infra_k8s, infra_monitoring, infra_probes
from falsifiers.mutants import infra as mutants
from harness.context import CheckContext
from harness.errors import SkipCheck
from harness.judge import judge_observations
from harness.loader import load_contract
from harness.model import InvariantOutcome
from kernels import monitoring

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "infra"
CONTRACT = load_contract(ROOT / "contracts" / "infra.yaml")
INVARIANTS = {i.id: i for i in CONTRACT.invariants}
HAVE_PROMTOOL = shutil.which("promtool") is not None
HAVE_KV = importlib.util.find_spec("kubernetes_validate") is not None
needs_promtool = pytest.mark.skipif(not HAVE_PROMTOOL, reason="promtool not installed")
needs_kv = pytest.mark.skipif(not HAVE_KV, reason="kubernetes-validate not installed")


def ctx(tmp_path: Path, **params) -> CheckContext:
    return CheckContext(params, 7, tmp_path / "s", tmp_path / "a", "INV", root=ROOT)


def judged(inv_id: str, observations: dict) -> InvariantOutcome:
    return judge_observations(INVARIANTS[inv_id].expect, observations)[0]


# ------------------------------------------------------------- renderer
def test_shipped_rules_equal_the_rendering_of_the_product_thresholds(tmp_path):
    shipped = (ROOT / "deploy" / "monitoring" / "alerts.yml").read_text()
    assert shipped == monitoring.render_alert_rules(monitoring.product_thresholds()), (
        "re-render: .venv/bin/python -c 'from kernels.monitoring import *; "
        'print(render_alert_rules(product_thresholds()), end="")\' > deploy/monitoring/alerts.yml'
    )
    obs = infra_monitoring.shipped_rules_are_the_rendering(
        ctx(tmp_path, **INVARIANTS["INV-INFRA-007"].check.params)
    )
    assert judged("INV-INFRA-007", obs) is InvariantOutcome.PASS, obs


def test_a_hand_tuned_alerts_file_is_one_line_off_and_fails_the_equality_check(tmp_path):
    fixture = "tests/fixtures/infra/monitoring/alerts-psi-hand-tuned.yml"
    original = (ROOT / "deploy" / "monitoring" / "alerts.yml").read_text().splitlines()
    broken = (ROOT / fixture).read_text().splitlines()
    changed = [
        ln for ln in difflib.unified_diff(original, broken, lineterm="", n=0)
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]  # fmt: skip
    assert changed == [
        "-          (harness_drift_psi > 0.1)",
        "+          (harness_drift_psi > 0.2)",
    ]
    (falsifier,) = [f for f in CONTRACT.falsifiers if f.target == "INV-INFRA-007"]
    assert falsifier.spec["params"]["rules"] == fixture
    obs = infra_monitoring.shipped_rules_are_the_rendering(ctx(tmp_path, rules=fixture))
    assert obs["info"]["lines_differing"] == 2
    assert judged("INV-INFRA-007", obs) is InvariantOutcome.FAIL
    missing = infra_monitoring.shipped_rules_are_the_rendering(ctx(tmp_path, rules="no.yml"))
    assert judged("INV-INFRA-007", missing) is InvariantOutcome.FAIL


def test_product_thresholds_are_the_drift_detectors_defaults():
    from kernels.data.drift import DriftDetector, digit_block_slices

    t = monitoring.product_thresholds()
    det = DriftDetector(__import__("numpy").random.default_rng(0).random((50, 64)))
    assert (t.drift_alpha, t.drift_psi_threshold) == (det.alpha, det.psi_threshold)
    assert t.drift_slices == len(digit_block_slices()) == len(det.names)


def test_the_rule_critical_value_is_the_detectors():
    from kernels.data.drift import ks_critical

    for n, m, k in [(1257, 270, 16), (100, 100, 4), (5000, 30, 1)]:
        rule = monitoring.ks_coefficient(0.01, k) * math.sqrt((n + m) / (n * m))
        assert rule == pytest.approx(ks_critical(n, m, 0.01 / k), rel=1e-15)
    assert mutants.ks_coefficient_unadjusted(0.01, 16) < monitoring.ks_coefficient(0.01, 16)


def test_rendering_has_the_four_alerts_with_thresholds():
    t = monitoring.AlertThresholds(drift_alpha=0.05, drift_slices=4, serving_p95_slo_ms=250)
    doc = yaml.safe_load(monitoring.render_alert_rules(t))
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert set(rules) == {
        "TrainingLossNotFinite",
        "TrainingStalled",
        "ServingLatencyP95High",
        "InputDrift",
    }
    assert repr(monitoring.ks_coefficient(0.05, 4)) in rules["InputDrift"]["expr"]
    assert rules["ServingLatencyP95High"]["expr"].rstrip().endswith("> 0.25")
    assert all(r["labels"]["severity"] in ("page", "warning") for r in rules.values())


# ------------------------------------------------------------- exporters
def test_exporters_emit_what_the_rules_read():
    samples = infra_monitoring.exposition_samples(
        monitoring.training_exposition(
            [{"step": 0, "val_loss": 3.0}, {"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}],
            100,
            "r1",
        )
    )
    assert ("harness_train_loss", {"run": "r1"}, "2.25") in samples
    assert ("harness_train_step", {"run": "r1"}, "2.0") in samples
    nan = monitoring.training_exposition([{"step": 3, "loss": float("nan")}], 9, "r")
    assert 'harness_train_loss{run="r"} NaN' in nan

    lat = infra_monitoring.exposition_samples(monitoring.latency_exposition([0.02, 0.3, 0.3, 7.0]))
    buckets = {lab["le"]: float(v) for n, lab, v in lat if n.endswith("_bucket")}
    assert buckets["0.05"] == 1 and buckets["0.5"] == 3 and buckets["5.0"] == 3
    assert buckets["+Inf"] == 4
    assert ("harness_serving_request_duration_seconds_count", {}, "4.0") in lat


def test_monitoring_checks_judge_every_observation_they_do_not_file_under_info(tmp_path):
    """What a check computes is either judged by the contract or filed under ``info``
    (evidence, never judged): no count that looks judged and is not."""
    obs = infra_monitoring.shipped_rules_are_the_rendering(ctx(tmp_path))
    judged_names = {e.observation for e in INVARIANTS["INV-INFRA-007"].expect}
    assert set(obs) - {"info"} == judged_names
    if HAVE_PROMTOOL:
        obs = infra_monitoring.alert_rules_fire(ctx(tmp_path / "p"))
        judged_names = {e.observation for e in INVARIANTS["INV-INFRA-005"].expect}
        assert set(obs) - {"info"} == judged_names
        assert set(obs["info"]["detector_flagged"]) == {
            "i.i.d. sample",
            "shift of pixels rows 2-3 cols 2-3",
        }


def test_the_detector_cases_use_only_public_helpers():
    """acceptance/data_pipeline.py's helpers are private to it: this check samples
    the digits itself, over public kernels.data functions."""
    import ast

    tree = ast.parse(Path(infra_monitoring.__file__).read_text())
    imported = [
        (node.module, a.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    ]
    assert not [m for m, _ in imported if m and m.startswith("acceptance.")], imported
    assert not [(m, n) for m, n in imported if n.startswith("_")], imported


def test_drift_exposition_round_trips_a_detector_report():
    import types

    rep = infra_monitoring._detector_reports(types.SimpleNamespace(params={}, seed=3))[1][1]
    samples = infra_monitoring.exposition_samples(monitoring.drift_exposition(rep))
    ks = {lab["slice"]: float(v) for n, lab, v in samples if n == monitoring.DRIFT_KS}
    assert ks == {s.name: s.ks for s in rep.slices}  # exact: repr round-trips a float
    assert (monitoring.DRIFT_N_REFERENCE, {}, f"{float(rep.n_reference)!r}") in samples
    assert rep.drifted, "the shifted case must drift"


# ------------------------------------------------------------- promtool
@needs_promtool
def test_alert_rules_check_passes_its_contract(tmp_path):
    obs = infra_monitoring.alert_rules_fire(
        ctx(tmp_path, **INVARIANTS["INV-INFRA-005"].check.params)
    )
    assert judged("INV-INFRA-005", obs) is InvariantOutcome.PASS, obs
    assert obs["rules_loaded"] == 4 and obs["test_groups_failed"] == 0


BONFERRONI_BOUNDARY = (
    "drift: KS between the unadjusted and the Bonferroni critical value stays quiet"
)
SERVING_FIRES = "serving: p95 between 0.5 s and 1 s for 20 minutes fires"


@needs_promtool
@pytest.mark.parametrize(
    ("target", "mutant", "reds", "failed_groups"),
    [
        (
            "ks_coefficient",
            mutants.ks_coefficient_unadjusted,
            {"test_groups_failed"},
            [BONFERRONI_BOUNDARY],
        ),
        (
            "_serving_rules",
            mutants.serving_rules_slo_in_ms,
            # its only firing group failed, so the alert is no longer shown firing either
            {"test_groups_failed", "firing_tests_passed", "alerts_not_shown_firing"},
            [SERVING_FIRES],
        ),
        (
            "drift_exposition",
            mutants.drift_exposition_renamed,
            {"detector_cases_failed", "rule_metrics_not_exported"},
            [],
        ),
    ],
)
def test_monitoring_mutants_fail_in_promtool(
    tmp_path, monkeypatch, target, mutant, reds, failed_groups
):
    """Each mutant turns INV-INFRA-005 red through promtool alone, and exactly the
    observations (and shipped test groups) it should; the shipped file is not read."""
    monkeypatch.setattr(monitoring, target, mutant)
    obs = infra_monitoring.alert_rules_fire(
        ctx(tmp_path, **INVARIANTS["INV-INFRA-005"].check.params)
    )
    outcome, judgements, _ = judge_observations(INVARIANTS["INV-INFRA-005"].expect, obs)
    assert outcome is InvariantOutcome.FAIL
    assert {j.observation for j in judgements if not j.ok} == reds, obs
    assert obs["info"]["failed_groups"] == failed_groups


@needs_promtool
def test_the_bonferroni_mutant_is_killed_by_the_boundary_test_and_nothing_else(
    tmp_path, monkeypatch
):
    """Were alerts_test.yml to stop covering the band between the unadjusted and the
    Bonferroni critical value (its KS 0.12 moved to 0.05, same number of groups), the
    mutant would survive: that promtool test, nothing else, is what kills it."""
    spec = yaml.safe_load((ROOT / "deploy" / "monitoring" / "alerts_test.yml").read_text())
    (group,) = [g for g in spec["tests"] if g["name"] == BONFERRONI_BOUNDARY]
    (ks,) = [s for s in group["input_series"] if s["series"].startswith(monitoring.DRIFT_KS)]
    assert ks["values"] == "0.12x20"
    ks["values"] = "0.05x20"
    weaker = tmp_path / "alerts_test_off_the_boundary.yml"
    weaker.write_text(yaml.safe_dump(spec, sort_keys=False))
    params = {**INVARIANTS["INV-INFRA-005"].check.params, "tests": str(weaker)}
    monkeypatch.setattr(monitoring, "ks_coefficient", mutants.ks_coefficient_unadjusted)
    obs = infra_monitoring.alert_rules_fire(ctx(tmp_path, **params))
    assert judged("INV-INFRA-005", obs) is InvariantOutcome.PASS, obs


@needs_promtool
def test_the_promtool_check_tests_the_rendering_not_the_shipped_file(tmp_path, monkeypatch):
    """promtool runs on what the (here mutated) renderer produces; the shipped file
    is INV-INFRA-007's alone, and INV-INFRA-005 takes no ``rules`` param."""
    assert "rules" not in INVARIANTS["INV-INFRA-005"].check.params
    monkeypatch.setattr(monitoring, "_serving_rules", mutants.serving_rules_slo_in_ms)
    rendered = monitoring.render_alert_rules(monitoring.product_thresholds())
    assert "> 500.0" in rendered
    infra_monitoring.alert_rules_fire(ctx(tmp_path, rules="no/such/file.yml"))
    assert (tmp_path / "a" / "alerts.rendered.yml").read_text() == rendered


def test_monitoring_check_skips_without_promtool(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SkipCheck, match="promtool"):
        infra_monitoring.alert_rules_fire(ctx(tmp_path))


# ------------------------------------------------------------- kubernetes
@needs_kv
def test_shipped_manifests_validate(tmp_path):
    obs = infra_k8s.manifests_validate(ctx(tmp_path, **INVARIANTS["INV-INFRA-006"].check.params))
    assert judged("INV-INFRA-006", obs) is InvariantOutcome.PASS, obs
    assert obs["valid"] == obs["resources"] == 3
    assert "batch/v1 CronJob" in obs["kinds"] and "batch/v1 Job" in obs["kinds"]


MISTAKES = {
    "nightly-cronjob-v1beta1.yaml": ("nightly-cronjob.yaml", "unknown_kinds"),
    "readiness-job-memory-bare-number.yaml": ("readiness-job.yaml", "memory_without_unit"),
    "readiness-job-env-number.yaml": ("readiness-job.yaml", "schema_errors"),
}


@pytest.mark.parametrize("fixture", sorted(MISTAKES))
def test_each_manifest_mistake_is_one_line_of_a_shipped_manifest(fixture):
    original = (ROOT / "deploy" / "k8s" / MISTAKES[fixture][0]).read_text().splitlines()
    broken = (FIX / "k8s" / fixture).read_text().splitlines()
    changed = [
        ln for ln in difflib.unified_diff(original, broken, lineterm="", n=0)
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]  # fmt: skip
    assert len(changed) == 2, changed


@needs_kv
@pytest.mark.parametrize("fixture", sorted(MISTAKES))
def test_manifest_mistakes_fail_validation(tmp_path, fixture):
    others = [p for p in ("evidence-pvc.yaml", "readiness-job.yaml", "nightly-cronjob.yaml")
              if p != MISTAKES[fixture][0]]  # fmt: skip
    paths = [f"deploy/k8s/{p}" for p in others] + [f"tests/fixtures/infra/k8s/{fixture}"]
    obs = infra_k8s.manifests_validate(ctx(tmp_path, paths=paths, kubernetes_version="1.30"))
    _, judgements, _ = judge_observations(INVARIANTS["INV-INFRA-006"].expect, obs)
    assert {j.observation for j in judgements if not j.ok} == {MISTAKES[fixture][1]}


def test_resource_problems_reads_every_container():
    pod = {
        "spec": {
            "initContainers": [{"name": "init", "resources": {"limits": {"memory": "64Mi"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"memory": 512}}},
                {"name": "b", "resources": {"limits": {"memory": "1gi"}}},
            ],
        }
    }
    got = infra_k8s.resource_problems(pod)
    assert len(got["memory_without_unit"]) == 2 and got["no_memory_limit"] == ["a"]


# ------------------------------------------------------------- probes: canary
def _canary(name: str) -> dict:
    import json

    d = FIX / "canary" / name
    return infra_probes.judge_canary_rollback(
        json.loads((d / "rollout.json").read_text()),
        json.loads((d / "replicasets.json").read_text()),
    )


def test_an_aborted_canary_with_the_previous_revision_serving_passes():
    obs = _canary("rolled-back")
    assert obs["aborted"] and obs["previous_revision_ready"] and not obs["regression_promoted"]
    assert obs["canary_ready_pods"] == 0 and obs["canary_traffic_percent"] == 0
    assert judged("INV-INFRA-001", obs) is InvariantOutcome.PASS


def test_a_stalled_canary_is_not_a_rollback():
    obs = _canary("stalled")
    assert not obs["aborted"] and obs["canary_ready_pods"] == 1
    assert obs["canary_traffic_percent"] == 25.0
    assert judged("INV-INFRA-001", obs) is InvariantOutcome.FAIL


def test_a_promoted_regression_is_not_a_rollback():
    import json

    d = FIX / "canary" / "rolled-back"
    rollout = json.loads((d / "rollout.json").read_text())
    rs = json.loads((d / "replicasets.json").read_text())
    rollout["status"].update(abort=False, phase="Healthy", stableRS="7d9c5b8f6c")
    for item in rs["items"]:  # the new revision took over, the old one scaled down
        new = item["metadata"]["labels"]["rollouts-pod-template-hash"] == "7d9c5b8f6c"
        item["status"]["readyReplicas"] = 4 if new else 0
    obs = infra_probes.judge_canary_rollback(rollout, rs)
    assert obs["regression_promoted"] and judged("INV-INFRA-001", obs) is InvariantOutcome.FAIL


def test_canary_weight_from_traffic_routing_wins():
    import json

    d = FIX / "canary" / "rolled-back"
    rollout = json.loads((d / "rollout.json").read_text())
    rollout["status"]["canary"]["weights"] = {
        "canary": {"podTemplateHash": "7d9c5b8f6c", "weight": 10},
        "stable": {"podTemplateHash": "5f4d8c7b9d", "weight": 90},
    }
    obs = infra_probes.judge_canary_rollback(
        rollout, json.loads((d / "replicasets.json").read_text())
    )
    assert obs["canary_traffic_percent"] == 10.0


# ------------------------------------------------------------- probes: GPU accounting
def test_gpu_seconds_of_a_preempted_and_resumed_job():
    obs = infra_probes.judge_gpu_accounting(
        (FIX / "slurm" / "gpu-preempted-resumed" / "sacct.txt").read_text(), "gpu"
    )
    assert obs["gpu_seconds"] == 16 * (1843 + 5417)
    assert obs["preemptions"] == 1 and obs["completed"] and obs["max_nodes"] == 2
    assert judged("INV-INFRA-002", obs) is InvariantOutcome.PASS


def test_a_job_that_fell_back_to_cpu_fails():
    obs = infra_probes.judge_gpu_accounting(
        (FIX / "slurm" / "cpu-fallback" / "sacct.txt").read_text(), "gpu"
    )
    assert obs["gpu_seconds"] == 0 and obs["allocations_without_gpus"] == 2
    assert judged("INV-INFRA-002", obs) is InvariantOutcome.FAIL


def test_gpu_accounting_typed_gres_and_wrong_pool():
    text = (
        "JobIDRaw|JobName|Partition|State|NNodes|ElapsedRaw|AllocTRES\n"
        "7|j|spot-gpu|PREEMPTED|2|100|cpu=8,gres/gpu:a100=4,gres/gpu:h100=4,node=2\n"
        "7|j|gpu|CANCELLED by 1000|2|50|cpu=8,gres/gpu=8,node=2\n"
    )
    obs = infra_probes.judge_gpu_accounting(text, "gpu")
    assert obs["gpu_seconds"] == 8 * 100 + 8 * 50
    assert not obs["on_requested_pool"] and not obs["completed"]
    with pytest.raises(ValueError, match="lacks the fields"):
        infra_probes.judge_gpu_accounting("JobID|State\n7|COMPLETED\n", "gpu")


# ------------------------------------------------------------- probes: terraform
def _tf(name: str) -> dict:
    d = FIX / "terraform" / name
    return infra_probes.judge_terraform_plan(
        int((d / "init.exit").read_text()),
        (d / "validate.json").read_text(),
        (d / "plan.jsonl").read_text(),
        int((d / "plan.exit").read_text()),
    )


def test_terraform_judge_on_recorded_output():
    clean, broken = _tf("clean"), _tf("undeclared-variable")
    assert clean["planned"] and clean["valid"] and clean["plan_exit_code"] == 2
    assert judged("INV-INFRA-004", clean) is InvariantOutcome.PASS
    assert broken["plan_errors"] == 1 and broken["validate_errors"] == 1
    assert judged("INV-INFRA-004", broken) is InvariantOutcome.FAIL


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed")
@pytest.mark.parametrize("name", ["clean", "undeclared-variable"])
def test_terraform_probe_runs_terraform_in_the_env_dir(tmp_path, monkeypatch, name):
    module = tmp_path / name
    module.mkdir()
    shutil.copy(FIX / "terraform" / name / "main.tf", module / "main.tf")
    monkeypatch.setenv("HARNESS_TERRAFORM_DIR", str(module))
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("CHECKPOINT_DISABLE", "1")
    obs = infra_probes.terraform_plan_probe(ctx(tmp_path))
    recorded = _tf(name)
    assert {k: obs[k] for k in recorded} == recorded


@pytest.mark.parametrize(
    ("probe", "variable"),
    [
        (infra_probes.canary_rollback_probe, "HARNESS_STAGING_CONTEXT"),
        (infra_probes.gpu_accounting_probe, "HARNESS_SLURM_JOB_ID"),
        (infra_probes.terraform_plan_probe, "HARNESS_TERRAFORM_DIR"),
    ],
)
def test_probes_skip_naming_their_variable(tmp_path, monkeypatch, probe, variable):
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SkipCheck, match=variable.replace("$", r"\$")):
        probe(ctx(tmp_path))


def _fake_tool(tmp_path: Path, name: str, body: str) -> Path:
    """A stand-in for a cluster tool on PATH (the tool is external, not our code):
    it logs its argv and prints recorded output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/{name}.log"\n{body}\n')
    tool.chmod(0o755)
    return bin_dir


def test_canary_probe_asks_kubectl_in_the_env_context(tmp_path, monkeypatch):
    d = FIX / "canary" / "rolled-back"
    body = (
        'case "$*" in\n'
        f'  *rollouts.argoproj.io/model-canary*) cat "{d}/rollout.json";;\n'
        f'  *" get replicasets "*) cat "{d}/replicasets.json";;\n'
        "  *) exit 3;;\nesac"
    )
    bin_dir = _fake_tool(tmp_path, "kubectl", body)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HARNESS_STAGING_CONTEXT", "staging-eu1")
    params = dict(INVARIANTS["INV-INFRA-001"].check.params)
    obs = infra_probes.canary_rollback_probe(ctx(tmp_path, **params))
    assert judged("INV-INFRA-001", obs) is InvariantOutcome.PASS, obs
    calls = (tmp_path / "kubectl.log").read_text().splitlines()
    assert all(c.startswith("--context staging-eu1 --namespace staging get ") for c in calls)


def test_gpu_probe_reads_the_env_job_from_sacct(tmp_path, monkeypatch):
    d = FIX / "slurm" / "gpu-preempted-resumed"
    bin_dir = _fake_tool(tmp_path, "sacct", f'cat "{d}/sacct.txt"')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HARNESS_SLURM_JOB_ID", "48213")
    monkeypatch.delenv("HARNESS_GPU_PARTITION", raising=False)
    obs = infra_probes.gpu_accounting_probe(ctx(tmp_path, partition=None))
    assert judged("INV-INFRA-002", obs) is InvariantOutcome.PASS, obs
    call = (tmp_path / "sacct.log").read_text().split()
    assert call[:2] == ["--jobs", "48213"] and "--duplicates" in call and "--allocations" in call


# ------------------------------------------------------------- probes: recorded output
def _probe_ctx(tmp_path: Path, inv_id: str, **params) -> CheckContext:
    merged = {**INVARIANTS[inv_id].check.params, **params}
    return CheckContext(merged, 7, tmp_path / "s", tmp_path / "a", inv_id, root=ROOT)


@pytest.mark.parametrize(
    ("probe", "inv_id"),
    [
        (infra_probes.canary_rollback_probe, "INV-INFRA-001"),
        (infra_probes.gpu_accounting_probe, "INV-INFRA-002"),
        (infra_probes.terraform_plan_probe, "INV-INFRA-004"),
    ],
)
def test_probes_judge_the_recording_their_falsifier_feeds(tmp_path, probe, inv_id):
    (falsifier,) = [f for f in CONTRACT.falsifiers if f.target == inv_id]
    obs = probe(_probe_ctx(tmp_path, inv_id, **falsifier.spec["params"]))
    assert judged(inv_id, obs) is InvariantOutcome.FAIL


@pytest.mark.parametrize(
    ("probe", "inv_id", "recording"),
    [
        (infra_probes.canary_rollback_probe, "INV-INFRA-001", "canary/rolled-back"),
        (infra_probes.gpu_accounting_probe, "INV-INFRA-002", "slurm/gpu-preempted-resumed"),
        (infra_probes.terraform_plan_probe, "INV-INFRA-004", "terraform/clean"),
    ],
)
def test_a_passing_recording_no_falsifier_feeds_is_refused(tmp_path, probe, inv_id, recording):
    """The recordings that would PASS (tests feed them to the judges) cannot stand in
    for the tool: the probe raises (an ERROR), it neither skips nor judges them."""
    rec = f"tests/fixtures/infra/{recording}"
    with pytest.raises(PermissionError, match="no mutant falsifier of " + inv_id):
        probe(_probe_ctx(tmp_path, inv_id, recorded=rec))
    # nor in another invariant's check, whose falsifier feeds something else
    with pytest.raises(PermissionError, match="not in the project's contracts"):
        probe(CheckContext({"recorded": rec}, 7, tmp_path / "s", tmp_path / "a", "INV", root=ROOT))


def test_recorded_in_an_invariants_own_params_is_refused(tmp_path):
    """Even the very recording its falsifier feeds is refused when the invariant's own
    check params name ``recorded`` (the run would otherwise judge a file, not a cluster)."""
    data = yaml.safe_load((ROOT / "contracts" / "infra.yaml").read_text())
    (inv,) = [i for i in data["invariants"] if i["id"] == "INV-INFRA-001"]
    fed = "tests/fixtures/infra/canary/stalled"
    inv["check"]["params"]["recorded"] = fed
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "infra.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "pyproject.toml").write_text('[tool.harness]\ncontracts = ["contracts"]\n')
    why = infra_probes.recorded_refusal(tmp_path, "INV-INFRA-001", fed)
    assert why and "own check params name it" in why
    assert infra_probes.recorded_refusal(ROOT, "INV-INFRA-001", fed) is None
