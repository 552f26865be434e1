"""Evidence a skeptical auditor can check: tamper tests, keys, cross-checks."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.loader import load_contract_set
from harness.runner import run_contracts
from harness.signing import generate_keypair, load_public_key, load_signer
from harness.verify import verify_run

from .conftest import simple_contract


@pytest.fixture
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair(d / "signing.key")
    other_priv, other_pub = generate_keypair(d / "other.key")
    return {"priv": priv, "pub": pub, "other_priv": other_priv, "other_pub": other_pub}


@pytest.fixture
def signed_run(project, keys, tmp_path):
    project.contract("a", simple_contract(check="demochecks:noisy"))
    project.contract(
        "b",
        simple_contract(cid="AC-TWO-001", inv="INV-TWO-001").replace(
            "name: ac-two-001", "name: two"
        ),
    )
    project.commit()
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=2,
        seed=5,
        root=project.root,
        evidence_root=tmp_path / "evidence",
        signer=load_signer(keys["priv"]),
    )
    return Path(result.evidence_dir)


def problems(run_dir, keys, which="pub"):
    return verify_run(run_dir, [load_public_key(keys[which])])


def test_a_signed_run_verifies(signed_run, keys):
    assert problems(signed_run, keys) == []
    assert not (signed_run / "INCOMPLETE").exists()
    verdict = json.loads((signed_run / "verdict.json").read_text())
    assert verdict["signed"] is True and verdict["verdict"] == "GO"
    statement = json.loads((signed_run / "criteria" / "AC-DEMO-001" / "statement.json").read_text())
    assert statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    assert statement["predicate"]["result"] == "PASSED"


def _all_files(run_dir):
    return sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file())


def test_flipping_any_byte_of_any_file_is_detected(signed_run, keys, tmp_path):
    files = _all_files(signed_run)
    assert len(files) > 15
    for rel in files:
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(signed_run, copy)
        target = copy / rel
        data = bytearray(target.read_bytes())
        if not data:
            target.write_bytes(b"x")  # an empty log gains a byte
        else:
            data[len(data) // 2] ^= 0x01
            target.write_bytes(bytes(data))
        found = problems(copy, keys)
        assert found, f"flipping a byte of {rel} went unnoticed"


def test_deleting_any_file_is_detected(signed_run, keys, tmp_path):
    for rel in _all_files(signed_run):
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(signed_run, copy)
        (copy / rel).unlink()
        assert problems(copy, keys), f"deleting {rel} went unnoticed"


@pytest.mark.parametrize(
    "where",
    [
        "criteria/AC-DEMO-001/logs/extra.txt",
        "extra.json",
        "criteria/AC-DEMO-001/artifacts/INV-DEMO-001/new.bin",
    ],
)
def test_adding_a_file_is_detected(signed_run, keys, where):
    (signed_run / where).write_text("planted")
    found = problems(signed_run, keys)
    assert any("unexpected file" in p and where.split("/")[-1] in p for p in found), found


def _audit(run_dir):
    return (run_dir / "audit.jsonl").read_bytes().splitlines(keepends=True)


def test_reordering_audit_lines_is_detected(signed_run, keys):
    lines = _audit(signed_run)
    lines[2], lines[3] = lines[3], lines[2]
    (signed_run / "audit.jsonl").write_bytes(b"".join(lines))
    assert any("audit.jsonl" in p for p in problems(signed_run, keys))


def test_deleting_an_audit_line_is_detected(signed_run, keys):
    lines = _audit(signed_run)
    del lines[4]
    (signed_run / "audit.jsonl").write_bytes(b"".join(lines))
    assert any("audit.jsonl" in p for p in problems(signed_run, keys))


def test_truncating_the_audit_log_is_detected(signed_run, keys):
    lines = _audit(signed_run)
    (signed_run / "audit.jsonl").write_bytes(b"".join(lines[:-1]))
    found = problems(signed_run, keys)
    assert any("truncated or altered" in p for p in found), found


def test_swapping_two_criteria_envelopes_is_detected(signed_run, keys):
    a = signed_run / "criteria" / "AC-DEMO-001"
    b = signed_run / "criteria" / "AC-TWO-001"
    for name in ("statement.dsse.json", "statement.json"):
        da, db = (a / name).read_bytes(), (b / name).read_bytes()
        (a / name).write_bytes(db)
        (b / name).write_bytes(da)
    found = problems(signed_run, keys)
    assert any("AC-DEMO-001" in p and "envelope digest" in p for p in found), found
    assert any("AC-TWO-001" in p for p in found)


def test_resigning_with_another_key_is_detected(signed_run, keys):
    from harness.signing import make_envelope

    attacker = load_signer(keys["other_priv"])
    for env_path in signed_run.rglob("*.dsse.json"):
        env = json.loads(env_path.read_text())
        forged = make_envelope(base64.b64decode(env["payload"]), env["payloadType"], attacker)
        env_path.write_text(json.dumps(forged))
    found = problems(signed_run, keys)
    assert any("no signature verifies" in p for p in found), found
    # and the attacker's own key does not make the verdict digests line up either
    assert problems(signed_run, keys, "other_pub")


def test_an_unsigned_run_does_not_verify(project, tmp_path, keys):
    project.contract("a", simple_contract())
    contracts = load_contract_set([project.root / "contracts"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=1,
        seed=1,
        root=project.root,
        evidence_root=tmp_path / "ev",
    )
    verdict = json.loads((Path(result.evidence_dir) / "verdict.json").read_text())
    assert verdict["signed"] is False
    assert any("unsigned" in p for p in problems(Path(result.evidence_dir), keys))


def test_private_key_never_enters_the_evidence(signed_run, keys):
    from cryptography.hazmat.primitives import serialization

    pem = keys["priv"].read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    needles = [pem, pem.splitlines()[1], raw, base64.b64encode(raw), raw.hex().encode()]
    for p in signed_run.parent.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for needle in needles:
                assert needle not in data, f"private key material in {p}"


def test_private_key_file_mode_is_0600(keys):
    assert (os.stat(keys["priv"]).st_mode & 0o777) == 0o600


def test_passphrase_protected_key(tmp_path, monkeypatch):
    from harness.errors import UsageError

    priv, _ = generate_keypair(tmp_path / "k", passphrase=b"s3cret")
    assert b"ENCRYPTED" in priv.read_bytes()
    with pytest.raises(UsageError, match="passphrase"):
        load_signer(priv)
    monkeypatch.setenv("HARNESS_SIGN_KEY_PASSPHRASE", "s3cret")
    assert len(load_signer(priv).keyid) == 64


def test_keygen_refuses_to_overwrite(keys):
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="refusing to overwrite"):
        generate_keypair(keys["priv"])


def test_envelopes_verify_with_securesystemslib(signed_run, keys):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    from harness.signing import keyid_of

    public = load_public_key(keys["pub"])
    key = SSlibKey.from_crypto(public, keyid=keyid_of(public))
    envelopes = list(signed_run.rglob("*.dsse.json"))
    assert len(envelopes) == 3
    for path in envelopes:
        env = Envelope.from_dict(json.loads(path.read_text()))
        assert key.keyid in env.verify([key], 1)


def test_promote_refuses_then_records(signed_run, keys, project, tmp_path):
    from harness.replay import PromotionRefused, promote

    ledger = tmp_path / "promotions.jsonl"
    signer = load_signer(keys["priv"])
    with pytest.raises(PromotionRefused, match="does not verify"):
        promote(signed_run, "prod", [keys["other_pub"]], signer, ledger)
    with pytest.raises(PromotionRefused, match="must be signed"):
        promote(signed_run, "prod", [keys["pub"]], None, ledger)
    record = promote(signed_run, "prod", [keys["pub"]], signer, ledger)
    assert record["verdict"] == "GO" and record["promoted_by"] == signer.keyid
    from auditchain import verify_chain

    _, count, chain_problems = verify_chain(ledger)
    assert count == 1 and chain_problems == []


def test_promote_refuses_a_no_go_run(project, keys, tmp_path):
    from harness.replay import PromotionRefused, promote

    project.contract("a", simple_contract(expect="value: {ge: 9}"))
    project.commit()
    contracts = load_contract_set([project.root / "contracts"])
    signer = load_signer(keys["priv"])
    result = run_contracts(
        contracts,
        contracts.criteria,
        jobs=1,
        seed=1,
        root=project.root,
        evidence_root=tmp_path / "ev",
        signer=signer,
    )
    with pytest.raises(PromotionRefused, match="verdict is NO-GO"):
        promote(Path(result.evidence_dir), "prod", [keys["pub"]], signer, tmp_path / "l.jsonl")


def test_rerun_matches_and_notices_a_difference(project, tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    project.contract(
        "a",
        simple_contract(
            check="demochecks:square_is_nonneg", expect="square: {ge: 0}", params="{x: 3}"
        ),
    )
    r = CliRunner().invoke(cli, ["run", "-j", "1", "--seed", "4"])
    run_dir = next(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())
    # an unsigned bundle: rerun refuses it unless told --unverified
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir)])
    assert r.exit_code == 4 and "--unverified" in r.output, r.output
    r = CliRunner().invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "was not verified" in r.output
    assert "rerun matches" in r.output
    # the recorded contract text is what reruns, not today's file
    project.contract(
        "a",
        simple_contract(
            check="demochecks:square_is_nonneg", expect="square: {ge: 0}", params="{x: 5}"
        ),
    )
    r = CliRunner().invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert r.exit_code == 0, r.output
    # a changed observation is reported
    data = json.loads((run_dir / "results.json").read_text())
    data["criteria"][0]["invariants"][0]["observations"]["square"] = 10
    (run_dir / "results.json").write_text(json.dumps(data))
    r = CliRunner().invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert r.exit_code == 1 and "INV-DEMO-001.square: 10 -> 9" in r.output


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_half_written_complete_bundle(project, keys):
    project.contract("a", simple_contract(check="demochecks:noisy"))
    project.contract(
        "b",
        simple_contract(cid="AC-TWO-001", inv="INV-TWO-001").replace(
            "name: ac-two-001", "name: two"
        ),
    )
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    rng = random.Random(0)
    cmd = [sys.executable, "-m", "harness.cli", "run", "-j", "2", "--sign-key", str(keys["priv"])]
    for _ in range(30):
        proc = subprocess.Popen(
            cmd,
            cwd=project.root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(0.05, 1.5))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    runs = [p for p in (project.root / "evidence").iterdir() if p.is_dir() and p.name[0].isdigit()]
    assert runs
    complete = 0
    for run_dir in runs:
        if (run_dir / "INCOMPLETE").exists():
            continue
        assert problems(run_dir, keys) == [], run_dir
        complete += 1
    print(
        f"{len(runs)} runs killed at random: {complete} complete and verifying, "
        f"{len(runs) - complete} marked incomplete"
    )


def test_verify_takes_the_configured_allowed_keys_when_no_key_is_given(signed_run, keys, project):
    """Like rerun and promote, verify falls back to [tool.harness] allowed-keys; with no
    key anywhere it is a usage error (exit 4), never a pass."""
    from click.testing import CliRunner

    from harness.cli import cli

    r = CliRunner().invoke(cli, ["verify", str(signed_run)])
    assert r.exit_code == 4 and "allowed-keys" in r.output, r.output
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f'allowed-keys = ["{keys["pub"]}"]\n')
    r = CliRunner().invoke(cli, ["verify", str(signed_run)])
    assert r.exit_code == 0 and "OK:" in r.output, r.output
    pyproject.write_text(pyproject.read_text().replace(str(keys["pub"]), str(keys["other_pub"])))
    r = CliRunner().invoke(cli, ["verify", str(signed_run)])
    assert r.exit_code == 1 and "no signature verifies" in r.output, r.output


def _signed(project, keys, tmp_path, name, criteria=None, profile="full"):
    contracts = load_contract_set([project.root / "contracts"])
    chosen = [c for c in contracts.criteria if criteria is None or c.id in criteria]
    result = run_contracts(
        contracts,
        chosen,
        jobs=1,
        seed=3,
        profile=profile,
        root=project.root,
        evidence_root=tmp_path / "evidence" / name,
        signer=load_signer(keys["priv"]),
    )
    return Path(result.evidence_dir)


def _refusal(run_dir, keys, project, required=("AC-ONE-001", "AC-TWO-001")):
    from harness.replay import PromotionRefused, promote

    with pytest.raises(PromotionRefused) as exc:
        promote(
            run_dir, "production", [keys["pub"]], load_signer(keys["priv"]),
            project.root / "evidence" / "l.jsonl", "rm", project.root, required,
        )  # fmt: skip
    return " | ".join(exc.value.reasons)


@pytest.fixture
def two_criteria(project):
    project.contract("a", simple_contract(cid="AC-ONE-001", inv="INV-ONE-001"))
    project.contract(
        "b",
        simple_contract(cid="AC-TWO-001", inv="INV-TWO-001").replace(
            "name: ac-two-001", "name: two"
        ),
    )
    project.commit()
    return project


def test_only_a_full_readiness_run_of_every_blocker_at_the_candidate_commit_is_promoted(
    two_criteria, keys, tmp_path
):
    """The attacks of issue 14: a mutants-only or fast run, a selection, a dirty or
    untracked tree, an older commit. Each is refused naming its rule; the real thing is
    promoted and its record binds the commit."""
    from harness.replay import promote, promotion_rules

    project = two_criteria
    teeth = _signed(project, keys, tmp_path, "teeth", profile="teeth")
    assert json.loads((teeth / "verdict.json").read_text())["verdict"] == "GO"
    assert "profile: profile teeth" in _refusal(teeth, keys, project)
    fast = _signed(project, keys, tmp_path, "fast", profile="fast")
    assert "profile: profile fast" in _refusal(fast, keys, project)
    selection = _signed(project, keys, tmp_path, "sel", criteria={"AC-ONE-001"})
    assert "required criteria: 1/2 required GO; not run: AC-TWO-001" in _refusal(
        selection, keys, project
    )
    (project.root / "morechecks.py").write_text("# a check file git does not track\n")
    untracked = _signed(project, keys, tmp_path, "untracked")
    assert "clean tree: made from a tree with uncommitted" in _refusal(untracked, keys, project)
    (project.root / "morechecks.py").unlink()
    good = _signed(project, keys, tmp_path, "good")
    rules = promotion_rules(good, [keys["pub"]], project.root, ["AC-ONE-001", "AC-TWO-001"])
    assert [r.name for r in rules if r.ok] == [
        "signature", "verdict", "no waiver", "profile", "clean tree", "no selection",
        "candidate commit", "required criteria",
    ]  # fmt: skip
    (project.root / "README").write_text("a later change\n")
    later = project.commit("later")
    assert "candidate commit: run at" in _refusal(good, keys, project)
    newer = _signed(project, keys, tmp_path, "newer")
    record = promote(
        newer, "production", [keys["pub"]], load_signer(keys["priv"]),
        tmp_path / "ledger.jsonl", "rm", project.root, ["AC-ONE-001", "AC-TWO-001"],
    )  # fmt: skip
    assert record["git"]["commit"] == later and record["git"]["dirty"] is False


def test_promote_prints_every_rule_and_refuses_a_teeth_run(two_criteria, keys, tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    project = two_criteria
    teeth = _signed(project, keys, tmp_path, "teeth", profile="teeth")
    r = CliRunner().invoke(
        cli,
        ["promote", str(teeth), "--to", "production", "--allowed-key", str(keys["pub"]),
         "--sign-key", str(keys["priv"])],
    )  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "PASS  signature" in r.output and "FAIL  profile: profile teeth" in r.output
    assert "promotion REFUSED" in r.output


def test_rerun_says_when_the_code_changed_since_the_run(project, tmp_path):
    """A rerun runs today's checkout: when its commit differs from the run's, the
    report says so next to any difference, and names a dirty tree."""
    from click.testing import CliRunner

    from harness.cli import cli

    project.contract("a", simple_contract())
    first = project.commit()
    r = CliRunner().invoke(cli, ["run", "-j", "1", "--seed", "4"])
    run_dir = next(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())
    r = CliRunner().invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert r.exit_code == 0 and "git.commit" not in r.output, r.output
    (project.root / "notes.txt").write_text("later\n")
    second = project.commit("later")
    r = CliRunner().invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert f"git.commit: {first[:12]} -> {second[:12]}: the code changed" in r.output, r.output
    (project.root / "untracked.py").write_text("\n")
    r = CliRunner().invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert "git.dirty: False -> True" in r.output, r.output


def test_rerun_runs_the_code_of_the_runs_commit_in_a_worktree(project, tmp_path):
    """After the code changed and was committed, `rerun` reproduces the run at its own
    commit (a temporary worktree) while `rerun --here` runs today's code and differs; a
    run from a dirty tree or an unknown commit is refused with the reason."""
    from click.testing import CliRunner

    from harness.cli import cli

    project.contract(
        "a",
        simple_contract(
            check="demochecks:square_is_nonneg", expect="square: {ge: 0}", params="{x: 3}"
        ),
    )
    project.commit()
    runner = CliRunner()
    r = runner.invoke(cli, ["run", "-j", "1", "--seed", "4"])
    run_dir = next(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())
    checks = project.root / "demochecks.py"
    checks.write_text(checks.read_text().replace("x * x", "x * x + 1"))
    project.commit("the check's code changed")
    r = runner.invoke(cli, ["rerun", "--here", "--unverified", str(run_dir)])
    assert r.exit_code == 1 and "INV-DEMO-001.square: 9 -> 10" in r.output, r.output
    r = runner.invoke(cli, ["rerun", "--unverified", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "in a temporary worktree" in r.output and "rerun matches" in r.output
    assert len(subprocess_out(["git", "worktree", "list"], project.root).splitlines()) == 1
    # a run made from a dirty tree cannot be checked out again
    (project.root / "untracked.txt").write_text("\n")
    r = runner.invoke(cli, ["run", "-j", "1", "--seed", "4"])
    dirty = max(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())
    r = runner.invoke(cli, ["rerun", "--unverified", str(dirty)])
    assert r.exit_code == 4 and "uncommitted or untracked" in r.output and "--here" in r.output


def subprocess_out(cmd, cwd):
    import subprocess

    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True).stdout


def test_rerun_at_the_runs_commit_runs_a_project_in_a_subfolder_of_the_repository(
    project, keys, monkeypatch
):
    """A monorepo whose harness project is ``proj/``: the rerun at the run's commit runs
    from ``proj/`` of the temporary worktree (its pyproject, its checks), not its top."""
    from click.testing import CliRunner

    from harness.cli import cli

    from .conftest import Project, commit_all

    sub = project.root / "proj"
    sub.mkdir()
    for name in ("pyproject.toml", "demochecks.py"):
        (project.root / name).rename(sub / name)
    (sub / "checks").mkdir()  # a package, as projects bind them: checks.clip:...
    (sub / "checks" / "__init__.py").write_text("")
    (sub / "checks" / "clip.py").write_text("def ok(ctx):\n    return {'value': 1}\n")
    monkeypatch.chdir(sub)
    proj = Project(sub)
    proj.contract("a", simple_contract(check="checks.clip:ok"))
    commit_all(project.root)
    runner = CliRunner()
    r = runner.invoke(cli, ["run", "-j", "1", "--seed", "4", "--sign-key", str(keys["priv"])])
    assert r.exit_code == 0, r.output
    (project.root / "elsewhere.txt").write_text("an unrelated change\n")
    commit_all(project.root, "an unrelated commit")
    r = runner.invoke(cli, ["rerun", "latest", "--key", str(keys["pub"]), "-j", "1"])
    assert "in a temporary worktree" in r.output, r.output
    assert r.exit_code == 0 and "rerun matches" in r.output, r.output
    assert "cannot import" not in r.output


def test_the_bundle_reaches_the_disk_in_one_sync_before_its_verdict(project, keys, monkeypatch):
    # no fsync storm (two per criterion): every file of the bundle is written, then one
    # syncfs of its filesystem, then the verdict that seals them, fsynced itself; the
    # number of fsyncs does not grow with the criteria
    import harness.evidence as evidence

    def run_with(n: int) -> tuple[int, list[bool]]:
        fsyncs: list[int] = []
        synced: list[bool] = []
        real_fsync, real_sync = os.fsync, evidence.sync_filesystem

        def counting_fsync(fd):
            fsyncs.append(fd)
            real_fsync(fd)

        def sync(path):
            synced.append(any(Path(path).glob("verdict*.json")))  # written after it?
            real_sync(path)

        monkeypatch.setattr(os, "fsync", counting_fsync)
        monkeypatch.setattr(evidence, "sync_filesystem", sync)
        for i in range(n):
            project.contract(
                f"c{i}", simple_contract(cid=f"AC-DEMO-{i:03d}", inv=f"INV-DEMO-{i:03d}")
            )
        contracts = load_contract_set([project.root / "contracts"])
        result = run_contracts(contracts, contracts.criteria, jobs=2, seed=1, root=project.root,
                               default_timeout=30, evidence_root=project.root / "evidence",
                               signer=load_signer(keys["priv"]))  # fmt: skip
        monkeypatch.undo()
        assert problems(Path(result.evidence_dir), keys) == []
        return len(fsyncs), synced

    few, synced_few = run_with(1)
    many, synced_many = run_with(6)
    assert synced_few == synced_many == [False]  # once, before any verdict file
    assert few == many <= 4, (few, many)
