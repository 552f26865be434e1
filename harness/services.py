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
  them all at once (SIGTERM to each process group, SIGKILL after its
  ``stop_timeout``) when the checks are done, before anything is signed; and seals
  its log into the evidence. A service that does not become ready makes the checks
  that need it ERROR, with its log's tail (redacted); they are never run against
  nothing, and never SKIP. A check that ends when a service it used has exited is
  an ERROR too: what it got from a dead service is no evidence.
- A **mutant** falsifier gets a **private** instance, started in the mutant's own
  worker with the mutant's patches applied inside the service process and every
  Python process it starts (``harness.falsify.patching.patch_environment``, applied
  after the service's own ``env``); it ends with the worker, and its log is that
  check's ``service-<name>`` log.

Services bind to loopback: the checks that reach them run on this machine. The
readiness probe is one GET on that port, read to its status line within two seconds:
no proxy, no redirect, whatever the coordinator's environment says.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.model import Service

# ``{{`` and ``}}`` are braces, ``{name}`` a placeholder: one pass, left to right, as
# str.format reads them (so '{{"port": {port}}}' is '{"port": 8000}')
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
PLACEHOLDERS = ("python", "port", "dir")
LOG_TAIL = 2000  # bytes of a service's log quoted in an error
PROBE_TIMEOUT = 2.0  # seconds one readiness probe may take, answer included


class ServiceUnavailable(RuntimeError):
    """A check asked for a service its invariant does not name, or one not running."""


def env_prefix(name: str) -> str:
    """``HARNESS_SERVICE_<NAME>_`` (upper case, ``-`` as ``_``)."""
    return "HARNESS_SERVICE_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def service_env(name: str, url: str, folder: Path | str) -> dict[str, str]:
    """The variables that hand a check a service: ``..._URL`` and ``..._DIR``."""
    prefix = env_prefix(name)
    return {prefix + "URL": url, prefix + "DIR": str(folder)}


def placeholders(text: str) -> list[str]:
    """The names of the placeholders in ``text`` (``{{`` and ``}}`` are braces)."""
    return [m.group(1) for m in PLACEHOLDER.finditer(text) if m.group(1) is not None]


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with ``{python}``, ``{port}``, ``{dir}`` filled in (``{{`` is a brace)."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        return m.group(0)[0] if name is None else values.get(name, m.group(0))

    return PLACEHOLDER.sub(one, text)


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
    error: str = ""  # why it is not usable (did not start, not ready in time, exited)
    exit_code: int | None = None
    stopped: bool = False

    def log_tail(self, n: int = LOG_TAIL, redactions: Mapping[str, str] | None = None) -> str:
        """The last lines of its log (at most ``n`` bytes), redacted of ``redactions``
        (``{value: name}``). The service can replace its log: never read through a
        link, nor from a pipe planted in its place."""
        try:
            fd = os.open(self.log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return ""
            size = st.st_size
            os.lseek(fd, max(0, size - n), os.SEEK_SET)
            data = os.read(fd, n)
        except OSError:
            return ""
        finally:
            os.close(fd)
        if size > n and redactions:  # a secret cut at the start would escape redaction
            data = data[max(len(v.encode(errors="surrogateescape")) for v in redactions) :]
        text = procs.redact(data, redactions or {}).decode(errors="replace")
        return " | ".join(line for line in text.strip().splitlines()[-12:] if line.strip())

    def failure(self, redactions: Mapping[str, str] | None = None) -> str:
        """The one-line reason a check that needs it is an ERROR (its log's tail
        redacted of ``redactions``)."""
        tail = self.log_tail(redactions=redactions)
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
    finish_env: Callable[[dict[str, str]], dict[str, str]] | None = None,
) -> Instance:
    """Start ``service`` on a free loopback port, in its own session, with ``env``
    (the caller's base) plus the service's own variables, then ``finish_env`` of
    that (what the caller's variables must win over, a mutant's patches); its stdout
    and stderr go to ``log``. Returns at once (``wait_ready`` waits)."""
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    values = {"python": sys.executable, "port": str(port), "dir": str(folder)}
    argv = [fill(a, values) for a in service.command]
    full_env = dict(env)
    full_env.update({k: fill(v, values) for k, v in service.env})
    if finish_env is not None:
        full_env = finish_env(full_env)
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


def _answers(inst: Instance, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Whether ``inst`` is ready now, and what it answered, within ``timeout`` seconds
    in all. Only the status line of ``GET ready`` is read, straight from the loopback
    port: no proxy of the environment, no redirect followed, no body waited for."""
    path, port = inst.service.ready, int(inst.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    head = b""
    try:
        with socket.create_connection(("127.0.0.1", port), min(timeout, 1.0)) as s:
            if path is None:
                return True, "accepts connections"
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode("ascii", "replace")
            )
            while b"\n" not in head and len(head) < 1024:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(1024)
                if not chunk:
                    break
                head += chunk
    except OSError as exc:  # refused, reset, or the deadline passed (TimeoutError)
        why = exc.strerror or str(exc) or type(exc).__name__
        return False, f"port closed ({why})" if path is None else f"GET {path}: {why}"
    status = head.split(b"\n", 1)[0].split()
    if len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1].isdigit():
        code = int(status[1])
        moved = " (not followed: name the path it leads to)" if code // 100 == 3 else ""
        return 200 <= code < 300, f"GET {path} answered {code}{moved}"
    return False, f"GET {path}: no HTTP status line (got {head[:60]!r})"


def wait_ready(instances: Sequence[Instance], interval: float = 0.1) -> None:
    """Poll every instance until it is ready, has exited, or is past its
    ``start_timeout``; a failed one gets its ``error`` (and is stopped)."""
    waiting = [i for i in instances if not i.error and i.proc is not None]
    while waiting:
        for inst in list(waiting):
            assert inst.proc is not None
            code = inst.proc.poll()
            if code is not None:
                inst.exit_code = code
                inst.error = f"exited with code {code} before it was ready"
                waiting.remove(inst)
                continue
            left = inst.service.start_timeout - (time.monotonic() - inst.started)
            ok, said = _answers(inst, min(PROBE_TIMEOUT, max(0.1, left)))
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


def alive(inst: Instance) -> bool:
    """Whether ``inst`` is up: started, ready and not stopped. One that has exited on
    its own since it was ready gets its ``error`` and ``exit_code`` here."""
    if inst.error or inst.stopped or inst.proc is None:
        return False
    code = inst.proc.poll()
    if code is None:
        return True
    inst.exit_code = code
    inst.error = f"exited with code {code} during the run"
    return False


def down(instances: Iterable[Instance], redactions: Mapping[str, str] | None = None) -> str:
    """Why the ones of ``instances`` that are not up are not ("; "-joined ``failure``,
    its log's tail redacted of ``redactions``); "" when every one is up."""
    out = [i.failure(redactions) for i in instances if not alive(i) and i.error]
    return "; ".join(out)


def stop(inst: Instance) -> None:
    """``stop_all([inst])``."""
    stop_all([inst])


def stop_all(instances: Iterable[Instance]) -> None:
    """SIGTERM to every service's process group at once; SIGKILL to what is left of
    each after its ``stop_timeout``; then every process it started is killed. One
    that had exited on its own is recorded so (``alive``)."""
    t0 = time.monotonic()
    live = []
    for inst in instances:
        if inst.stopped or inst.proc is None:
            inst.stopped = True
            continue
        alive(inst)
        inst.stopped = True
        try:
            os.killpg(inst.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        live.append(inst)
    for inst in live:
        proc = inst.proc
        assert proc is not None
        timeout = inst.service.stop_timeout
        try:
            code = proc.wait(timeout=max(0.0, t0 + timeout - time.monotonic()))
            inst.exit_code = code if inst.exit_code is None else inst.exit_code
        except subprocess.TimeoutExpired:
            _note(inst, f"no exit {timeout:g} s after SIGTERM; SIGKILL")
            procs.kill_tree(proc.pid)
            try:
                inst.exit_code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what it started in its session goes too
        except (ProcessLookupError, PermissionError):
            pass


def _note(inst: Instance, text: str) -> None:
    """Append ``[harness: text]`` to the service's log, if it is still a regular file
    (never through a link, never blocking on a pipe the service planted there)."""
    try:
        fd = os.open(inst.log, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.write(fd, f"\n[harness: {text}]\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def start_all(
    services: Sequence[Service],
    work: Path,
    env: Mapping[str, str],
    cwd: str | Path,
    memory: int | None = None,
    into: dict[str, Instance] | None = None,
) -> dict[str, Instance]:
    """Start every service at once and wait until each is ready (or failed):
    ``{service.key: Instance}``, filled into ``into`` as each starts (so a caller
    interrupted meanwhile can stop what started). Folders and logs go under ``work``."""
    out: dict[str, Instance] = {} if into is None else into
    for svc in services:
        out[svc.key] = launch(svc, work / svc.key, work / f"{svc.key}.log", env, cwd, memory=memory)
    wait_ready(list(out.values()))
    return out
