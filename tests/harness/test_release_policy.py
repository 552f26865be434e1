"""The release policy and sign-offs (issue 14): each refusal tried as the attack it
prevents, and the promotion that satisfies the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.errors import UsageError
from harness.loader import load_contract_set
from harness.policy import load_policy, signoff_path, write_signoff
from harness.replay import PromotionRefused, promote
from harness.runner import run_contracts
from harness.signing import generate_keypair, load_signer

from .conftest import simple_contract

POLICY = """version: 1
roles:
  security-engineer: keys/security-engineer.pub
  ml-lead: keys/ml-lead.pub
targets:
  production:
    signoffs: {roles: [security-engineer, ml-lead], k: 2}
    candidate: [model]
  staging:
    signoffs: {roles: [ml-lead]}
    candidate: [model]
"""


def safetensors_with(purpose: str) -> bytes:
    header = json.dumps({"__metadata__": {"purpose": purpose}}).encode()
    return len(header).to_bytes(8, "little") + header


@pytest.fixture
def release(project, tmp_path_factory):
    """A committed project with a policy, the roles' public keys, a candidate model and
    a signed full run of it; the private keys live outside the project."""
    return make_release(project, tmp_path_factory, POLICY)


def make_release(project, tmp_path_factory, policy: str):
    secrets = tmp_path_factory.mktemp("secrets")
    keys = {}
    for role in ("security-engineer", "ml-lead", "run", "intruder"):
        priv, pub = generate_keypair(secrets / f"{role}.key")
        keys[role] = priv
        if role in ("security-engineer", "ml-lead"):
            (project.root / "keys").mkdir(exist_ok=True)
            (project.root / "keys" / f"{role}.pub").write_bytes(pub.read_bytes())
    keys["run.pub"] = secrets / "run.key.pub"
    (project.root / "release-policy.yaml").write_text(policy)
    project.commit("ignores")  # a git repo whose .gitignore the lifecycle log joins
    with (project.root / ".gitignore").open("a") as fh:
        fh.write("audit/\n")
    (project.root / "model").mkdir()
    (project.root / "model" / "model.safetensors").write_bytes(safetensors_with("ship"))
    project.contract("a", simple_contract())
    project.commit()
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=1,
        seed=2,
        root=project.root,
        evidence_root=project.root / "evidence",
        signer=load_signer(keys["run"]),
    )
    return project, keys, Path(result.evidence_dir)


def _promote(project, keys, run_dir, target="production"):
    policy = load_policy(project.root / "release-policy.yaml", project.root)
    return promote(
        run_dir, target, [keys["run.pub"]], load_signer(keys["run"]),
        project.root / "evidence" / "promotions.jsonl", "rm", project.root, None, policy,
    )  # fmt: skip


def _signoff(project, run_dir, role, key, target="production"):
    policy = load_policy(project.root / "release-policy.yaml", project.root)
    from harness.policy import candidate_digests

    digests = candidate_digests(policy, policy.target(target))
    return write_signoff(run_dir, role, target, digests, load_signer(key))


def test_promotion_needs_every_required_signoff_by_the_roles_committed_key(release):
    project, keys, run_dir = release
    with pytest.raises(PromotionRefused, match=r"sign-offs: 0 of 2 required"):
        _promote(project, keys, run_dir)
    _signoff(project, run_dir, "ml-lead", keys["ml-lead"])
    with pytest.raises(PromotionRefused, match=r"1 of 2 .*security-engineer: no sign-off"):
        _promote(project, keys, run_dir)
    # the wrong key: ml-lead signs a statement that says security-engineer
    _signoff(project, run_dir, "security-engineer", keys["ml-lead"])
    with pytest.raises(PromotionRefused, match="security-engineer: not signed by the role's key"):
        _promote(project, keys, run_dir)
    # a key on no one's file
    _signoff(project, run_dir, "security-engineer", keys["intruder"])
    with pytest.raises(PromotionRefused, match="security-engineer: not signed by the role's key"):
        _promote(project, keys, run_dir)
    # the right key, but the statement moved from another role's file (wrong role)
    path = signoff_path(run_dir, "security-engineer", "production")
    path.write_bytes(signoff_path(run_dir, "ml-lead", "production").read_bytes())
    with pytest.raises(PromotionRefused, match="security-engineer: not signed by the role's key"):
        _promote(project, keys, run_dir)
    # the role's own key over a statement that names the other role
    wrong_role = _signoff(project, run_dir, "ml-lead", keys["security-engineer"])
    path.write_bytes(wrong_role.read_bytes())
    _signoff(project, run_dir, "ml-lead", keys["ml-lead"])
    with pytest.raises(
        PromotionRefused, match="security-engineer: the signed statement differs in role"
    ):
        _promote(project, keys, run_dir)
    _signoff(project, run_dir, "security-engineer", keys["security-engineer"])
    record = _promote(project, keys, run_dir)
    assert record["signoffs"] == ["security-engineer", "ml-lead"]
    assert set(record["candidate"]) == {"model"} and len(record["candidate"]["model"]) == 64


def test_a_signoff_of_another_candidate_does_not_count(release):
    project, keys, run_dir = release
    for role in ("security-engineer", "ml-lead"):
        _signoff(project, run_dir, role, keys[role])
    (project.root / "model" / "model.safetensors").write_bytes(safetensors_with("ship") + b" ")
    with pytest.raises(PromotionRefused) as exc:
        _promote(project, keys, run_dir)
    assert "the signed statement differs in candidate" in " ".join(exc.value.reasons)


def test_a_signoff_of_another_target_does_not_count(release):
    project, keys, run_dir = release
    staging = _signoff(project, run_dir, "ml-lead", keys["ml-lead"], target="staging")
    _signoff(project, run_dir, "security-engineer", keys["security-engineer"])
    with pytest.raises(PromotionRefused, match="ml-lead: no sign-off"):
        _promote(project, keys, run_dir)
    # the staging statement copied to where production's would be
    production = signoff_path(run_dir, "ml-lead", "production")
    production.write_bytes(staging.read_bytes())
    with pytest.raises(PromotionRefused, match="ml-lead: the signed statement differs in target"):
        _promote(project, keys, run_dir)


def test_an_ablation_checkpoint_is_never_the_candidate(release):
    project, keys, run_dir = release
    (project.root / "model" / "model.safetensors").write_bytes(safetensors_with("ablation"))
    with pytest.raises(PromotionRefused, match=r"not stamped purpose: ship: model \(ablation\)"):
        _promote(project, keys, run_dir)


def test_signoff_command_refuses_a_key_that_is_not_the_roles(release):
    project, keys, run_dir = release
    runner = CliRunner()
    base = ["signoff", str(run_dir), "--allowed-key", str(keys["run.pub"])]
    r = runner.invoke(cli, [*base, "--role", "ml-lead", "--key", str(keys["intruder"])])
    assert r.exit_code == 4 and "not the key" in r.output and "commits for ml-lead" in r.output
    r = runner.invoke(cli, [*base, "--role", "cfo", "--key", str(keys["ml-lead"])])
    assert r.exit_code == 4 and "no role 'cfo'" in r.output
    r = runner.invoke(cli, [*base, "--role", "ml-lead", "--key", str(keys["ml-lead"])])
    assert r.exit_code == 0, r.output
    assert signoff_path(run_dir, "ml-lead", "production").is_file()
    r = runner.invoke(
        cli,
        ["promote", str(run_dir), "--to", "production", "--allowed-key", str(keys["run.pub"]),
         "--sign-key", str(keys["run"])],
    )  # fmt: skip
    assert r.exit_code == 1
    assert "PASS  candidate" in r.output and "FAIL  sign-offs: 1 of 2 required" in r.output


@pytest.mark.parametrize(
    "edit, message",
    [
        (("k: 2}", "k: 3}"), "targets.production: k is 3 but only 2 roles may sign"),
        (("roles: [ml-lead]}", "roles: [cfo]}"), "targets.staging: role 'cfo' is not under"),
        (
            ("    candidate: [model]\n", "    candidate: [model]\n    owner: me\n"),
            "targets.production: Additional properties are not allowed ('owner'",
        ),
        (("ml-lead: keys/ml-lead.pub", "ml-lead: keys/gone.pub"), "roles.ml-lead: public key"),
    ],
)
def test_a_malformed_policy_is_one_line_naming_the_file_and_line(release, edit, message):
    project, _, _ = release
    path = project.root / "release-policy.yaml"
    path.write_text(POLICY.replace(*edit))
    with pytest.raises(UsageError) as exc:
        load_policy(path, project.root)
    text = str(exc.value)
    assert text.startswith(f"{path}:") and message in text and "\n" not in text, text
    assert text.split(":")[1].isdigit()  # the line


def test_lint_reports_a_broken_policy_with_the_contracts(release):
    project, _, _ = release
    r = CliRunner().invoke(cli, ["lint"])
    assert r.exit_code == 0, r.output
    (project.root / "release-policy.yaml").write_text(POLICY.replace("k: 2}", "k: 5}"))
    r = CliRunner().invoke(cli, ["lint"])
    assert r.exit_code == 4 and "k is 5 but only 2 roles may sign" in r.output
    assert "1 errors" in r.output


def test_lint_reports_a_policy_criterion_no_contract_defines_at_its_line(release):
    project, _, _ = release
    policy = POLICY.replace(
        "    candidate: [model]\n  staging:",
        "    candidate: [model]\n    criteria: [AC-DEMO-001, AC-NOPE-001]\n  staging:",
    )
    (project.root / "release-policy.yaml").write_text(policy)
    line = policy.splitlines().index("    criteria: [AC-DEMO-001, AC-NOPE-001]") + 1
    col = policy.splitlines()[line - 1].index("AC-NOPE-001") + 1
    r = CliRunner().invoke(cli, ["lint"])
    assert r.exit_code == 4, r.output
    assert f"release-policy.yaml:{line}:{col}: error: " in r.output
    assert "AC-NOPE-001" in r.output and "no contract defines" in r.output
    assert "AC-DEMO-001 " not in r.output and "1 errors" in r.output
    # linting one file still knows every criterion of the project's contracts
    project.contract("b", simple_contract(cid="AC-TWO-001", inv="INV-TWO-001"))
    (project.root / "release-policy.yaml").write_text(policy.replace("AC-NOPE", "AC-TWO"))
    r = CliRunner().invoke(cli, ["lint", "contracts/a.yaml"])
    assert r.exit_code == 0 and "0 errors" in r.output, r.output


def test_promote_records_in_the_committed_registry_and_promotions_lists_it(release):
    project, keys, run_dir = release
    runner = CliRunner()
    for role in ("security-engineer", "ml-lead"):
        r = runner.invoke(
            cli,
            ["signoff", str(run_dir), "--role", role, "--key", str(keys[role]),
             "--allowed-key", str(keys["run.pub"])],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["promotions"])
    assert r.exit_code == 0 and "no promotions yet" in r.output
    r = runner.invoke(
        cli,
        ["promote", str(run_dir), "--to", "production", "--allowed-key", str(keys["run.pub"]),
         "--sign-key", str(keys["run"]), "--as", "R. Manager"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    registry = project.root / "release" / "promotions.jsonl"
    assert registry.is_file() and "release/promotions.jsonl" in r.output
    r = runner.invoke(cli, ["promotions", "--key", str(keys["run.pub"])])
    assert r.exit_code == 0, r.output
    assert "production" in r.output and "sign-offs: security-engineer, ml-lead" in r.output
    assert "(R. Manager)" in r.output and "candidate: 1 artifact(s)" in r.output
    # an edited registry line is a problem, and the command says so
    registry.write_text(registry.read_text().replace("R. Manager", "Someone Else"))
    r = runner.invoke(cli, ["promotions", "--key", str(keys["run.pub"])])
    assert r.exit_code == 1 and "problem:" in r.output
    # a line whose record is no object is not listed (it crashed the listing): a problem
    with registry.open("a") as fh:
        fh.write('{"record": ["not", "a", "record"]}\n')
    r = runner.invoke(cli, ["promotions", "--key", str(keys["run.pub"])])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "problem:" in r.output


def test_promote_judges_the_rules_once_and_prints_them_even_without_a_key(release, monkeypatch):
    """What `harness promote` prints is what it decided on: the rules are evaluated once
    (they read and hash the candidate; a second pass could see other bytes); without a
    --sign-key it still prints them, then refuses."""
    import harness.replay as replay

    project, keys, run_dir = release
    calls = []
    real = replay.promotion_rules
    monkeypatch.setattr(replay, "promotion_rules", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.delenv("HARNESS_SIGN_KEY", raising=False)
    runner = CliRunner()
    base = ["promote", str(run_dir), "--to", "production", "--allowed-key", str(keys["run.pub"])]
    r = runner.invoke(cli, base)
    assert r.exit_code == 1 and calls == [1], r.output
    assert "PASS  signature: " in r.output  # the rules, judged, before the refusal
    assert r.output.index("PASS  signature: ") < r.output.index("must be signed")
    r = runner.invoke(cli, [*base, "--sign-key", str(keys["run"])])
    assert r.exit_code == 1 and calls == [1, 1], r.output  # no sign-offs yet: refused
    assert "FAIL" in r.output and "promotion REFUSED" in r.output


def test_without_a_policy_the_command_line_never_promotes(two_key_project_run):
    project, keys, run_dir = two_key_project_run
    r = CliRunner().invoke(
        cli,
        ["promote", str(run_dir), "--to", "production", "--allowed-key", str(keys["run.pub"]),
         "--sign-key", str(keys["run"])],
    )  # fmt: skip
    assert r.exit_code == 1 and "FAIL  policy: no release-policy.yaml" in r.output, r.output


@pytest.fixture
def two_key_project_run(release):
    project, keys, run_dir = release
    (project.root / "release-policy.yaml").unlink()
    project.commit("no policy")
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts, contracts.criteria, jobs=1, seed=2, root=project.root,
        evidence_root=project.root / "evidence", signer=load_signer(keys["run"]),
    )  # fmt: skip
    return project, keys, Path(result.evidence_dir)


def test_one_key_for_two_roles_and_a_candidate_outside_the_project_are_refused(release):
    project, _, _ = release
    path = project.root / "release-policy.yaml"
    path.write_text(POLICY.replace("keys/ml-lead.pub", "keys/security-engineer.pub"))
    with pytest.raises(UsageError, match="the same key as role security-engineer"):
        load_policy(path, project.root)
    path.write_text(POLICY.replace("candidate: [model]", "candidate: [../elsewhere]", 1))
    with pytest.raises(UsageError, match=r"candidate: \.\./elsewhere is outside the project"):
        load_policy(path, project.root)
    (project.root / "link").symlink_to(project.root / "model")
    path.write_text(POLICY.replace("candidate: [model]", "candidate: [link]", 1))
    with pytest.raises(UsageError, match="or a symbolic link"):
        load_policy(path, project.root)


def test_a_run_of_contracts_from_elsewhere_or_of_a_selection_is_refused(release, tmp_path):
    """Same criterion IDs, other checks: the run is GO, full, clean and at the commit,
    and still not the candidate's readiness run."""
    from harness.replay import promotion_problems

    project, keys, run_dir = release
    ours = [k.sha256 for k in load_contract_set([project.root / "contracts"]).contracts]
    weak = tmp_path / "weak"
    weak.mkdir()
    text = (project.root / "contracts" / "a.yaml").read_text()
    (weak / "a.yaml").write_text(text + "# the same IDs, other text\n")
    contracts = load_contract_set([weak])
    elsewhere = Path(
        run_contracts(
            contracts, contracts.criteria, jobs=1, seed=2, root=project.root,
            evidence_root=project.root / "evidence", signer=load_signer(keys["run"]),
        ).evidence_dir
    )  # fmt: skip
    found = promotion_problems(elsewhere, [keys["run.pub"]], contracts=ours)
    assert any(p.startswith("contracts: the run's 1 contract file(s) differ") for p in found)
    assert not any(
        p.startswith("contracts:")
        for p in promotion_problems(run_dir, [keys["run.pub"]], contracts=ours)
    )
    selected = Path(
        run_contracts(
            contracts, contracts.criteria, jobs=1, seed=2, root=project.root,
            evidence_root=project.root / "evidence", signer=load_signer(keys["run"]),
            selection={"keyword": "AC"},
        ).evidence_dir
    )  # fmt: skip
    found = promotion_problems(selected, [keys["run.pub"]])
    assert any(p.startswith("no selection: a selection (keyword)") for p in found), found


