"""Checks are untrusted: each test is an attack a hostile check could make, and
asserts that the attack fails and the verdict is right (issue 12, SECURITY.md)."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.loader import load_contract_set
from harness.model import FalsifierOutcome, InvariantOutcome, Verdict
from harness.runner import run_contracts
from harness.signing import generate_keypair, load_public_key
from harness.verify import verify_run
from tests.harness import softhsm
from tests.harness.conftest import simple_contract

HOSTILE = '''
import gc, os, sys, json, pathlib, shutil, subprocess, time

def hijack(ctx):
    """Replace every judge this process can reach, then report a failing value."""
    from harness.model import InvariantOutcome
    import harness.judge as judge
    judge.judge_observations = lambda expect, obs: (InvariantOutcome.PASS, (), "")
    judge.judge_task = lambda *a, **k: None
    import harness.evaluate as evaluate
    evaluate.call_check = lambda check, ctx, allowed=(): {"ok": 1}
    import harness.worker as worker
    worker.execute_task = lambda task: None
    return {"ok": 0}

def hijack_search(ctx):
    """Blind the property search in its own process, then report negative values."""
    from harness.model import InvariantOutcome
    import harness.falsify.engine as engine
    engine.judge_observations = lambda expect, obs: (InvariantOutcome.PASS, (), "")
    return {"x": ctx.params.get("x", 1)}

def honest_failure(ctx):
    return {"ok": 0}

STATE = {"patched": False}

def patch_state(ctx):
    STATE["patched"] = True
    import json as j
    j.dumps = lambda *a, **k: "{}"
    return {"ok": 1}

def sees_patch(ctx):
    import json as j
    return {"ok": 0 if STATE["patched"] or j.dumps([1]) != "[1]" else 1}

def snoop(ctx):
    """Look for the signing key and secrets everywhere a check can look."""
    found = []
    needle = ctx.params.get("needle_reversed", "")[::-1].encode()
    seen = 0
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in ("Signer", "DeferredKey", "Ed25519PrivateKey", "_Ed25519PrivateKey",
                    "TokenKey", "TokenPrivateKey"):
            found.append(name)
    print("ENVIRON", json.dumps(dict(os.environ)))
    pid = os.getpid()
    for _ in range(6):  # every ancestor's environment and command line
        for what in ("environ", "cmdline"):
            try:
                data = pathlib.Path(f"/proc/{pid}/{what}").read_bytes()
                seen += int(bool(needle) and needle in data)
                print("PROC", pid, what, data)
            except OSError as exc:
                print("PROC", pid, what, "unreadable", exc)
        try:
            pid = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    names = ("PASSPHRASE", "PKCS11_PIN", "AWS_SECRET")
    return {"found": len(found), "seen": seen, "secret_in_env": sum(
        any(n in k for n in names) or (bool(needle) and needle in v.encode())
        for k, v in os.environ.items())}

def guess(ctx):
    """Print every candidate: the one that comes back redacted would be the secret."""
    print("\\n".join(ctx.params["candidates"]))
    return {"printed": len(ctx.params["candidates"])}

def plant(ctx):
    """Write into the evidence folder of the running run, and remove its marker."""
    root = pathlib.Path(ctx.root) / "evidence"
    planted = []
    for run in root.iterdir():
        if not run.is_dir() or not run.name[0].isdigit():
            continue
        (run / "INCOMPLETE").unlink(missing_ok=True)
        for rel in ("criteria/AC-DEMO-001/planted.txt", "criteria/AC-DEMO-001/.hidden",
                    "criteria/AC-DEMO-001/artifacts/x/manifest.json", "planted-top.txt"):
            p = run / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("planted by a check")
            planted.append(rel)
    scratch = str(ctx.scratch)
    inside = scratch.startswith(str(root.resolve())) or scratch.startswith(str(root))
    return {"planted": len(planted), "scratch_in_evidence": int(inside)}

def hog_memory(ctx):
    block = bytearray(ctx.params.get("bytes", 3 * 1024**3))
    return {"ok": len(block)}

def chatty(ctx):
    line = b"x" * 1023 + b"\\n"
    for _ in range(ctx.params.get("kib", 50 * 1024)):
        os.write(1, line)
    return {"ok": 1}

def spawn_daemons(ctx):
    """Children that try to outlive the check: a new session, and a double fork."""
    pids = pathlib.Path(ctx.params["pidfile"])
    a = subprocess.Popen(["sleep", "300"], start_new_session=True)
    b = subprocess.Popen([sys.executable, "-c",
        "import os,subprocess,sys,time\\n"
        "p = subprocess.Popen(['sleep','300'], start_new_session=True)\\n"
        "open(sys.argv[1],'a').write(str(p.pid)+'\\\\n')\\n", str(pids)])
    b.wait()
    with open(pids, "a") as fh:
        fh.write(f"{a.pid}\\n")
    return {"ok": 1}

def fifo_log(ctx):
    """Plant FIFOs where this check's logs are written: opening one would block."""
    check_dir = ctx.scratch.parent
    for name in ("stdout.txt", "stderr.txt"):
        (check_dir / name).unlink(missing_ok=True)
        os.mkfifo(check_dir / name)
    print("printed after the fifo", flush=True)
    return {"ok": 1}

