"""``services:`` under attack: a service is the code under test, so it may be hostile
(from a pull request) or merely broken. Each test is the attack or the mishap it
guards against; the services are tiny stdlib scripts, never our training service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness import services
from harness.errors import ContractError, Interrupted
from harness.loader import load_contract_set
from harness.model import FalsifierOutcome, InvariantOutcome, Location, Service
from harness.runner import run_contracts

# One service, several misbehaviours: ``python -m hosserve PORT MODE DIR``.
HOSTILE = '''
import os, signal, socket, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

def answer(n):
    return 2 * n


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/double"):
            body = str(answer(int(self.path.split("=", 1)[1]))).encode()
        else:
            body = b"ok"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/exit":
            os._exit(5)

    def log_message(self, fmt, *args):
        pass


def daemon(folder):
    """Double-fork into a new session, ignore SIGTERM, live on."""
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(f"daemon-{os.getpid()}.pid", "w") as f:  # in the project root, its cwd
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)


def drip(port):
    """Accept, answer a status line one byte at a time, never finish it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"HTTP/1.0 200 OK")
            while True:
                c.sendall(b"K")
                time.sleep(0.2)
        except OSError:
            c.close()


def main():
    port, mode, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode == "fifo":  # swap its own log for a named pipe, then fail
        log = os.readlink("/proc/self/fd/1")
        os.unlink(log)
        os.mkfifo(log)
        sys.exit(3)
    if mode == "secret":  # print a secret it was given, then fail
        print("connecting with token " + os.environ["DEMO_API_TOKEN"], flush=True)
        sys.exit(3)
    if mode == "drip":
        drip(port)
    if mode == "daemon":
        daemon(folder)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("serving", mode, flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

# ``python -m hosserve``: the module a patch names (hostile) is imported, not __main__
SERVE = "import hostile\n\nhostile.main()\n"

CHECKS = '''
import time
import urllib.request


def doubles(ctx):
    with urllib.request.urlopen(ctx.service("demo") + "/double?n=21") as r:
        return {"value": int(r.read())}


def exits(ctx):
    """Asks the service to exit, then reports a pass anyway."""
    try:
        urllib.request.urlopen(ctx.service("demo") + "/exit").read()
    except OSError:
        pass
    time.sleep(0.3)  # the socket closes a moment before the process is gone
    return {"value": 42}


def off_by_one(n):
    return 2 * n + 1
'''


def contract(
    mode: str = "ok",
    check: str = "doubles",
    ready: str = "ready: /ready",
    extra: str = "",
    falsifiers: bool = True,
    env: str = "{}",
    start_timeout: float = 5,
    stop_timeout: float = 1,
) -> str:
    mutant = textwrap.dedent(
        """
        falsifiers:
          - id: FALSIFY-HOS-001
            title: an off-by-one in the service must be caught
            kind: mutant
            target: INV-HOS-001
            mutant:
              patch: {"hostile:answer": "hoschecks:off_by_one"}
        """
    )
    return textwrap.dedent(
        f"""
        version: 1
        contract: {{name: hos, title: a contract with a hostile service}}
        services:
          demo:
            command: ["{{python}}", -m, hosserve, "{{port}}", {mode}, "{{dir}}"]
            {ready}
            env: {env}
            start_timeout: {start_timeout}
            stop_timeout: {stop_timeout}
        {extra}
        criteria:
          - id: AC-HOS-001
            title: the service doubles
            severity: blocker
            references: [test]
            invariants: [INV-HOS-001]
        invariants:
          - id: INV-HOS-001
            title: GET /double doubles
            services: [demo]
            check: {{python: "hoschecks:{check}"}}
            expect:
              value: {{eq: 42}}
        """
    ) + (mutant if falsifiers else "")


@pytest.fixture
def hosproject(project):
    (project.root / "hostile.py").write_text(HOSTILE)
    (project.root / "hosserve.py").write_text(SERVE)
    (project.root / "hoschecks.py").write_text(CHECKS)
    return project


def run(project, **options):
    contracts = load_contract_set([project.root / "contracts"])
    options.setdefault("jobs", 1)
    return run_contracts(contracts, contracts.criteria, seed=1, root=project.root, **options)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def in_thread(fn, timeout: float):
    """``fn()`` in a thread; ``(finished, result or exception)`` after ``timeout``."""
    box: list[object] = []

    def target():
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    return (not th.is_alive()), (box[0] if box else None)


def test_the_hostile_service_works_when_it_behaves(hosproject):
    hosproject.contract("hos", contract())
    crit = run(hosproject).criteria[0]
    assert crit.verdict.value == "GO", crit.reasons
    assert crit.falsifiers[0].outcome is FalsifierOutcome.KILLED


def test_a_log_swapped_for_a_fifo_does_not_hang_the_coordinator(hosproject):
    """The service knows its log (its fd 1): a named pipe in its place must not block
    the coordinator when it quotes the log's tail."""
    hosproject.contract("hos", contract(mode="fifo", falsifiers=False))
    done, result = in_thread(lambda: run(hosproject), 10)
    if not done:  # unblock the reader, so the test ends
        for fifo in Path("/tmp").glob("harness-*/services/hos.demo.log"):
            with open(fifo, "wb"):
                pass
    assert done, "the coordinator hung reading the service's log"
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR
    assert "service 'demo' exited with code 3 before it was ready" in inv.message


def test_the_log_tail_quoted_in_an_error_is_redacted(hosproject, monkeypatch, tmp_path):
    """A service given a secret (pass-env) that prints it and fails: the secret must not
    reach the error message (terminal, results.json, JUnit) unredacted, shared or private."""
    secret = "tok-0123456789-abcdef"
    monkeypatch.setenv("DEMO_API_TOKEN", secret)
    hosproject.contract("hos", contract(mode="secret"))
    result = run(hosproject, pass_env=("DEMO_API_TOKEN",), evidence_root=tmp_path / "ev")
    crit = result.criteria[0]
    inv, fal = crit.invariants[0], crit.falsifiers[0]
    assert inv.outcome is InvariantOutcome.ERROR
    assert fal.outcome is FalsifierOutcome.ERROR
    for message in (inv.message, fal.message):
        assert "connecting with token" in message
        assert secret not in message
        assert "[REDACTED:DEMO_API_TOKEN]" in message
    for path in (tmp_path / "ev").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_secret_cut_by_the_start_of_the_tail_is_not_shown_in_part(tmp_path):
    secret = "tok-0123456789-abcdef"
    log = tmp_path / "demo.log"
    log.write_bytes(b"x" * 100 + secret.encode() + b"\n" + b"y" * 40 + b"\nlast line\n")
    svc = Service("demo", "hos", ("prog",), Location("hos.yaml", 1, 1))
    inst = services.Instance(svc, "http://127.0.0.1:1", tmp_path, log)
    n = len("-abcdef\n") + 41 + len("last line\n")  # the tail starts inside the secret
    tail = inst.log_tail(n=n, redactions={secret: "DEMO_API_TOKEN"})
    assert "abcdef" not in tail and tail.endswith("last line")
    whole = inst.log_tail(redactions={secret: "DEMO_API_TOKEN"})
    assert whole.startswith("x" * 100 + "[REDACTED:DEMO_API_TOKEN] | yyy")


def hostile_processes() -> list[int]:
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"hosserve" in (proc / "cmdline").read_bytes():
                left.append(int(proc.name))
        except OSError:
            continue
    return left


def test_a_readiness_probe_that_never_finishes_is_bounded_by_start_timeout(hosproject):
    """A service that accepts and drips its answer a byte at a time: the coordinator's
    wait is bounded by start_timeout (plus one probe), not by the service's patience."""
    hosproject.contract("hos", contract(mode="drip", start_timeout=1, falsifiers=False))
    t0 = time.monotonic()
    done, result = in_thread(lambda: run(hosproject), 10)
    if not done:
        for pid in hostile_processes():
            os.kill(pid, signal.SIGKILL)
    assert done, "the readiness probe hung"
    assert time.monotonic() - t0 < 8
    inv = result.criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.ERROR
    assert "was not ready within 1 s" in inv.message, inv.message


def test_readiness_goes_straight_to_loopback_whatever_the_proxy(hosproject, monkeypatch):
    """CI machines often set http_proxy; the probe of a loopback service must not use it."""
    import urllib.request

    urllib.request.install_opener(None)  # urllib reads the proxies when it builds its opener
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    hosproject.contract("hos", contract(start_timeout=2, falsifiers=False))
    try:
        inv = run(hosproject).criteria[0].invariants[0]
    finally:
        urllib.request.install_opener(None)
    assert inv.outcome is InvariantOutcome.PASS, inv.message


def test_a_ready_path_that_is_no_url_path_is_a_contract_error(hosproject):
    hosproject.contract("hos", contract(ready='ready: "/ready now"'))
    with pytest.raises(ContractError, match=r"hos\.yaml:\d+"):
        load_contract_set([hosproject.root / "contracts"])


def test_no_daemon_a_service_forks_into_a_new_session_outlives_the_run(hosproject):
    """A library or pytest-plugin caller is no subreaper of its own: a daemon the shared
    service double-forks into a new session (ignoring SIGTERM) must still be gone."""
    from harness import procs

    procs._prctl(procs._PR_SET_CHILD_SUBREAPER, 0)  # as a fresh library caller is
    hosproject.contract("hos", contract(mode="daemon"))
    try:
        crit = run(hosproject, jobs=2).criteria[0]
        pids = [int(p.read_text()) for p in hosproject.root.glob("daemon-*.pid")]
        left = [pid for pid in pids if alive(pid)]
    finally:
        for pid in [int(p.read_text()) for p in hosproject.root.glob("daemon-*.pid")]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert crit.verdict.value == "GO", crit.reasons
    assert len(pids) == 2  # the shared instance's daemon and the mutant's private one
    assert left == []


def test_services_that_ignore_sigterm_are_stopped_together_not_one_after_another(
    hosproject, monkeypatch
):
    """Two services ignoring SIGTERM with stop_timeout 1: the run waits about 1 s
    for both, not 2 s."""
    second = textwrap.indent(
        textwrap.dedent(
            """
            other:
              command: ["{python}", -m, hosserve, "{port}", stubborn, "{dir}"]
              stop_timeout: 1
            """
        ),
        "  ",
    )
    body = contract(mode="stubborn", stop_timeout=1, falsifiers=False)
    body = body.replace("stop_timeout: 1\n", "stop_timeout: 1\n" + second, 1)
    body = body.replace("services: [demo]", "services: [demo, other]")
    hosproject.contract("hos", body)
    took: list[float] = []
    stop_all = services.stop_all

    def timed(instances):
        t0 = time.monotonic()
        stop_all(instances)
        took.append(time.monotonic() - t0)

    monkeypatch.setattr(services, "stop_all", timed)
    inv = run(hosproject).criteria[0].invariants[0]
    assert inv.outcome is InvariantOutcome.PASS, inv.message
    assert len(took) == 1 and 0.9 < took[0] < 1.8, took
    assert hostile_processes() == []


def test_ctrl_c_while_services_start_stops_them_and_keeps_their_logs(
    hosproject, monkeypatch, tmp_path
):
    def interrupted(instances, interval=0.1):
        time.sleep(0.5)  # the service has started and logged
        raise KeyboardInterrupt

    monkeypatch.setattr(services, "wait_ready", interrupted)
    hosproject.contract("hos", contract())
    with pytest.raises(Interrupted) as stopped:
        run(hosproject, evidence_root=tmp_path / "ev")
    shutil.rmtree(str(stopped.value).rsplit(" kept in ", 1)[1], ignore_errors=True)
    run_dir = next((tmp_path / "ev").iterdir())
    assert (run_dir / "INCOMPLETE").exists()
    meta = json.loads((run_dir / "run.json").read_text())
    record = meta["services"]["hos.demo"]
    assert "serving ok" in (run_dir / record["log"]).read_text()
    assert hostile_processes() == []


@pytest.mark.parametrize("first", ["while services start", "none"])
def test_a_ctrl_c_while_the_run_stops_its_services_loses_nothing(
    hosproject, monkeypatch, tmp_path, capfd, first
):
    """A Ctrl-C (a second one, or the first) while the run stops its services and writes
    the bundle: held, so the results and the verdict are still written, then delivered
    to the caller if the run had finished (a run already interrupted just ends so).
    Before, the KeyboardInterrupt escaped the cleanup: no results.json, no verdict."""
    real_stop_all = services.stop_all

    def ctrl_c_meanwhile(instances, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler here
        return real_stop_all(instances, *args, **kwargs)

    def interrupted(instances, interval=0.1):
        raise KeyboardInterrupt

    monkeypatch.setattr(services, "stop_all", ctrl_c_meanwhile)
    if first != "none":
        monkeypatch.setattr(services, "wait_ready", interrupted)
    hosproject.contract("hos", contract())
    if first == "none":  # the run finished: its bundle is whole, then the Ctrl-C lands
        with pytest.raises(KeyboardInterrupt):
            run(hosproject, evidence_root=tmp_path / "ev")
        run_dir = next((tmp_path / "ev").iterdir())
        assert json.loads((run_dir / "verdict.json").read_text())["verdict"] == "GO"
    else:
        with pytest.raises(Interrupted) as stopped:
            run(hosproject, evidence_root=tmp_path / "ev")
        shutil.rmtree(str(stopped.value).rsplit(" kept in ", 1)[1], ignore_errors=True)
    run_dir = next((tmp_path / "ev").iterdir())
    assert (run_dir / "results.json").is_file() and (run_dir / "verdict.json").is_file()
    assert (run_dir / "INCOMPLETE").exists() == (first != "none")
    assert "harness: stopping the checks and services" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    assert hostile_processes() == []


def test_a_check_whose_shared_service_died_is_an_error_never_a_pass(hosproject, tmp_path):
    """The check makes the service exit and reports a pass anyway: a result obtained
    while its service was gone is not evidence (the same for a mutant's instance)."""
    hosproject.contract("hos", contract(check="exits"))
    crit = run(hosproject, evidence_root=tmp_path / "ev").criteria[0]
    inv, fal = crit.invariants[0], crit.falsifiers[0]
    assert inv.outcome is InvariantOutcome.ERROR, inv
    assert "service 'demo' exited with code 5 during the run" in inv.message
    assert fal.outcome is FalsifierOutcome.ERROR, fal
    assert "service 'demo' exited with code 5 during the run" in fal.message
    run_dir = next((tmp_path / "ev").iterdir())
    record = json.loads((run_dir / "run.json").read_text())["services"]["hos.demo"]
    assert record["exit_code"] == 5
    assert "exited with code 5 during the run" in record["error"]


@pytest.mark.parametrize("env", ["{PYTHONPATH: elsewhere}", "{HARNESS_PATCHES: ''}"])
def test_a_service_env_cannot_unplug_the_mutant_from_its_private_instance(hosproject, env):
    """The mutant's patches reach the private instance through PYTHONPATH and
    $HARNESS_PATCHES: the service's own env adds to them, never replaces them."""
    hosproject.contract("hos", contract(env=env))
    crit = run(hosproject).criteria[0]
    assert crit.invariants[0].outcome is InvariantOutcome.PASS
    fal = crit.falsifiers[0]
    assert fal.outcome is FalsifierOutcome.KILLED, fal


def test_a_mutant_patch_the_service_cannot_apply_is_an_error_never_a_kill(hosproject):
    body = contract().replace('"hoschecks:off_by_one"', '"hoschecks:no_such_function"')
    hosproject.contract("hos", body)
    fal = run(hosproject).criteria[0].falsifiers[0]
    assert fal.outcome is FalsifierOutcome.ERROR, fal
    assert "exited with code 70 before it was ready" in fal.message
    assert "cannot apply mutant patches" in fal.message


def test_placeholders_next_to_literal_braces(hosproject):
    values = {"python": "/py", "port": "5", "dir": "/d"}
    assert services.fill("--bind=127.0.0.1:{port}", values) == "--bind=127.0.0.1:5"
    assert services.fill("{{port}}", values) == "{port}"
    assert services.fill('{{"port": {port}}}', values) == '{"port": 5}'
    assert services.fill("{{{port}}}", values) == "{5}"
    assert services.fill("{dir}", {"dir": "/tmp/a}}b{{c"}) == "/tmp/a}}b{{c"
    hosproject.contract("hos", contract(env="{CFG: '{{\"port\": {prot}}}'}"))
    with pytest.raises(ContractError, match=r"unknown placeholder \{prot\}"):
        load_contract_set([hosproject.root / "contracts"])


def test_lint_finds_a_service_module_without_importing_its_package(hosproject):
    """`{python} -m pkg.serve`: lint looks for the module, and runs no code of a
    package outside the allowed packages (not even its __init__) to do it."""
    from click.testing import CliRunner

    from harness.cli import cli

    pyproject = hosproject.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'allowed-packages = ["hoschecks"]\n')
    (hosproject.root / "evilpkg").mkdir()
    (hosproject.root / "evilpkg" / "__init__.py").write_text(
        "open('IMPORTED', 'w').write('lint ran evilpkg')\n"
    )
    (hosproject.root / "evilpkg" / "serve.py").write_text("")
    body = contract(falsifiers=False).replace("-m, hosserve", "-m, evilpkg.serve")
    hosproject.contract("hos", body)
    out = CliRunner().invoke(cli, ["lint"]).output
    assert "service 'demo'" not in out, out
    hosproject.contract("hos", body.replace("evilpkg.serve", "evilpkg.nothere"))
    out = CliRunner().invoke(cli, ["lint"]).output
    assert "service 'demo': module 'evilpkg.nothere' not found" in out, out
    assert not (hosproject.root / "IMPORTED").exists()
