"""Executors run tasks in worker processes; the local fork server is the default.

The interface is one generator: ``run(tasks)`` yields ``CheckStarted(task)`` and
``CheckDone(task, observed, logs)`` events (``harness.plan``) as they happen. An
executor never judges: ``observed`` is what the worker reported (plain data,
validated), or a ``failed`` record when the worker died (a segfault, the OOM
killer, a memory limit), overran its task's timeout, or sent something that is
not a valid record. The runner, in the coordinator, judges.

``LocalProcessExecutor`` starts one fork server (``harness.forkserver``) in a
scrubbed environment and has it fork a fresh worker for every task, at most
``jobs`` at a time. Results come back over a socket of their own as JSON of at
most ``MAX_RESULT`` bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import IO, Any, Protocol

from harness.fsutil import write_beneath
from harness.plan import CheckDone, CheckStarted, ExecutorEvent, Observed, Task, reported_cpu
from harness.procs import scrubbed_environment
from harness.worker import execute_task, log_files, task_environment

MAX_RESULT = 16 * 1024 * 1024  # bytes of one worker's JSON record
MAX_CONTAINERS = 1_000_000  # lists and objects in one record (parsing is then bounded)
START_TIMEOUT = 900.0  # seconds for the fork server to preload and say ready (a cold
# JIT cache compiles in a "module:function" preload: ~40 s for this project's kernels)


class Executor(Protocol):
    """Runs tasks. An executor may also have ``prepare() -> dict``, which the runner
    calls once before the run starts (a refusal there is an error with no bundle
    written) and whose answer it records in ``run.json`` as ``executor``; and
    ``cpu_seconds() -> dict`` (task key -> CPU seconds it measured, not the check's
    word), which the runner reads after ``shutdown`` into ``results.json``."""

    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]: ...

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers; ``kill`` (after Ctrl-C) ends them and their children now."""
        ...


_PRELOAD_WARNED: set[tuple[str, str]] = set()  # (preload, why) printed in this process


class ForkServerError(RuntimeError):
    """The fork server could not start or died."""


def parse_record(data: bytes, elapsed: float = 0.0) -> Observed:
    """A worker's JSON record, validated (``Observed.from_wire``); anything too large,
    too nested or malformed is a ``failed`` record saying so, never an exception."""
    if len(data) > MAX_RESULT:
        return Observed.failed(f"the worker's result exceeded {MAX_RESULT // 1024**2} MiB", elapsed)
    if data.count(b"[") + data.count(b"{") > MAX_CONTAINERS:
        return Observed.failed(
            f"the worker's result holds more than {MAX_CONTAINERS} lists or objects", elapsed
        )
    try:
        return Observed.from_wire(data)
    except (ValueError, ArithmeticError, RecursionError) as exc:
        return Observed.failed(f"the worker sent a malformed result: {exc}", elapsed)


def _death_reason(status: int | None) -> str:
    if status is None:
        return "worker process died without a result"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"worker process died ({name})"
    return f"worker process exited without a result (exit code {os.WEXITSTATUS(status)})"


MEMORY_KEPT = 1024**2  # bytes of a log held in memory; the rest of what is kept spills