def test_an_unstamped_candidate_is_refused(release):
    project, keys, run_dir = release
    (project.root / "model" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    with pytest.raises(PromotionRefused, match=r"not stamped purpose: ship: model \(unstamped\)"):
        _promote(project, keys, run_dir)


# ----------------------------------------------------------------- the lifecycle log

AUDITED = POLICY.replace("version: 1\n", "version: 1\naudit-log: audit/lifecycle.jsonl\n")


@pytest.fixture
def audited_release(project, tmp_path_factory):
    return make_release(project, tmp_path_factory, AUDITED)


def _lifecycle(project, decision="allowed", governed=True, weights=None):
    """What an audited trainer writes: a governance decision, a training start naming it,
    a checkpoint event naming the weights' sha256 (auditchain: the one implementation)."""
    import hashlib

    import auditchain

    log = project.root / "audit" / "lifecycle.jsonl"
    head = auditchain.append_event(log, "data.training_decision", decision=decision)
    run = str(project.root / "run")
    auditchain.append_event(log, "training.start", run=run, governance=head if governed else "")
    data = weights if weights is not None else (project.root / "model" / "model.safetensors")
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    auditchain.append_event(log, "checkpoint.write", run=run, files={"model.safetensors": sha})
    return log


def _sign_all(project, keys, run_dir):
    for role in ("security-engineer", "ml-lead"):
        _signoff(project, run_dir, role, keys[role])


def test_without_its_lifecycle_log_the_candidate_is_refused(audited_release):
    project, keys, run_dir = audited_release
    _sign_all(project, keys, run_dir)
    with pytest.raises(PromotionRefused, match="lifecycle: .*lifecycle.jsonl: cannot read"):
        _promote(project, keys, run_dir)


@pytest.mark.parametrize("decision, governed", [("refused", True), ("allowed", False)])
def test_a_candidate_trained_without_governance_allowing_it_is_refused(
    audited_release, decision, governed
):
    project, keys, run_dir = audited_release
    _sign_all(project, keys, run_dir)
    _lifecycle(project, decision=decision, governed=governed)
    with pytest.raises(PromotionRefused, match="started without a data governance decision"):
        _promote(project, keys, run_dir)


def test_a_candidate_no_audited_checkpoint_wrote_is_refused(audited_release, tmp_path):
    project, keys, run_dir = audited_release
    _sign_all(project, keys, run_dir)
    other = tmp_path / "other.safetensors"
    other.write_bytes(safetensors_with("ship") + b"  ")
    _lifecycle(project, weights=other)
    with pytest.raises(PromotionRefused, match="no checkpoint.write event in lifecycle.jsonl"):
        _promote(project, keys, run_dir)


def test_an_edited_lifecycle_log_is_refused(audited_release):
    project, keys, run_dir = audited_release
    _sign_all(project, keys, run_dir)
    log = _lifecycle(project)
    log.write_text(log.read_text().replace('"allowed"', '"allowed" ', 1))
    with pytest.raises(PromotionRefused, match="lifecycle: .*line 2: prev hash does not match"):
        _promote(project, keys, run_dir)


def test_an_audited_candidate_is_promoted_and_the_promotion_joins_its_chain(audited_release):
    import auditchain

    project, keys, run_dir = audited_release
    _sign_all(project, keys, run_dir)
    log = _lifecycle(project)
    record = _promote(project, keys, run_dir)
    _, count, problems = auditchain.verify_chain(log)
    assert (count, problems) == (4, [])
    last = auditchain.read_events(log)[-1]
    assert last["event"] == "promotion" and last["record"] == record
    assert last["record"]["candidate"] == record["candidate"]


def test_a_target_names_the_criteria_it_needs(release):
    project, keys, run_dir = release
    _sign_all(project, keys, run_dir)
    path = project.root / "release-policy.yaml"
    base = ["promote", str(run_dir), "--to", "production", "--allowed-key", str(keys["run.pub"]),
            "--sign-key", str(keys["run"])]  # fmt: skip
    path.write_text(POLICY.replace("k: 2}\n", "k: 2}\n    criteria: [AC-NOPE-001]\n"))
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 4 and "targets.production.criteria names AC-NOPE-001" in r.output
    path.write_text(POLICY.replace("k: 2}\n", "k: 2}\n    criteria: [AC-DEMO-001]\n"))
    r = CliRunner().invoke(cli, base)
    assert "PASS  required criteria: 1/1 required GO" in r.output


def test_signoff_and_promote_take_latest_and_gc_never_deletes_what_they_name(release):
    """`latest` names the run in signoff and promote as in diff; gc then keeps the
    promoted, signed-off run whatever --keep says."""
    project, keys, run_dir = release
    runner = CliRunner()
    for role in ("security-engineer", "ml-lead"):
        r = runner.invoke(
            cli,
            ["signoff", "latest", "--role", role, "--key", str(keys[role]),
             "--allowed-key", str(keys["run.pub"])],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert f"signed off {run_dir.name}" in r.output
    r = runner.invoke(
        cli,
        ["promote", "latest", "--to", "production", "--allowed-key", str(keys["run.pub"]),
         "--sign-key", str(keys["run"])],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"promoted {run_dir.name} to production" in r.output
    r = runner.invoke(cli, ["gc", "--keep", "0"])
    assert r.exit_code == 0, r.output
    assert f"kept    {run_dir.name}  (promoted" in r.output and run_dir.is_dir()
    # a run with a sign-off alone is kept too
    (project.root / "release" / "promotions.jsonl").unlink()
    r = runner.invoke(cli, ["gc", "--keep", "0"])
    assert "(signed off)" in r.output and run_dir.is_dir()


@pytest.mark.parametrize("content", [None, b"torch pickle bytes"])
def test_a_candidate_folder_without_weights_passes_no_rule(audited_release, content):
    """An empty folder, or one holding weights in another format (model.pt), is never a
    candidate: neither its purpose nor its lifecycle can be shown."""
    project, keys, run_dir = audited_release
    _lifecycle(project)  # a verifying log; the candidate's weights then go away
    (project.root / "model" / "model.safetensors").unlink()
    if content is not None:
        (project.root / "model" / "model.pt").write_bytes(content)
    _sign_all(project, keys, run_dir)
    with pytest.raises(PromotionRefused) as exc:
        _promote(project, keys, run_dir)
    reasons = " ".join(exc.value.reasons)
    assert "candidate:" in reasons and "model (no weights file)" in reasons
    assert "lifecycle:" in reasons and "model: no weights file (*.safetensors)" in reasons


def test_a_lifecycle_log_a_check_wrote_during_the_readiness_run_is_refused(
    project, tmp_path_factory
):
    """A check is untrusted: one that appends forged training events to the project's
    lifecycle log while the readiness run runs leaves the log changed between the run's
    start and end, which the coordinator recorded; promotion refuses it."""
    (project.root / "forger.py").write_text(
        "import hashlib, pathlib\nimport auditchain\n\n\n"
        "def check(ctx):\n"
        "    root = pathlib.Path(ctx.root)\n"
        "    log = root / 'audit' / 'lifecycle.jsonl'\n"
        "    data = (root / 'model' / 'model.safetensors').read_bytes()\n"
        "    sha = hashlib.sha256(data).hexdigest()\n"
        "    head = auditchain.append_event(log, 'data.training_decision', decision='allowed')\n"
        "    auditchain.append_event(log, 'training.start', run='r', governance=head)\n"
        "    auditchain.append_event(log, 'checkpoint.write', run='r',\n"
        "                            files={'model.safetensors': sha})\n"
        "    return {'value': 1}\n"
    )
    project.contract(
        "forged", simple_contract(check="forger:check", cid="AC-DEMO-009", inv="INV-DEMO-009")
    )
    project, keys, run_dir = make_release(project, tmp_path_factory, AUDITED)
    _sign_all(project, keys, run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["lifecycle_log"]["before"]["count"] == 0
    assert meta["lifecycle_log"]["after"]["count"] >= 3
    with pytest.raises(PromotionRefused, match="changed during the readiness run"):
        _promote(project, keys, run_dir)


def test_history_before_a_promotion_cannot_be_rewritten(audited_release):
    import auditchain

    project, keys, run_dir = audited_release
    _sign_all(project, keys, run_dir)
    log = _lifecycle(project)
    registry = project.root / "release" / "promotions.jsonl"
    policy = load_policy(project.root / "release-policy.yaml", project.root)
    first = promote(
        run_dir, "production", [keys["run.pub"]], load_signer(keys["run"]), registry, "rm",
        project.root, None, policy,
    )  # fmt: skip
    assert first["lifecycle"]["count"] == 3 and first["lifecycle"]["log"] == "audit/lifecycle.jsonl"
    # the log rewritten from scratch: it verifies, and names the same weights
    log.unlink()
    _lifecycle(project)
    assert auditchain.verify_chain(log)[2] == []
    _signoff(project, run_dir, "ml-lead", keys["ml-lead"], target="staging")
    with pytest.raises(PromotionRefused, match="the log was rewritten"):
        promote(
            run_dir, "staging", [keys["run.pub"]], load_signer(keys["run"]), registry, "rm",
            project.root, None, policy,
        )  # fmt: skip
