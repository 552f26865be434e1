"""``services:``: the harness starts a contract's live services, hands checks their URLs,
captures their logs into the evidence and stops them; a mutant gets a private instance
with the mutant applied inside the service process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.errors import ContractError, UsageError
from harness.loader import load_contract_set
from harness.model import FalsifierOutcome, InvariantOutcome
from harness.runner import run_contracts
from harness.verify import verify_run

# A tiny real HTTP service: stdlib only, so it starts in a fraction of a second.
SERVICE = '''
import json, os, sys, signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(n):
    """What GET /double?n= returns."""
    return 2 * n


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready":
            body, code = b"{}", 200
        elif self.path.startswith("/double"):
            n = int(self.path.split("=", 1)[1])
            body, code = json.dumps({"value": answer(n)}).encode(), 200
        elif self.path == "/env":
            body, code = json.dumps({k: v for k, v in os.environ.items()
                                     if k.startswith("DEMO_")}).encode(), 200
        else:
            body, code = b"{}", 404
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("served " + (fmt % args) + "\\n")


def main():
    if os.environ.get("DEMO_CRASH"):
        sys.stderr.write("demo service: cannot open its model file\\n")
        sys.exit(3)
    print("demo service starting", flush=True)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("demo service stopped", flush=True)
'''

# Run as ``python -m demoserve``: a script's own module is ``__main__``, which a mutant
# naming ``demosvc:answer`` would not reach.
SERVE = "import demosvc\n\ndemosvc.main()\n"

SVC_CHECKS = """
import json, urllib.request


def doubles(ctx):
    base = ctx.service("demo")
    with urllib.request.urlopen(base + "/double?n=21") as r:
        value = json.loads(r.read())["value"]
    with urllib.request.urlopen(base + "/env") as r:
        env = json.loads(r.read())
    return {"value": value, "env_mode": env.get("DEMO_MODE", ""), "env_names": sorted(env),
            "dir_exists": ctx.service_dir("demo").is_dir()}


def off_by_one(n):
    return 2 * n + 1


def no_service(ctx):
    return {"url": ctx.service("other")}