def swap_folder(ctx):
    """Replace this check's folder with a link to a folder outside it, then print."""
    check_dir = ctx.scratch.parent
    shutil.rmtree(check_dir)
    os.symlink(ctx.params["outside"], check_dir)
    print("where does this go?", flush=True)
    return {"ok": 1}

def plant_artifacts(ctx):
    """Make this check's artifacts folder a link to a folder outside; x must be >= 0."""
    arts = pathlib.Path(os.environ["HARNESS_SCRATCH"]).parent / "artifacts"
    if not arts.is_symlink():
        shutil.rmtree(arts, ignore_errors=True)
        arts.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(ctx.root / "outside", arts)
    return {"x": ctx.params.get("x", 1)}

def strategy_any_x():
    from hypothesis import strategies as st
    return st.fixed_dictionaries({"x": st.integers(-5, 5)})

def delete_key(ctx):
    pathlib.Path(ctx.params["key"]).unlink()
    return {"ok": 1}

def kill_server(ctx):
    """Start a survivor in a new session, then SIGKILL the fork server above us."""
    survivor = subprocess.Popen(["sleep", "300"], start_new_session=True)
    pathlib.Path(ctx.params["pidfile"]).write_text(str(survivor.pid))
    os.kill(os.getppid(), 9)
    time.sleep(30)
    return {"ok": 1}

def float32_zero(ctx):
    import numpy as np
    return {"err": np.float32(0.0), "nan": float("nan")}

def returns_text(ctx):
    return {"ok": "1"}

def not_plain(ctx):
    return {"ok": object()}