@dataclass(eq=False)  # hashed by identity: wait() returns the ready ones
class _Log:
    """A worker's stdout or stderr, read from its pipe as it fills: the first ``cap``
    bytes kept (the first MiB in memory, the rest in an unlinked file of the
    coordinator's own), every byte counted. Nothing reaches the check's folder for a
    check that prints nothing; the rest is written there when the check ends."""

    name: str
    fd: int
    cap: int
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    open: bool = True
    spill: IO[bytes] | None = None  # a TemporaryFile once MEMORY_KEPT bytes are held

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> None:
        """Read what the pipe holds now (never blocks); closed at end of file."""
        while self.open:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                return
            room = self.cap - self.size
            self.size += len(chunk)
            if room > 0:
                self._keep(chunk[:room])

    def _keep(self, chunk: bytes) -> None:
        room = MEMORY_KEPT - len(self.data)
        if room > 0:
            self.data += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            try:
                if self.spill is None:
                    self.spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
                self.spill.write(chunk)
            except OSError:  # no room: what is held in memory is still kept
                self.cap = len(self.data) + (self.spill.tell() if self.spill else 0)

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)

    def discard(self) -> None:
        self.close()
        if self.spill is not None:
            self.spill.close()
            self.spill = None

    def chunks(self) -> Iterator[bytes]:
        yield bytes(self.data)
        spill = self.spill
        if spill is not None:
            spill.seek(0)
            yield from iter(lambda: spill.read(1 << 20), b"")

    def save(self, check_dir: Path) -> None:
        """``check_dir/<name>.txt``: the bytes kept, extended (sparse) to the true size
        so that the note on a cut log can say how much there was. Never through a
        link: the check may have replaced its folder or planted a file there (one it
        planted is replaced). A log that cannot be written (a full disk) is cut or
        left out, with a line on the coordinator's stderr; the run goes on."""
        try:
            if self.size:
                write_beneath(check_dir, f"{self.name}.txt", self.chunks(), self.size)
        except OSError as exc:
            sys.stderr.write(f"harness: could not write {check_dir / self.name}.txt: {exc}\n")
        finally:
            self.discard()


@dataclass
class _Running:
    task: Task
    sock: socket.socket
    started: float
    logs: list[_Log] = field(default_factory=list)
    credit: float = 0.0  # seconds the caller held an event while this ran (``_credit``)
    pid: int | None = None
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False
    eof_at: float = 0.0
    status: int | None = None
    exited: bool = False
    failure: str = ""