"""


def contract(env: str = "{DEMO_MODE: test}", extra_falsifiers: str = "") -> str:
    return textwrap.dedent(
        f"""
        version: 1
        contract: {{name: svc, title: a contract with a live service}}
        services:
          demo:
            command: ["{{python}}", -m, demoserve, "{{port}}"]
            ready: /ready
            env: {env}
            start_timeout: 20
            stop_timeout: 5
        criteria:
          - id: AC-SVC-001
            title: the service doubles
            severity: blocker
            references: [test]
            invariants: [INV-SVC-001]
        invariants:
          - id: INV-SVC-001
            title: GET /double doubles
            services: [demo]
            check: {{python: svcchecks:doubles}}
            expect:
              value: {{eq: 42}}
              env_mode: {{eq: test}}
              dir_exists: {{eq: true}}
        falsifiers:
          - id: FALSIFY-SVC-001
            title: an off-by-one in the service must be caught
            kind: mutant
            target: INV-SVC-001
            mutant:
              patch: {{"demosvc:answer": "svcchecks:off_by_one"}}
        {extra_falsifiers}
        """
    )


@pytest.fixture
def svcproject(project):
    (project.root / "demosvc.py").write_text(SERVICE)
    (project.root / "demoserve.py").write_text(SERVE)
    (project.root / "svcchecks.py").write_text(SVC_CHECKS)
    return project


def run(project, **options):
    contracts = load_contract_set([project.root / "contracts"])
    return run_contracts(contracts, contracts.criteria, seed=1, root=project.root, **options)


def test_a_shared_service_is_started_handed_to_checks_logged_and_stopped(svcproject):
    svcproject.contract("svc", contract())
    r = CliRunner().invoke(cli, ["run", "-j", "2", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "service svc.demo: ready at http://127.0.0.1:" in r.output
    run_dir = next((svcproject.root / "evidence").glob("2*"))
    results = json.loads((run_dir / "results.json").read_text())
    crit = results["criteria"][0]
    assert crit["verdict"] == "GO", crit
    assert crit["invariants"][0]["observations"]["value"] == 42
    # the mutant ran against a private instance with the patch applied inside it
    fal = crit["falsifiers"][0]
    assert fal["outcome"] == "KILLED", fal
    assert "value" in fal["message"]
    # the shared instance's log is sealed with the run; the private one's with the check
    meta = json.loads((run_dir / "run.json").read_text())
    svc = meta["services"]["svc.demo"]
    assert svc["error"] is None and svc["url"].startswith("http://127.0.0.1:")
    assert svc["exit_code"] == 0  # stopped by SIGTERM, cleanly
    log = (run_dir / svc["log"]).read_text()
    assert "demo service starting" in log and "GET /double?n=21" in log
    assert "demo service stopped" in log
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert svc["log"] in verdict["run_files"]
    private = run_dir / "criteria" / "AC-SVC-001" / "logs" / "FALSIFY-SVC-001.service-demo.txt"
    assert "GET /double?n=21" in private.read_text()
    manifest = json.loads((private.parent.parent / "manifest.json").read_text())
    assert "logs/FALSIFY-SVC-001.service-demo.txt" in manifest
    problems = [p for p in verify_run(run_dir, []) if "unsigned (no signatures)" not in p]
    assert problems == []


def test_a_service_that_does_not_start_makes_its_checks_error_with_its_log(svcproject):
    svcproject.contract("svc", contract(env="{DEMO_MODE: test, DEMO_CRASH: '1'}"))
    result = run(svcproject, jobs=1)
    crit = result.criteria[0]
    inv = crit.invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR, inv
    assert "service 'demo' exited with code 3 before it was ready" in inv.message
    assert "cannot open its model file" in inv.message  # the log's tail
    fal = crit.falsifiers[0]  # the private instance fails the same way: never a kill
    assert fal.outcome is FalsifierOutcome.ERROR, fal
    assert "cannot open its model file" in fal.message
    assert crit.verdict.value == "NO-GO"


def test_a_service_never_ready_is_stopped_after_its_start_timeout(svcproject):
    body = (
        contract()
        .replace("ready: /ready", "ready: /missing")
        .replace("start_timeout: 20", "start_timeout: 1.5")
    )
    svcproject.contract("svc", body)
    inv = run(svcproject, jobs=1, profile="fast").criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR
    assert "was not ready within 1.5 s (last: GET /missing answered 404" in inv.message


def test_a_check_asking_for_an_undeclared_service_errors_naming_the_fix(svcproject):
    body = contract().replace("svcchecks:doubles", "svcchecks:no_service")
    svcproject.contract("svc", body)
    inv = run(svcproject, jobs=1, profile="fast").criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR
    assert "has no service 'other'" in inv.message and "services: [other]" in inv.message


def test_an_unknown_service_name_or_placeholder_is_a_contract_error(svcproject):
    body = contract().replace("services: [demo]", "services: [dmeo]")
    svcproject.contract("svc", body)
    with pytest.raises(ContractError) as err:
        load_contract_set([svcproject.root / "contracts"])
    text = str(err.value)
    assert "INV-SVC-001 uses service 'dmeo'" in text and "did you mean demo?" in text
    svcproject.contract("svc", contract().replace('"{port}"]', '"{prot}"]'))
    with pytest.raises(ContractError, match=r"unknown placeholder \{prot\}"):
        load_contract_set([svcproject.root / "contracts"])


def test_services_are_refused_with_a_remote_dask_scheduler(svcproject):
    svcproject.contract("svc", contract())
    with pytest.raises(UsageError, match="loopback only"):
        run(svcproject, executor_name="dask", scheduler="tcp://192.0.2.1:8786")


def service_processes() -> list[str]:
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"demoserve" in (proc / "cmdline").read_bytes():
                left.append(proc.name)
        except OSError:
            continue
    return left


def test_the_service_gets_no_secret_and_is_gone_before_the_key_is_read(
    svcproject, monkeypatch, tmp_path
):
    """A service runs the code under test: it must not see the coordinator's secrets,
    and it must have ended before the signing key is loaded."""
    monkeypatch.setenv("DEMO_API_TOKEN", "s3cr3t-value-123456")
    svcproject.contract("svc", contract())
    seen: list[list[str]] = []

    def load_signer():
        seen.append(service_processes())
        return None

    result = run(svcproject, jobs=2, evidence_root=tmp_path / "ev", signer=load_signer)
    crit = result.criteria[0]
    assert crit.verdict.value == "GO", crit.reasons
    assert "DEMO_API_TOKEN" not in crit.invariants[0].observations["env_names"]
    assert crit.invariants[0].observations["env_names"] == ["DEMO_MODE"]
    assert seen == [[]]  # the signer was asked for once, with no service left running


def test_no_service_process_outlives_the_run(svcproject):
    svcproject.contract("svc", contract())
    result = run(svcproject, jobs=2)
    assert result.criteria[0].verdict.value == "GO"
    assert service_processes() == []


def test_lint_names_a_service_program_or_module_that_is_not_there(svcproject):
    svcproject.contract("svc", contract().replace("-m, demoserve", "-m, demoserv"))
    r = CliRunner().invoke(cli, ["lint"])
    assert r.exit_code == 4, r.output
    assert "svc.yaml:" in r.output and "service 'demo': module 'demoserv' not found" in r.output
    svcproject.contract("svc", contract().replace('"{python}", -m, demoserve', "no-such-prog"))
    r = CliRunner().invoke(cli, ["lint"])
    assert "service 'demo': program 'no-such-prog' is not on PATH" in r.output, r.output
    svcproject.contract("svc", contract())
    assert CliRunner().invoke(cli, ["lint"]).exit_code == 0
