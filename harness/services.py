"""Live services a contract's checks talk to (``services:`` in a contract).

A contract declares a service by the command that starts it::

    services:
      training:
        command: ["{python}", -m, kernels.cli, serve, --port, "{port}", --evidence, "{dir}"]
        ready: /readyz          # GET-polled until 2xx (omitted: until the port accepts)
        env: {APP_MODE: test}   # on top of the checks' scrubbed environment
        start_timeout: 60
        stop_timeout: 20

and an invariant uses it with ``services: [training]``. ``{python}`` is the
coordinator's interpreter, ``{port}`` a free loopback port, ``{dir}`` a fresh folder
of the service's own.

- The coordinator starts one **shared** instance of each service the run needs,
  before the first check, all at once; waits for readiness; hands each check of an
  invariant that names it the base URL (``ctx.service(name)``,
  ``$HARNESS_SERVICE_<NAME>_URL``) and the folder (``ctx.service_dir(name)``); stops
  it (SIGTERM to its process group, SIGKILL after ``stop_timeout``) when the checks
  are done, before anything is signed; and seals its log into the evidence. A
  service that does not become ready makes the checks that need it ERROR, with its
  log's tail; they are never run against nothing, and never SKIP.
- A **mutant** falsifier gets a **private** instance, started in the mutant's own
  worker with the mutant's patches applied inside the service process and every
  Python process it starts (``harness.falsify.patching.patch_environment``); it ends
  with the worker, and its log is that check's ``service-<name>`` log.

Services bind to loopback: the checks that reach them run on this machine.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.model import Service

PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]*)\}(?!\})")
PLACEHOLDERS = ("python", "port", "dir")
LOG_TAIL = 2000  # characters of a service's log quoted in an error


class ServiceUnavailable(RuntimeError):
    """A check asked for a service its invariant does not name, or one not running."""


def env_prefix(name: str) -> str:
    """``HARNESS_SERVICE_<NAME>_`` (upper case, ``-`` as ``_``)."""
    return "HARNESS_SERVICE_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def service_env(name: str, url: str, folder: Path | str) -> dict[str, str]:
    """The variables that hand a check a service: ``..._URL`` and ``..._DIR``."""
    prefix = env_prefix(name)
    return {prefix + "URL": url, prefix + "DIR": str(folder)}


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with ``{python}``, ``{port}``, ``{dir}`` filled in (``{{`` is a brace)."""
    out = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
    return out.replace("{{", "{").replace("}}", "}")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    """One started service process (``launch``)."""

    service: Service
    url: str
    folder: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    ready_s: float | None = None  # seconds from start to ready
    error: str = ""  # why it is not usable (did not start, not ready in time)
    exit_code: int | None = None
    stopped: bool = False

    def log_tail(self, n: int = LOG_TAIL) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - n))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.strip().splitlines()[-12:] if line.strip())

    def failure(self) -> str:
        """The one-line reason a check that needs it is an ERROR."""
        tail = self.log_tail()
        return f"service '{self.service.name}' {self.error}" + (
            f"; its log ends: {tail}" if tail else "; its log is empty"
        )

    def record(self) -> dict[str, object]:
        """What the evidence says of it (``run.json``)."""
        return {
            "command": list(self.service.command),
            "url": self.url,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 3),
            "error": self.error or None,
            "exit_code": self.exit_code,
        }