class LocalProcessExecutor:
    """Up to ``jobs`` fresh worker processes at a time, forked by one fork server.

    ``env`` is the whole environment of the fork server and so of every check
    (build it with ``harness.procs.scrubbed_environment``); ``preload`` names
    modules the server imports once before forking (e.g. numpy, numba)."""

    def __init__(
        self,
        jobs: int,
        *,
        env: Mapping[str, str] | None = None,
        preload: Sequence[str] = (),
        root: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.jobs = max(1, jobs)
        self.env = dict(env) if env is not None else None
        self.preload = tuple(preload)
        self.root = root
        self.log_dir = log_dir
        self.server: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.server_info: dict[str, Any] = {}  # its ready message; empty until then
        self._server_log: Path | None = None
        self._start_failures: list[str] = []  # after two, checks are not started at all
        self._running: dict[int, _Running] = {}
        self._by_pid: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._key_of_id: dict[int, str] = {}  # sent to the server, not yet said started
        self._key_of_pid: dict[int, str] = {}  # workers whose exit is not reported yet
        self._cpu: dict[str, float] = {}  # task key -> CPU seconds, as the server reaped it
        self._next_id = 0

    # -- the fork server ---------------------------------------------------
    def begin(self) -> None:
        """Start the fork server now, without waiting for it: its preloads (a JIT's
        warm-up, seconds) overlap the coordinator's own start (the evidence folder,
        services). The first check waits for it to say ready."""
        if self.server is None and self.root is not None:
            with contextlib.suppress(OSError):  # the first check tries again and says why
                self._spawn_server(str(self.root))

    def _start_server(self, root: str) -> None:
        self._spawn_server(root)
        self._await_server()

    def _spawn_server(self, root: str) -> None:
        self._forget_workers()
        if self.control is not None:
            self.control.close()
            self.control = None
        self.server_info = {}
        env = self.env if self.env is not None else scrubbed_environment(os.environ)
        log_dir = self.log_dir or Path(tempfile.gettempdir())
        log_dir.mkdir(parents=True, exist_ok=True)
        config = {"root": root, "preload": list(self.preload)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(log_dir / "forkserver.log", "ab") as log:
                self.server = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "harness.forkserver",
                        str(theirs.fileno()),
                        str(os.getpid()),
                        json.dumps(config),
                    ],
                    pass_fds=(theirs.fileno(),),
                    env=env,
                    cwd=root,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # Ctrl-C at the terminal reaches the coordinator
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        self._server_log = log_dir / "forkserver.log"

    def _await_server(self) -> None:
        """Wait for the spawned fork server's ready message (its preloads done)."""
        assert self.control is not None
        self.control.settimeout(START_TIMEOUT)
        try:
            hello = self.control.recv(65536)
            self.control.settimeout(None)
        except OSError as exc:  # a preload that hangs: ended; the next check tries once more
            self._abandon_server()
            self._start_failures.append(f"the fork server did not start: {exc}")
            raise ForkServerError(self._start_failures[-1]) from exc
        if not hello:
            self._abandon_server()
            self._start_failures.append(f"the fork server exited at start (see {self._server_log})")
            raise ForkServerError(self._start_failures[-1])
        self.server_info = json.loads(hello)
        for name, why in sorted(self.server_info.get("failed", {}).items()):
            # the run goes on (each check imports what it needs), but a preload that
            # does not load is a mistake in the configuration the user should see, once
            # per process (`pytest contracts/` starts a fork server per item)
            if (name, why) in _PRELOAD_WARNED:
                continue
            _PRELOAD_WARNED.add((name, why))
            print(f"harness: preload {name!r} did not load ({why}); checks import what they "
                  "need themselves. Fix [tool.harness] preload in pyproject.toml",
                  file=sys.stderr)  # fmt: skip

    def _abandon_server(self) -> None:
        self._forget_workers()
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.server is not None:
            if self.server.poll() is None:
                try:  # its own session: whatever a preload started goes with it
                    os.killpg(self.server.pid, signal.SIGKILL)
                except OSError:
                    self.server.kill()
            self.server.wait()
            self.server = None

    def _send(self, msg: tuple[Any, ...], fds: Sequence[int] = ()) -> None:
        assert self.control is not None
        socket.send_fds(self.control, [pickle.dumps(msg)], list(fds))

    # -- running -----------------------------------------------------------
    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]:
        pending = deque(tasks)
        try:
            while pending or self._running:
                events: list[ExecutorEvent] = []
                while pending and len(self._running) < self.jobs:
                    task = pending.popleft()
                    failure = self._launch(task)
                    if failure:
                        done = Observed.failed(failure)
                        events.append(CheckDone(task, done, log_files(Path(task.check_dir))))
                        continue
                    events.append(CheckStarted(task))
                events += self._collect()
                for event in events:
                    away = time.monotonic()
                    yield event
                    self._credit(time.monotonic() - away)
        except BaseException:
            self.shutdown(kill=True)
            raise

    def _credit(self, away: float) -> None:
        """While the caller held an event (a terminal paused by ^S or a pager, a slow
        evidence write), nobody read the checks' pipes: a check that filled one was
        blocked, not slow. That time does not count against its timeout."""
        if away > 0.01:
            for run in self._running.values():
                run.credit += away

    def _launch(self, task: Task) -> str:
        made: list[int] = []  # every descriptor made here, closed on a failure
        ours = None
        if len(self._start_failures) >= 2:  # one restart, not one start timeout per check
            return f"cannot start: {self._start_failures[-1]} (twice; not tried again)"
        try:
            if self.server is None or self.server.poll() is not None:
                self._start_server(task.root)
            elif not self.server_info:  # begun early: ready by now, or soon
                self._await_server()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                for _ in range(2):  # the worker's stdout and stderr
                    made += os.pipe()
                task_id = self._next_id
                self._next_id += 1
                # the task pickled apart: the server forwards the bytes to the worker,
                # which unpickles it (objects the server made would cost it page copies
                # after every fork)
                task_bytes = pickle.dumps(task)
                self._send(("run", task_id, task_bytes), [theirs.fileno(), made[1], made[3]])
                self._key_of_id[task_id] = task.key  # its CPU is reported even if it ends first
            finally:
                theirs.close()
                for w in made[1::2]:
                    os.close(w)
        except (OSError, ForkServerError, pickle.PicklingError) as exc:
            for r in made[0::2]:
                os.close(r)
            if ours is not None:
                ours.close()
            return f"cannot start: {exc}"
        pipes = [(made[0], made[1]), (made[2], made[3])]
        ours.setblocking(False)
        logs = []
        for name, (r, _) in zip(("stdout", "stderr"), pipes, strict=True):
            os.set_blocking(r, False)
            logs.append(_Log(name, r, task.limits.output))
        self._running[task_id] = _Running(task, ours, time.monotonic(), logs)
        return ""

    def _collect(self) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = []
        now = time.monotonic()
        deadlines = [r.started + r.credit + r.task.timeout for r in self._running.values()]
        deadlines += [r.eof_at + 2.0 for r in self._running.values() if r.eof]
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        waitables: list[Any] = [r.sock for r in self._running.values() if not r.eof]
        waitables += [log for r in self._running.values() for log in r.logs if log.open]
        if self.control is not None:
            waitables.append(self.control)
        ready = set(wait(waitables, timeout=timeout)) if waitables else set()
        if self.control is not None and self.control in ready:
            self._read_control()
        now = time.monotonic()
        for task_id, run in list(self._running.items()):
            for log in run.logs:
                if log in ready:
                    log.drain()
            if run.sock in ready and not run.eof:
                self._read_result(run, now)
            if run.pid is not None and run.pid in self._exits:
                run.status, run.exited = self._exits.pop(run.pid), True
            done = None
            if run.eof and (run.exited or run.data or now - run.eof_at >= 2.0):
                done = self._finish(run)
            elif not run.eof and now - run.started - run.credit >= run.task.timeout:
                self._kill(run)
                done = Observed.failed(
                    f"timed out after {run.task.timeout:g}s (raise 'timeout' in the contract "
                    "if the check needs longer)",
                    now - run.started,
                )
            if done is not None:
                if not run.exited:  # it sent its record: nothing of it may go on running
                    self._kill(run, tell_server=not run.data)
                run.sock.close()
                self._save_logs(run)
                del self._running[task_id]
                if run.pid is not None:
                    self._by_pid.pop(run.pid, None)
                events.append(CheckDone(run.task, done, log_files(Path(run.task.check_dir))))
        return events

    def _save_logs(self, run: _Running) -> None:
        """What the worker (and what it started) wrote before it ended, to its folder."""
        for log in run.logs:
            log.drain()  # the worker is gone: the pipe holds all it wrote
            log.save(Path(run.task.check_dir))

    def _read_result(self, run: _Running, now: float) -> None:
        while True:
            try:
                chunk = run.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                run.eof, run.eof_at = True, now
                return
            run.data += chunk
            if len(run.data) > MAX_RESULT:
                run.failure = f"the worker's result exceeded {MAX_RESULT // 1024**2} MiB"
                self._kill(run)
                run.data.clear()
                run.eof, run.eof_at = True, now
                return

    def _read_control(self) -> None:
        assert self.control is not None
        while True:
            try:
                self.control.setblocking(False)
                data = self.control.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            finally:
                if self.control is not None:
                    self.control.setblocking(True)
            if not data:  # the fork server died: every running task is lost
                self._server_lost()
                return
            try:
                msg = json.loads(data)
                op, pid = msg.get("op"), int(msg.get("pid", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            if op == "started":
                run = self._running.get(msg.get("id"))
                if run is None or run.eof:  # its task already ended (a timeout): end it too
                    self._send_kill(pid)
                else:
                    run.pid = pid
                    self._by_pid[pid] = msg["id"]
                key = self._key_of_id.pop(msg.get("id"), None)
                if key is not None:
                    self._key_of_pid[pid] = key
            elif op == "exited":
                if pid in self._by_pid:
                    self._exits[pid] = int(msg.get("status", 0))
                key = self._key_of_pid.pop(pid, None)
                cpu = reported_cpu(msg.get("cpu"))
                if key is not None and cpu is not None:
                    self._cpu[key] = cpu

    def _forget_workers(self) -> None:
        """The server is gone: no exit report of its workers will come."""
        self._key_of_id.clear()
        self._key_of_pid.clear()

    def _server_lost(self) -> None:
        self._forget_workers()
        for run in self._running.values():
            if not run.eof:
                run.failure = run.failure or "the fork server died"
                run.eof, run.eof_at = True, time.monotonic()
        if self.control is not None:
            self.control.close()
        self.control = None
        if self.server is not None:
            try:
                self.server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=5)
        self.server = None

    def _finish(self, run: _Running) -> Observed:
        elapsed = time.monotonic() - run.started
        if run.failure:
            return Observed.failed(run.failure, elapsed)
        if not run.data:
            return Observed.failed(_death_reason(run.status), elapsed)
        return parse_record(bytes(run.data), elapsed)

    def _kill(self, run: _Running, tell_server: bool = True) -> None:
        if run.pid is not None:
            self._send_kill(run.pid, tell_server)

    def _send_kill(self, pid: int, tell_server: bool = True) -> None:
        """Kill a worker's process group now, and have the server kill its whole tree.
        ``tell_server=False``, for a worker that sent its record: its group and the
        worker itself (a check may have moved it to another group before forging an
        early record) are killed here; what it started elsewhere is the server's once
        it has died, and the server ends it then. Its pid is not reused before the
        server has reaped it."""
        if pid <= 1:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if not tell_server:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        elif self.control is not None:
            with contextlib.suppress(OSError):
                self._send(("kill", pid))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of each finished task (user + system, of its worker and of what
        the worker waited for), as the fork server reaped it: the kernel's count, not
        the check's word. A task whose worker has not been reaped yet is absent."""
        return dict(self._cpu)

    def await_exits(self, within: float, keys: Iterable[str] | None = None) -> None:
        """Read the server's exit reports of the workers that ran ``keys`` (all by
        default), for ``within`` seconds at most (each arrives within milliseconds of its
        worker's end)."""
        wanted = None if keys is None else set(keys)

        def outstanding() -> bool:
            waiting = [*self._key_of_pid.values(), *self._key_of_id.values()]
            return any(wanted is None or k in wanted for k in waiting)

        deadline = time.monotonic() + within
        while outstanding() and self.control is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not wait([self.control], timeout=left):
                return
            self._read_control()

    def shutdown(self, kill: bool = False) -> None:
        for run in self._running.values():
            self._kill(run)
            run.sock.close()
            self._save_logs(run)  # what it printed until now: for the scratch kept on ^C
        self._running.clear()
        if not kill:
            self.await_exits(1.0)
        if self.server is not None and not self.server_info:
            self._abandon_server()  # still preloading: it would read "stop" only after
        if self.control is not None:
            try:
                self._send(("stop",))
            except OSError:
                pass
            self.control.close()
            self.control = None
        if self.server is not None:
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=5)
            self.server = None


class InlineExecutor:
    """Runs tasks in this process, one after another (debugging; no isolation:
    only for checks you trust). The record still goes through the wire format.
    Each task sees its ``env`` (check-env, pass-env, HARNESS_SCRATCH) as in a
    forked worker, and this process's environment is restored after it."""

    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]:
        for task in tasks:
            yield CheckStarted(task)
            try:
                with task_environment(task):
                    record = execute_task(task)
                observed = Observed.from_wire(record.to_wire())
            except (TypeError, ValueError) as exc:
                observed = Observed.failed(f"the result is not plain data: {exc}")
            yield CheckDone(task, observed, log_files(Path(task.check_dir)))

    def shutdown(self, kill: bool = False) -> None:
        return None
