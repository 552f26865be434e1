"""environment.json's probe: the interpreter's versions, CPU and BLAS collected by a
process of its own while the run goes on, and the same collected here if it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.environment import EnvironmentProbe, interpreter_environment

KEYS = {"python", "implementation", "platform", "packages", "cpu", "blas", "dependency_digest"}


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch):
    """Each test starts with nothing probed in this process: every probe is a process."""
    from harness import environment

    monkeypatch.setattr(environment, "_PROBED", {})


def here_as_the_cli_sees_it(monkeypatch) -> dict:
    """This interpreter's environment with sys.path as the ``harness`` command has it:
    without the checkout pytest put first (its egg-info is a distribution too)."""
    cwd = Path.cwd().resolve()
    path = [p for p in sys.path if Path(p or os.curdir).resolve() != cwd]
    monkeypatch.setattr(sys, "path", path)
    return interpreter_environment()


def test_the_probe_reports_what_this_interpreter_would(monkeypatch):
    probe = EnvironmentProbe()
    got = probe.result()
    here = here_as_the_cli_sees_it(monkeypatch)
    assert set(got) == KEYS and "probe_error" not in got
    assert got["dependency_digest"] == here["dependency_digest"]
    assert got["packages"] == here["packages"] and got["cpu"] == json.loads(json.dumps(here["cpu"]))


def test_a_probe_that_dies_is_replaced_by_collecting_here_and_says_why(monkeypatch):
    probe = EnvironmentProbe()
    assert probe.proc is not None
    probe.proc.kill()
    here = here_as_the_cli_sees_it(monkeypatch)
    got = probe.result()
    assert KEYS <= set(got) and "ended (-9)" in got["probe_error"]
    assert got["dependency_digest"] == here["dependency_digest"]


def test_a_failed_probe_imports_nothing_into_the_coordinator():
    # the fallback runs after checks ran, in the process that signs: NumPy or llvmlite
    # imported then would run files a check could have rewritten
    code = (
        "import sys\n"
        "from harness.environment import EnvironmentProbe\n"
        "p = EnvironmentProbe(); p.proc.kill(); env = p.result()\n"
        "print(sorted(m for m in ('numpy', 'llvmlite', 'numba') if m in sys.modules))\n"
        "print(env['blas'], 'numba_cpu_name' in env['cpu'], bool(env['probe_error']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "{'error': 'not collected'} False True"], out


def test_the_probe_gets_no_secret_of_the_coordinator(monkeypatch):
    # it runs while the services start: its /proc/<pid>/environ must hold nothing that
    # checks are not given (it is scrubbed like theirs, and non-dumpable as well)
    monkeypatch.setenv("MY_API_TOKEN", "s3cr3t-token-value-1234")
    probe = EnvironmentProbe()
    assert probe.proc is not None
    try:
        seen = Path(f"/proc/{probe.proc.pid}/environ").read_bytes()
    except OSError:  # already non-dumpable: not readable at all
        seen = b""
    got = probe.result()
    assert b"s3cr3t-token-value-1234" not in seen and "probe_error" not in got


def test_no_check_starts_before_the_environment_is_written(project):
    # the evidence writer waits for its probe in checks_starting: no check runs beside it
    from harness.hooks import Listener
    from harness.loader import load_contract_set
    from harness.runner import run_contracts
    from tests.harness.conftest import simple_contract

    seen: list[str] = []

    class Order(Listener):
        def checks_starting(self) -> None:
            env = list((project.root / "evidence").glob("*/environment.json"))
            seen.append(f"checks_starting:{len(env)}")

        def check_started(self, key: str, kind: str) -> None:
            seen.append("check_started")

    project.contract("c", simple_contract())
    contracts = load_contract_set([project.root / "contracts"])
    run_contracts(contracts, contracts.criteria, jobs=1, seed=7, root=project.root,
                  default_timeout=30, evidence_root=project.root / "evidence",
                  outputs=[Order()])  # fmt: skip
    assert seen[0] == "checks_starting:1" and seen.count("checks_starting:1") == 1
    assert "check_started" in seen[1:]


def test_the_probes_environment_is_a_checks_not_the_coordinators():
    from harness.environment import probe_environment

    env = probe_environment({"MY_API_TOKEN": "s3cr3t", "AWS_SECRET_ACCESS_KEY": "k", "PATH": "/b"})
    assert env == {"PATH": "/b"}


def test_a_ctrl_c_while_waiting_for_the_probe_still_leaves_environment_json(project, monkeypatch):
    # the run is interrupted in checks_starting: the bundle still holds environment.json
    # (what needs no import), covered by the run's files like every other run file
    import pytest

    from harness import environment
    from harness.loader import load_contract_set
    from harness.runner import Interrupted, run_contracts
    from tests.harness.conftest import simple_contract

    def interrupted(self, timeout=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(environment.EnvironmentProbe, "result", interrupted)
    project.contract("c", simple_contract())
    contracts = load_contract_set([project.root / "contracts"])
    with pytest.raises(Interrupted):
        run_contracts(contracts, contracts.criteria, jobs=1, seed=7, root=project.root,
                      default_timeout=30, evidence_root=project.root / "evidence")  # fmt: skip
    (run_dir,) = [p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit()]
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["probe_error"].startswith("interrupted")
    assert env["blas"] == {"error": "not collected"}
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert "environment.json" in verdict["run_files"]


def _recorded_probes(monkeypatch) -> list:
    from harness import environment

    made: list = []

    class Recorded(environment.EnvironmentProbe):
        def __init__(self) -> None:
            super().__init__()
            self.started = self.proc
            made.append(self)

    monkeypatch.setattr(environment, "EnvironmentProbe", Recorded)
    return made


def test_the_cli_starts_the_probe_before_the_contracts_load(project, monkeypatch):
    # one probe, started by `harness run` before it reads a contract, is the one the
    # evidence writer waits for: environment.json is whole, and nothing is left running
    from click.testing import CliRunner

    from harness.cli import cli
    from harness.loader import load_contract_set as real_load
    from tests.harness.conftest import simple_contract

    made = _recorded_probes(monkeypatch)
    at_load: list[int] = []

    def load(*args, **kwargs):
        at_load.append(len(made))
        return real_load(*args, **kwargs)

    monkeypatch.setattr("harness.loader.load_contract_set", load)
    project.contract("c", simple_contract())
    result = CliRunner().invoke(cli, ["run", "-j", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert at_load == [1] and len(made) == 1
    assert made[0].proc is None and made[0].started.returncode == 0
    (env_file,) = (project.root / "evidence").glob("*/environment.json")
    assert "probe_error" not in json.loads(env_file.read_text())


def test_a_run_that_never_starts_ends_its_probe(project, monkeypatch):
    # a contract that does not load: the error is the contract's, and the probe the CLI
    # started is ended (killed, reaped), not left running after the command exits
    from click.testing import CliRunner

    from harness.cli import cli

    made = _recorded_probes(monkeypatch)
    project.contract("c", "version: 1\ncontract: [not, a, mapping\n")
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code not in (0, 1) and "c.yaml" in result.output
    assert len(made) == 1 and made[0].proc is None
    assert made[0].started.returncode is not None  # ended and reaped
    assert not (project.root / "evidence").exists() or not any(
        (project.root / "evidence").glob("*/run.json")
    )


def test_the_dependency_digest_is_the_metadata_headers(monkeypatch):
    # read from each distribution's headers, not by the email parser over the whole
    # file: the same pins, so the same digest as a full parse gives
    import hashlib
    from importlib import metadata

    from harness.environment import dependency_digest, installed_distributions

    dists = list(metadata.distributions())  # a name may come twice (pytest's checkout)
    full = {(d.metadata["Name"] or "").lower(): d.version for d in dists}
    pins = sorted(f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in dists)
    assert dependency_digest() == hashlib.sha256("\n".join(pins).encode()).hexdigest()
    got = installed_distributions()
    assert got.pop("python") == sys.version.split()[0] and got == full


def test_a_process_probes_once_per_interpreter_and_environment(monkeypatch):
    # a check that runs the harness a dozen times (AC-REL-001's probe runs) waited for a
    # dozen probes: the second run in a process reuses the first's record, a copy; a
    # changed environment (what the probe would see) is probed again
    first = EnvironmentProbe()
    assert first.proc is not None
    got = first.result()
    second = EnvironmentProbe()
    assert second.proc is None and second.result() == got
    second.result()["cpu"]["model"] = "changed by a caller"
    assert EnvironmentProbe().result() == got
    monkeypatch.setenv("PYTHONHASHSEED", "7")  # passed to the probe: another environment
    third = EnvironmentProbe()
    assert third.proc is not None and "probe_error" not in third.result()


def test_a_failed_probe_is_not_remembered():
    probe = EnvironmentProbe()
    assert probe.proc is not None
    probe.proc.kill()
    assert "probe_error" in probe.result()
    again = EnvironmentProbe()
    assert again.proc is not None and "probe_error" not in again.result()