def launch(
    service: Service,
    folder: Path,
    log: Path,
    env: Mapping[str, str],
    cwd: str | Path,
    memory: int | None = None,
) -> Instance:
    """Start ``service`` on a free loopback port, in its own session, with ``env``
    (the caller's base) plus the service's own variables; its stdout and stderr go
    to ``log``. Returns at once (``wait_ready`` waits)."""
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    values = {"python": sys.executable, "port": str(port), "dir": str(folder)}
    argv = [fill(a, values) for a in service.command]
    full_env = dict(env)
    full_env.update({k: fill(v, values) for k, v in service.env})
    inst = Instance(service, f"http://127.0.0.1:{port}", folder, log)

    def child_setup() -> None:  # in the child, before exec
        procs.set_parent_death_signal(signal.SIGKILL)
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    try:
        with open(log, "ab") as out:
            inst.proc = subprocess.Popen(
                argv,
                cwd=str(cwd),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_setup,  # noqa: PLW1509 - only prctl and setrlimit
            )
    except OSError as exc:
        inst.error = f"did not start: {argv[0]}: {exc.strerror or exc}"
    return inst


def _answers(inst: Instance) -> tuple[bool, str]:
    """Whether ``inst`` is ready now, and what it answered."""
    path = inst.service.ready
    if path is None:
        try:
            with socket.create_connection(("127.0.0.1", int(inst.url.rsplit(":", 1)[1])), 1):
                return True, "accepts connections"
        except OSError as exc:
            return False, f"port closed ({exc.strerror or exc})"
    import urllib.error  # here: this module is imported where no service is started
    import urllib.request

    try:
        with urllib.request.urlopen(inst.url + path, timeout=2) as r:  # noqa: S310 - loopback
            return 200 <= r.status < 300, f"GET {path} answered {r.status}"
    except urllib.error.HTTPError as exc:
        return False, f"GET {path} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"GET {path}: {getattr(reason, 'strerror', None) or reason}"


def wait_ready(instances: Sequence[Instance], interval: float = 0.1) -> None:
    """Poll every instance until it is ready, has exited, or is past its
    ``start_timeout``; a failed one gets its ``error`` (and is stopped)."""
    waiting = [i for i in instances if not i.error and i.proc is not None]
    last: dict[int, str] = {}
    while waiting:
        for inst in list(waiting):
            assert inst.proc is not None
            code = inst.proc.poll()
            if code is not None:
                inst.exit_code = code
                inst.error = f"exited with code {code} before it was ready"
                waiting.remove(inst)
                continue
            ok, said = _answers(inst)
            last[id(inst)] = said
            elapsed = time.monotonic() - inst.started
            if ok:
                inst.ready_s = elapsed
                waiting.remove(inst)
            elif elapsed > inst.service.start_timeout:
                inst.error = (
                    f"was not ready within {inst.service.start_timeout:g} s (last: {said}; "
                    "raise start_timeout in the contract if it needs longer)"
                )
                stop(inst)
                waiting.remove(inst)
        if waiting:
            time.sleep(interval)


def stop(inst: Instance) -> None:
    """SIGTERM to the service's process group; SIGKILL to what is left after its
    ``stop_timeout``; then every process it started is killed."""
    if inst.stopped or inst.proc is None:
        inst.stopped = True
        return
    inst.stopped = True
    proc = inst.proc
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        code = proc.wait(timeout=inst.service.stop_timeout)
        inst.exit_code = code if inst.exit_code is None else inst.exit_code
    except subprocess.TimeoutExpired:
        with open(inst.log, "ab") as out:
            out.write(
                f"\n[harness: no exit {inst.service.stop_timeout:g} s after SIGTERM; "
                "SIGKILL]\n".encode()
            )
        procs.kill_tree(proc.pid)
        try:
            inst.exit_code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what it started in its session goes too
    except (ProcessLookupError, PermissionError):
        pass


def start_all(
    services: Sequence[Service],
    work: Path,
    env: Mapping[str, str],
    cwd: str | Path,
    memory: int | None = None,
) -> dict[str, Instance]:
    """Start every service at once and wait until each is ready (or failed):
    ``{service.key: Instance}``. Folders and logs go under ``work``."""
    out: dict[str, Instance] = {}
    for svc in services:
        out[svc.key] = launch(svc, work / svc.key, work / f"{svc.key}.log", env, cwd, memory=memory)
    wait_ready(list(out.values()))
    return out