'''


@pytest.fixture
def hostile(project):
    (project.root / "hostile.py").write_text(HOSTILE)
    return project


def run(project, body: str, jobs: int = 1, **kw):
    project.contract("c", body)
    contracts = load_contract_set([project.root / "contracts"])
    kw.setdefault("default_timeout", 60)
    return run_contracts(contracts, contracts.criteria, jobs=jobs, seed=3, root=project.root, **kw)


def two_invariants(first: str, second: str, expect: str = "ok: {eq: 1}") -> str:
    return f"""
version: 1
contract: {{name: hostile, title: hostile checks}}
criteria:
  - id: AC-DEMO-001
    title: first
    severity: blocker
    references: [test]
    invariants: [INV-DEMO-001]
  - id: AC-DEMO-002
    title: second
    severity: blocker
    references: [test]
    invariants: [INV-DEMO-002]
invariants:
  - id: INV-DEMO-001
    title: first
    check: {{python: "{first}"}}
    expect: {{{expect}}}
  - id: INV-DEMO-002
    title: second
    check: {{python: "{second}"}}
    expect: {{{expect}}}
"""


# --------------------------------------------------------------------------- 1. judging


def test_a_check_that_replaces_the_judge_cannot_pass_itself_or_the_next_check(hostile):
    """Finding 1: a check replaced the worker's judge and made itself and a later
    failing check PASS. Judging is in the coordinator; every check has a fresh process."""
    result = run(hostile, two_invariants("hostile:hijack", "hostile:honest_failure"), jobs=1)
    outcomes = {i.invariant_id: i.outcome for c in result.criteria for i in c.invariants}
    assert outcomes == {
        "INV-DEMO-001": InvariantOutcome.FAIL,
        "INV-DEMO-002": InvariantOutcome.FAIL,
    }
    assert result.verdict is Verdict.NO_GO


NEGATIVE_X = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: negative x
    kind: property
    target: INV-DEMO-001
    property: {strategy: "demochecks:strategy_positive", max_examples: 30}
"""


def test_a_check_that_blinds_the_property_search_is_still_refuted(hostile):
    """The search is guided by a judgement in the worker; the coordinator judges
    every example again, so a blinded search hides no counterexample."""
    body = simple_contract(
        check="hostile:hijack_search",
        expect="x: {ge: 0}",
        falsifiers=NEGATIVE_X,
    )
    result = run(hostile, body)
    f = result.criteria[0].falsifiers[0]
    assert f.outcome is FalsifierOutcome.REFUTED, f
    assert "re-judging" in f.message and result.verdict is Verdict.NO_GO


def test_an_honest_search_reports_its_shrunk_counterexample(project):
    body = simple_contract(
        check="demochecks:positive_only",
        expect="x: {ge: 0}",
        falsifiers=NEGATIVE_X,
    )
    f = run(project, body).criteria[0].falsifiers[0]
    assert f.outcome is FalsifierOutcome.REFUTED
    assert f.message.startswith('counterexample {"x": -1}'), f.message


def test_module_state_a_check_patches_never_reaches_the_next_check(hostile):
    """Finding 1: module state (ours or the core's) leaked into later checks in a reused worker."""
    result = run(hostile, two_invariants("hostile:patch_state", "hostile:sees_patch"), jobs=1)
    outcomes = {i.invariant_id: i.outcome for c in result.criteria for i in c.invariants}
    assert outcomes["INV-DEMO-002"] is InvariantOutcome.PASS, result.criteria[1].reasons


def test_every_check_gets_a_fresh_process(hostile, tmp_path):
    (hostile.root / "pidcheck.py").write_text(
        "import os\ndef pid(ctx):\n    return {'pid': os.getpid()}\n"
    )
    result = run(hostile, two_invariants("pidcheck:pid", "pidcheck:pid", "pid: {gt: 0}"), jobs=1)
    pids = [i.observations["pid"] for c in result.criteria for i in c.invariants]
    assert len(set(pids)) == 2 and os.getpid() not in pids


# --------------------------------------------------------------------------- 2. secrets


def _signing_key(how: str, secret: str, root: Path) -> tuple[str, dict[str, str], Path]:
    """A signing key whose secret is ``secret``, given as ``how``: (--sign-key, the
    environment to add, the public key). A passphrase-protected key file, or a key in
    a SoftHSM2 token whose PIN comes from $HARNESS_PKCS11_PIN or pin-value=."""
    if how == "passphrase":
        priv, pub = generate_keypair(root / "keys" / "signing.key", passphrase=secret.encode())
        return str(priv), {"HARNESS_SIGN_KEY_PASSPHRASE": secret}, pub
    softhsm.require()
    env = softhsm.make_token(root / "hsm", "boundary", secret, ("signing",))
    extra = {"SOFTHSM2_CONF": env["SOFTHSM2_CONF"]}
    pub = root / "hsm" / "keys" / "signing.pub"
    if how == "pin-value":
        return softhsm.uri("boundary", "signing", **{"pin-value": secret}), extra, pub
    return softhsm.uri("boundary", "signing"), {**extra, "HARNESS_PKCS11_PIN": secret}, pub


@pytest.mark.parametrize("how", ["passphrase", "pin-env", "pin-value"])
def test_no_check_can_reach_the_signing_key_or_secrets(hostile, tmp_path, how):
    """Finding 2: the decrypted key was in every worker's memory, and the passphrase
    and other secrets reached every check and the bundle's logs. The token PIN, from
    $HARNESS_PKCS11_PIN or a pin-value= in the URI, is as far out of reach: in no
    check's environment, in no ancestor's /proc/<pid>/environ or cmdline."""
    secret = "pass-phrase-123" if how == "passphrase" else "pin-5310-ab"
    sign_key, secret_env, pub = _signing_key(how, secret, tmp_path)
    forbidden = [secret.encode(), b"fake-aws-secret-987"]
    if how == "passphrase":
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(
            Path(sign_key).read_bytes(), password=secret.encode()
        )
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        forbidden += [raw, raw.hex().encode(), base64.b64encode(raw)]
    hostile.contract(
        "c",
        simple_contract(
            check="hostile:snoop",
            expect="found: {eq: 0}",
            falsifiers="",
            params=f"{{needle_reversed: {secret[::-1]}}}",
        ).replace(
            "      found: {eq: 0}",
            "      found: {eq: 0}\n      seen: {eq: 0}\n      secret_in_env: {eq: 0}",
        ),
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(hostile.root),
        "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-987",
        **secret_env,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--sign-key", sign_key, "-j", "1"],
        cwd=hostile.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    run_dir = max((hostile.root / "evidence").iterdir(), key=lambda p: p.stat().st_mtime)
    inv = json.loads((run_dir / "results.json").read_text())["criteria"][0]["invariants"][0]
    assert inv["outcome"] == "PASS", (inv, proc.stdout, proc.stderr)
    # not in the check's process, nor in any ancestor's /proc/<pid>/environ or cmdline
    # (even as root)
    assert inv["observations"] == {"found": 0, "seen": 0, "secret_in_env": 0}
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in forbidden:
                assert value not in data, f"{value[:8]!r}... leaked into {path}"
    log = next(run_dir.rglob("INV-DEMO-001.stdout.txt")).read_text()
    assert "PROC" in log and "cmdline" in log  # the check did look
    assert verify_run(run_dir, [load_public_key(pub)]) == []


@pytest.mark.parametrize(
    "how, secret, candidates",
    [
        ("passphrase", "correct-horse-battery", [f"word-{i}" for i in range(2000)]),
        ("pin-env", "4711", [f"{i:04d}" for i in range(10_000)]),
    ],
)
def test_a_check_cannot_use_redaction_to_guess_a_signing_secret(
    hostile, tmp_path, how, secret, candidates
):
    """Redaction as an oracle: a check prints every guess (every 4-digit PIN, a list
    of likely passphrases). Were the coordinator to redact the passphrase or the PIN
    from the logs, the one guess that comes back [REDACTED] in the evidence would be
    the secret. No check is given either, so neither is redacted: the log is exactly
    what the check printed."""
    candidates = sorted({*candidates, secret})
    sign_key, secret_env, pub = _signing_key(how, secret, tmp_path)
    hostile.contract(
        "c",
        simple_contract(
            check="hostile:guess",
            expect=f"printed: {{eq: {len(candidates)}}}",
            falsifiers="",
            params=json.dumps({"candidates": candidates}),
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--sign-key", sign_key, "-j", "1"],
        cwd=hostile.root,
        env={**os.environ, "PYTHONPATH": str(hostile.root), **secret_env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    run_dir = max((hostile.root / "evidence").iterdir(), key=lambda p: p.stat().st_mtime)
    assert verify_run(run_dir, [load_public_key(pub)]) == [], proc.stdout + proc.stderr
    log = next(run_dir.rglob("INV-DEMO-001.stdout.txt")).read_text()
    assert "REDACTED" not in log
    assert log.splitlines() == candidates  # every guess as printed: none stands out


def test_a_library_caller_s_short_secret_is_not_redacted(hostile, tmp_path):
    """RunRequest.secrets: a value under 12 characters is not redacted (a check could
    print every candidate to find it); a longer one is."""
    short, long = "4711", "a-long-enough-secret-1"
    candidates = [short, long, "0815"]
    result = run(
        hostile,
        simple_contract(
            check="hostile:guess",
            expect="printed: {eq: 3}",
            falsifiers="",
            params=json.dumps({"candidates": candidates}),
        ),
        evidence_root=tmp_path / "evidence",
        secrets=(short, long),
    )
    log = next(Path(result.evidence_dir).rglob("INV-DEMO-001.stdout.txt")).read_text()
    assert log.splitlines() == [short, "[REDACTED:secret]", "0815"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/cmdline")
def test_only_the_exact_pin_value_text_is_wiped_from_the_command_line():
    """A short PIN (1234) given as pin-value= is wiped from /proc/<pid>/cmdline, which
    every process can read; the same digits elsewhere on the command line (a seed, a
    path, another URI's longer PIN) are left as they were."""
    uri = "pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234&pin-source=x"
    code = (
        "import pathlib, sys; from harness.signing import hide_uri_pin; "
        "hide_uri_pin(sys.argv[3]); "
        "sys.stdout.buffer.write(pathlib.Path('/proc/self/cmdline').read_bytes())"
    )
    args = ["--seed", "1234", uri, "/tmp/run-1234", "pin-value=12345"]
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, check=True, timeout=60
    ).stdout
    shown = out.split(b"\0")[-len(args) - 1 : -1]
    assert shown == [
        b"--seed",
        b"1234",
        uri.replace("pin-value=1234", "pin-value=****").encode(),
        b"/tmp/run-1234",
        b"pin-value=12345",
    ]


def test_a_wrong_passphrase_stops_the_run_before_any_check(project, tmp_path):
    priv, _ = generate_keypair(tmp_path / "k" / "signing.key", passphrase=b"right")
    project.contract("c", simple_contract())
    env = {**os.environ, "HARNESS_SIGN_KEY_PASSPHRASE": "wrong", "PYTHONPATH": str(project.root)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--sign-key", str(priv)],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert "passphrase" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project.root / "evidence").exists() or not any(
        p.name[0].isdigit() for p in (project.root / "evidence").iterdir()
    )


def test_the_environment_is_an_allowlist(monkeypatch):
    from harness.procs import redact, scrubbed_environment, secret_values

    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "OMP_NUM_THREADS": "1",
        "HARNESS_SIGN_KEY_PASSPHRASE": "p",
        "HARNESS_API_TOKEN": "t",
        "HARNESS_STAGING_CONTEXT": "ctx",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "gh",
        "MY_SERVICE_URL": "http://x",
    }
    env = scrubbed_environment(environ, ["MY_*", "HARNESS_SIGN_KEY_PASSPHRASE"])
    assert env == {
        "PATH": "/bin",
        "HOME": "/root",
        "OMP_NUM_THREADS": "1",
        "HARNESS_STAGING_CONTEXT": "ctx",
        "MY_SERVICE_URL": "http://x",
    }
    secrets = secret_values({"GITHUB_TOKEN": "ghp_abcdef123", "PATH": "/usr/bin/abc"})
    assert redact(b"token=ghp_abcdef123 path=/usr/bin/abc", secrets) == (
        b"token=[REDACTED:GITHUB_TOKEN] path=/usr/bin/abc"
    )


def test_pass_env_in_the_contract_reaches_only_that_check(project, monkeypatch):
    (project.root / "envcheck.py").write_text(
        "import os\ndef env(ctx):\n    return {'has': int('MY_SERVICE_URL' in os.environ)}\n"
    )
    monkeypatch.setenv("MY_SERVICE_URL", "http://127.0.0.1:1")
    body = two_invariants("envcheck:env", "envcheck:env", "has: {eq: 1}").replace(
        '    check: {python: "envcheck:env"}\n    expect: {has: {eq: 1}}\n  - id: INV-DEMO-002',
        '    check: {python: "envcheck:env"}\n    expect: {has: {eq: 1}}\n'
        "    pass-env: [MY_SERVICE_URL]\n  - id: INV-DEMO-002",
    )
    result = run(project, body)
    outcomes = {i.invariant_id: i.outcome for c in result.criteria for i in c.invariants}
    assert outcomes == {
        "INV-DEMO-001": InvariantOutcome.PASS,
        "INV-DEMO-002": InvariantOutcome.FAIL,
    }


# --------------------------------------------------------------------------- 3. evidence folder


def test_files_a_check_plants_in_the_evidence_are_never_sealed(hostile, tmp_path):
    """Finding 3: a planted file was sealed into the signed manifest, and the
    INCOMPLETE marker was deleted mid-run."""
    priv, pub = generate_keypair(tmp_path / "k" / "signing.key")
    from harness.signing import load_signer

    result = run(
        hostile,
        simple_contract(
            check="hostile:plant", expect="scratch_in_evidence: {eq: 0}", falsifiers=""
        ),
        evidence_root=hostile.root / "evidence",
        signer=load_signer(priv),
    )
    inv = result.criteria[0].invariants[0]
    assert inv.observations["planted"] == 4 and inv.outcome is InvariantOutcome.PASS
    run_dir = Path(result.evidence_dir)
    manifest = json.loads((run_dir / "criteria" / "AC-DEMO-001" / "manifest.json").read_text())
    assert not {"planted.txt", ".hidden", "artifacts/x/manifest.json"} & set(manifest)
    problems = verify_run(run_dir, [load_public_key(pub)])
    for rel in ("planted.txt", ".hidden", "artifacts/x/manifest.json", "planted-top.txt"):
        assert any(rel in p and "unexpected" in p for p in problems), (rel, problems)
    audit = (run_dir / "audit.jsonl").read_text()
    assert '"tamper"' in audit  # the removed marker was noticed and restored


def test_checks_work_outside_the_evidence_folder(project):
    (project.root / "where.py").write_text(
        "def where(ctx):\n    return {'scratch': str(ctx.scratch), 'dir': str(ctx.artifact_dir)}\n"
    )
    result = run(
        project,
        simple_contract(check="where:where", expect="scratch: {matches: '.'}", falsifiers=""),
        evidence_root=project.root / "evidence",
    )
    obs = result.criteria[0].invariants[0].observations
    assert str(project.root / "evidence") not in obs["scratch"]
    assert str(project.root / "evidence") not in obs["dir"]


def test_a_symlinked_artifact_is_never_copied(project, tmp_path):
    secret = tmp_path / "secret.key"
    secret.write_text("PRIVATE KEY MATERIAL")
    (project.root / "linker.py").write_text(
        "import os\n"
        "def link(ctx):\n"
        "    ctx.attach(b'fine', 'ok.txt')\n"
        f"    os.symlink({str(secret)!r}, ctx.artifact_dir / 'key.pem')\n"
        "    ctx.artifacts.append('key.pem')\n"
        "    return {'ok': 1}\n"
    )
    result = run(
        project,
        simple_contract(check="linker:link", expect="ok: {eq: 1}", falsifiers=""),
        evidence_root=project.root / "evidence",
    )
    run_dir = Path(result.evidence_dir)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY MATERIAL" not in path.read_bytes(), path
    assert (run_dir / "criteria/AC-DEMO-001/artifacts/INV-DEMO-001/ok.txt").is_file()


# --------------------------------------------------------------------------- 9. limits


def test_memory_limit_makes_a_hog_error(project):
    (project.root / "hog.py").write_text(HOSTILE)
    body = simple_contract(check="hog:hog_memory", expect="ok: {gt: 0}", falsifiers="").replace(
        "    expect:", "    limits: {memory: 1GiB}\n    expect:"
    )
    result = run(project, body)
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR
    assert "MemoryError" in inv.message and "limit 1 GiB" in inv.message


def test_output_beyond_the_limit_is_truncated_with_a_note(hostile):
    body = simple_contract(
        check="hostile:chatty", expect="ok: {eq: 1}", falsifiers="", params="{kib: 51200}"
    ).replace("    expect:", "    limits: {output: 1MiB}\n    expect:")
    result = run(hostile, body, evidence_root=hostile.root / "evidence")
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.PASS
    assert "truncated" in inv.observations["harness.output"]["stdout"]
    log = Path(result.evidence_dir) / "criteria/AC-DEMO-001/logs/INV-DEMO-001.stdout.txt"
    assert log.stat().st_size < 1024**2 + 1024
    assert b"output truncated: kept 1048576 of 52428800 bytes" in log.read_bytes()


def test_a_command_printing_700_mb_is_streamed_not_held_in_memory(project):
    """Finding 9: a command check printing 600 MB peaked at 1.8 GB; now its output
    goes to a file and the worker stays under a 512 MiB address-space limit."""
    body = (
        simple_contract(falsifiers="", expect="exit_code: {eq: 0}")
        .replace(
            "      python: demochecks:ok\n      params: {}",
            "      command: [head, -c, '700000000', /dev/zero]",
        )
        .replace("    expect:", "    limits: {memory: 512MiB, output: 1MiB}\n    expect:")
    )
    result = run(project, body, evidence_root=project.root / "evidence")
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.PASS, inv.message
    assert "truncated: kept 1048576 of 700000000" in inv.observations["harness.output"]["stdout"]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_every_process_a_check_starts_ends_with_it(hostile, tmp_path):
    pidfile = tmp_path / "pids.txt"
    body = simple_contract(
        check="hostile:spawn_daemons",
        expect="ok: {eq: 1}",
        falsifiers="",
        params=f"{{pidfile: {str(pidfile)!r}}}",
    )
    result = run(hostile, body)
    assert result.criteria[0].invariants[0].outcome is InvariantOutcome.PASS
    pids = [int(x) for x in pidfile.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]


LEAVERS = """
import json, os, pathlib, stat, subprocess, time

def exit_leaving_daemon(ctx):
    p = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (ctx.root / "left.pid").write_text(str(p.pid))
    os._exit(0)  # no record, and child_main never ends what this started

def forge_and_stay(ctx):
    # leave the worker's process group, send a passing record early, and go on
    os.setpgid(0, os.getpgid(os.getppid()))  # the fork server's group: not its own any more
    (ctx.root / "left.pid").write_text(str(os.getpid()))
    socks = []
    for f in [int(f) for f in os.listdir("/proc/self/fd")]:
        try:
            if stat.S_ISSOCK(os.fstat(f).st_mode):
                socks.append(f)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    record = {"status": "returned", "message": "", "observations": {"ok": 1},
              "artifacts": [], "metrics": [], "extra": {}, "duration": 0.0, "sources": []}
    for f in socks:
        try:
            os.write(f, json.dumps(record).encode())
            os.close(f)
        except OSError:
            pass
    time.sleep(60)
    return {"ok": 1}

def left_gone(ctx):
    # the process the previous check left (left.pid) is gone within 5 s
    deadline = time.monotonic() + 5
    while not (ctx.root / "left.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int((ctx.root / "left.pid").read_text())
    while time.monotonic() < deadline:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return {"ok": 1}
        if state in ("Z", "X"):
            return {"ok": 1}
        time.sleep(0.02)
    return {"ok": 0}
"""


def test_a_worker_that_exits_leaving_a_daemon_has_it_killed_while_the_run_goes_on(hostile):
    # the check calls os._exit without a word: its daemon (a new session) comes back to
    # the fork server, which finds it on its next look at /proc (within 0.2 s), not only
    # when the run ends; the next check sees it gone
    (hostile.root / "leavers.py").write_text(LEAVERS)
    body = two_invariants("leavers:exit_leaving_daemon", "leavers:left_gone")
    result = run(hostile, body)
    first, second = (c.invariants[0] for c in result.criteria)
    assert first.outcome is InvariantOutcome.ERROR
    assert second.outcome is InvariantOutcome.PASS, second.message


def test_a_worker_that_sends_its_record_and_leaves_its_group_is_still_killed(hostile):
    # a check that forges an early record and moves out of its process group: killing
    # the group no longer reaches it, so the worker itself is killed by its pid
    (hostile.root / "leavers.py").write_text(LEAVERS)
    body = two_invariants("leavers:forge_and_stay", "leavers:left_gone")
    result = run(hostile, body)
    first, second = (c.invariants[0] for c in result.criteria)
    assert first.outcome is InvariantOutcome.PASS  # the forged record: what it sent
    assert second.outcome is InvariantOutcome.PASS, second.message


def test_a_fifo_planted_as_a_log_does_not_hang_the_coordinator(hostile):
    body = simple_contract(check="hostile:fifo_log", expect="ok: {eq: 1}", falsifiers="")
    t0 = time.monotonic()
    result = run(hostile, body, evidence_root=hostile.root / "evidence")
    assert time.monotonic() - t0 < 30
    assert result.criteria[0].invariants[0].outcome is InvariantOutcome.PASS
    logs = Path(result.evidence_dir) / "criteria/AC-DEMO-001/logs"
    # the coordinator wrote what it read from the pipe in place of the planted FIFO
    assert (logs / "INV-DEMO-001.stdout.txt").read_text() == "printed after the fifo\n"
    assert not (logs / "INV-DEMO-001.stderr.txt").exists()  # nothing printed: no log


def test_a_check_that_links_its_folder_elsewhere_cannot_make_the_coordinator_write_there(
    hostile, tmp_path
):
    # the coordinator writes a check's log into the check's folder once it ends: a
    # check that swapped the folder for a link must not get a file there replaced
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stdout.txt").write_text("precious\n")
    body = simple_contract(
        check="hostile:swap_folder",
        expect="ok: {eq: 1}",
        falsifiers="",
        params=f"{{outside: {str(outside)!r}}}",
    )
    result = run(hostile, body, evidence_root=hostile.root / "evidence")
    assert result.criteria[0].invariants[0].outcome is InvariantOutcome.PASS
    assert (outside / "stdout.txt").read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["stdout.txt"]


def test_a_refuted_search_never_writes_its_counterexample_through_a_planted_link(hostile):
    # the coordinator saves a found counterexample into the check's artifacts folder: a
    # check that made that folder a link must not get a file elsewhere replaced
    outside = hostile.root / "outside"
    outside.mkdir()
    (outside / "counterexample.json").write_text("precious\n")
    body = simple_contract(
        check="hostile:plant_artifacts",
        expect="x: {ge: 0}",
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-002
    title: search
    kind: property
    target: INV-DEMO-001
    property: {strategy: "hostile:strategy_any_x", max_examples: 40}
""",
    )
    result = run(hostile, body, evidence_root=hostile.root / "evidence")
    prop = result.criteria[0].falsifiers[0]
    assert prop.outcome is FalsifierOutcome.REFUTED, prop.message
    assert (outside / "counterexample.json").read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["counterexample.json"]


def test_deleting_the_key_file_mid_run_changes_nothing(hostile, tmp_path):
    """The encrypted key is read at start and decrypted after the checks: a check
    that deletes (or swaps) the key file neither stops the signing nor picks the key."""
    from harness.signing import DeferredKey

    priv, pub = generate_keypair(tmp_path / "k" / "signing.key", passphrase=b"pw-123456")
    key = DeferredKey(priv, b"pw-123456")
    key.check()
    body = simple_contract(
        check="hostile:delete_key",
        expect="ok: {eq: 1}",
        falsifiers="",
        params=f"{{key: {str(priv)!r}}}",
    )
    result = run(hostile, body, evidence_root=hostile.root / "evidence", signer=key)
    assert not priv.exists()
    assert verify_run(Path(result.evidence_dir), [load_public_key(pub)]) == []


def test_a_contract_cannot_ask_for_a_secret_variable(project):
    from harness.errors import ContractError

    body = simple_contract(falsifiers="").replace(
        "    expect:", "    pass-env: [GITHUB_TOKEN]\n    expect:"
    )
    with pytest.raises(ContractError, match="GITHUB_TOKEN.*looks like a secret"):
        run(project, body)
    # listed in [tool.harness] pass-env too, it passes
    result = run(project, body, pass_env=("GITHUB_TOKEN",))
    assert result.criteria[0].invariants[0].outcome is InvariantOutcome.PASS


def test_a_check_that_kills_the_fork_server_leaves_no_survivor(hostile, tmp_path):
    pidfile = tmp_path / "survivor.pid"
    hostile.contract(
        "c",
        simple_contract(
            check="hostile:kill_server",
            expect="ok: {eq: 1}",
            falsifiers="",
            params=f"{{pidfile: {str(pidfile)!r}}}",
        ),
    )
    env = {**os.environ, "PYTHONPATH": str(hostile.root)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--no-evidence", "-j", "1"],
        cwd=hostile.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "ERROR" in proc.stdout, proc.stdout + proc.stderr
    survivor = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(survivor) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(survivor)


# --------------------------------------------------------------------------- 10. SIGKILL


def _orphans(marker: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (marker.encode() in cmd or cwd.startswith(marker)) and _alive(int(entry.name)):
            out.append(int(entry.name))
    return out


@pytest.mark.slow
def test_workers_die_with_a_sigkilled_coordinator_and_free_its_stdout(hostile):
    """Finding 10: after a SIGKILL of `harness run`, workers stayed alive (23 of 36
    kills, one for 6 minutes) holding the socket and the parent's stdout."""
    (hostile.root / "slow.py").write_text(
        "import subprocess, time\n"
        "def slow(ctx):\n"
        "    subprocess.Popen(['sleep', '120'], start_new_session=True)\n"
        "    time.sleep(30)\n"
        "    return {'ok': 1}\n"
    )
    hostile.contract("c", two_invariants("slow:slow", "slow:slow"))
    env = {**os.environ, "PYTHONPATH": str(hostile.root)}
    rng = random.Random(12)
    marker = str(hostile.root)
    left, hung = [], 0
    for _ in range(30):
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", "-j", "2", "--no-evidence"],
            cwd=hostile.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.1, 2.5))
        proc.kill()  # the coordinator only, not its process group
        proc.wait()
        t0 = time.monotonic()
        assert proc.stdout is not None
        proc.stdout.read()  # EOF only when no process holds the pipe
        if time.monotonic() - t0 > 5:
            hung += 1
        proc.stdout.close()
        deadline = time.monotonic() + 5
        while _orphans(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        left += _orphans(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    print(f"30 SIGKILLs of the coordinator: {len(left)} orphans, {hung} hung pipes")
    assert left == [] and hung == 0


# --------------------------------------------------------------------------- 11. types


def test_numpy_scalars_nan_and_wrong_types_are_judged_right(hostile):
    """Finding 11: NaN under `ne` passed, np.float32 was "not a number", a type
    mismatch was FAIL (so a mutant could be "killed" by a type error)."""
    body = simple_contract(
        check="hostile:float32_zero", expect="err: {le: 0.001}\n      nan: {ne: 0}", falsifiers=""
    )
    result = run(hostile, body)
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.FAIL and "NaN" in inv.message
    assert inv.judgements[0].ok  # the float32 error was judged as the number it is
    result = run(hostile, simple_contract(check="hostile:returns_text", falsifiers=""))
    assert result.criteria[0].invariants[0].outcome is InvariantOutcome.ERROR
    result = run(hostile, simple_contract(check="hostile:not_plain", falsifiers=""))
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR and "not plain data" in inv.message


def test_a_mutant_that_only_breaks_the_types_is_crashed_not_killed(hostile):
    body = simple_contract(
        check="hostile:honest_failure",
        expect="ok: {le: 1}",
        falsifiers="""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: the value becomes text
    kind: mutant
    target: INV-DEMO-001
    mutant:
      patch: {"hostile:honest_failure": "hostile:returns_text"}
""",
    )
    result = run(hostile, body)
    assert result.criteria[0].invariants[0].outcome is InvariantOutcome.PASS
    f = result.criteria[0].falsifiers[0]
    assert f.outcome is FalsifierOutcome.CRASHED, f
    assert result.criteria[0].verdict is Verdict.UNPROVEN
    assert any("not teeth" in r for r in result.criteria[0].reasons)


def test_a_malformed_worker_record_is_error(project):
    from harness.plan import Observed

    for wire in (
        b"[]",
        b"{",
        b'{"status": "won"}',
        b'{"status": "returned", "artifacts": ["../x"]}',
    ):
        with pytest.raises(ValueError):
            Observed.from_wire(wire)
    assert Observed.from_wire(b'{"status": "returned", "observations": {"x": NaN}}').status


def test_the_cli_keeps_working_end_to_end(project):
    project.contract("c", simple_contract())
    r = CliRunner().invoke(cli, ["run", "--no-evidence", "-j", "1"])
    assert r.exit_code == 0, r.output
