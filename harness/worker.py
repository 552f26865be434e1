"""What runs inside a worker process: one task in, one ``Observed`` record out.

A task is an invariant's check, or a falsifier attacking one. Every task runs in
a fresh process forked by the fork server (``harness.forkserver``) and exits
afterwards, so nothing a check patches or leaves behind reaches another check.
The worker captures stdout/stderr at the file-descriptor level into the task's
check directory (outside the evidence folder), calls the binding and sends back
what it observed as plain JSON. It judges nothing: the coordinator does.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import resource
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import procs, services
from harness.evaluate import make_context, observe
from harness.falsify import run_falsifier
from harness.falsify.patching import patch_environment
from harness.plan import SCRATCH, SCRATCH_ENV, Observed, Task
from harness.sources import loaded_sources


@contextmanager
def task_environment(task: Task) -> Iterator[None]:
    """``task.env`` (check-env, pass-env, HARNESS_SCRATCH: ``plan.make_plan``) set in
    ``os.environ`` for the block; afterwards the environment is as it was before, also
    where the check changed it. A forked worker sets it for good (it exits after one
    task); the inline executor runs tasks in the coordinator, so it uses this."""
    before = dict(os.environ)
    os.environ.update(task.env)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextmanager
def captured_output(check_dir: Path, log_fds: tuple[int, int] | None = None) -> Any:
    """Send fd 1 and 2 (Python and C level) to ``log_fds`` (the coordinator's pipes,
    which it reads as they fill: ``harness.executor``), else to files in ``check_dir``.
    With ``log_fds`` (a forked worker, which exits after the check) the old fd 1 and 2,
    the fork server's log, are not kept open for the check to write into."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2)) if log_fds is None else None
    py_streams = sys.stdout, sys.stderr
    with contextlib.ExitStack() as files:
        if log_fds is not None:
            out_fd, err_fd = log_fds
        else:
            check_dir.mkdir(parents=True, exist_ok=True)
            out_fd = files.enter_context(open(check_dir / "stdout.txt", "ab")).fileno()
            err_fd = files.enter_context(open(check_dir / "stderr.txt", "ab")).fileno()
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        # Python-level writes go to the same files even if sys.stdout was replaced
        sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
        faulthandler.enable(file=sys.stderr)  # a crash leaves its traceback in stderr.txt
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = py_streams
            if saved is not None:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])


def log_files(check_dir: Path) -> dict[str, str]:
    """The check's non-empty log files: ``{"stdout": path, "stderr": path}``, and
    the log of each private service instance (``service-<name>``)."""
    out = {}
    names = ["stdout", "stderr"]
    try:
        names += sorted(p.stem for p in check_dir.glob("service-*.txt"))
    except OSError:
        pass
    for name in names:
        f = check_dir / f"{name}.txt"
        if f.is_file() and not f.is_symlink() and f.stat().st_size > 0:
            out[name] = str(f)
    return out


@contextmanager
def private_services(task: Task) -> Iterator[list[services.Instance]]:
    """For a mutant of an invariant that uses services: a private instance of each,
    started here with the mutant's patches applied inside it (after the service's own
    ``env``, which cannot unplug them), its URL and folder in this process's
    environment for the block, stopped afterwards. Yields the instances
    (``services.down`` says which is not up, and why: the task is then an ERROR)."""
    f = task.falsifier
    if f is None or f.kind != "mutant" or not task.invariant.services:
        yield []
        return
    check_dir = Path(task.check_dir)
    patches = f.spec.get("patch") or {}

    def patched(env: dict[str, str]) -> dict[str, str]:
        return patch_environment(patches, env, task.allowed, task.root)

    started = [
        services.launch(
            svc,
            check_dir / SCRATCH / f"service-{svc.name}",
            check_dir / f"service-{svc.name}.txt",
            os.environ,
            task.root,
            finish_env=patched,
        )
        for svc in task.invariant.services
    ]
    try:
        services.wait_ready(started)
        for inst in started:
            if not inst.error:
                os.environ.update(services.service_env(inst.service.name, inst.url, inst.folder))
        yield started
    finally:
        services.stop_all(started)


def execute_task(task: Task, log_fds: tuple[int, int] | None = None) -> Observed:
    """Run one task to completion in the current process; the record names the
    project source files loaded in it by then (``loaded_sources``). Its output goes
    to ``log_fds`` (stdout, stderr) if given, else to files in its check folder."""
    if task.root not in sys.path:
        sys.path.insert(0, task.root)
    check_dir = Path(task.check_dir)
    scratch = check_dir / SCRATCH
    # ctx.scratch makes it when a check first asks (a check that needs none costs no
    # directory); made up front when a check-env variable points the system under test
    # into it, or when the check's output goes to files in its folder
    if log_fds is None or any(
        str(scratch) in value for name, value in task.env.items() if name != SCRATCH_ENV
    ):
        scratch.mkdir(parents=True, exist_ok=True)
    with captured_output(check_dir, log_fds):
        t0 = time.perf_counter()
        # what a service's log may quote: the secrets this process was given to pass on
        redactions = procs.secret_values(os.environ)
        try:
            with private_services(task) as started:
                failed = services.down(started, redactions)
                if failed:
                    observed = Observed("failed", failed)
                elif task.falsifier:
                    observed = run_falsifier(task)
                else:
                    observed = observe(task, make_context(task))
                gone = "" if failed else services.down(started, redactions)
                if gone:  # what the check got while its service was gone is no evidence
                    observed = Observed("failed", gone)
        except MemoryError:
            observed = Observed("raised", _memory_message(task))
        except Exception as exc:  # the machinery broke: ERROR, never a pass
            sys.stderr.write(traceback.format_exc(limit=8))
            observed = Observed("failed", f"{type(exc).__name__}: {exc}")
        duration = time.perf_counter() - t0
    if observed.status == "raised" and observed.message.startswith("MemoryError"):
        observed = Observed("raised", _memory_message(task), extra=observed.extra)
    try:
        sources = tuple(loaded_sources(task.root))
    except Exception:  # noqa: BLE001 - names are a record of provenance, never a verdict
        sources = ()
    return Observed(
        observed.status,
        observed.message,
        observed.observations,
        observed.artifacts,
        observed.metrics,
        observed.extra,
        duration,
        sources,
    )


def _memory_message(task: Task) -> str:
    limit = task.limits.memory
    size = f"{limit / 1024**3:.3g} GiB" if limit else "none"
    return (
        f"MemoryError: the check ran out of memory (limit {size}; raise "
        "'limits: {memory: ...}' on the invariant or [tool.harness] limits if it needs more)"
    )


def child_main(
    task: Task | bytes, result_fd: int, server_pid: int, log_fds: tuple[int, int] | None = None
) -> None:
    """The body of a fresh worker process forked by the fork server: set up the
    sandbox, run ``task`` (or the Task these bytes pickle: from the coordinator, via the
    server), its output to ``log_fds``, kill whatever the check left running, send the
    record on ``result_fd`` and exit. Never returns."""
    code = 0
    try:
        if isinstance(task, bytes):
            task = pickle.loads(task)  # the coordinator's own pickle
        assert isinstance(task, Task)
        os.setpgrp()  # its own process group: a timeout kills the check's children too
        procs.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != server_pid:  # the server died before prctl took effect
            os._exit(1)
        procs.become_subreaper()  # daemons and new sessions the check starts come back here
        procs.make_undumpable()  # inherited from the server; said again for clarity
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        if task.limits.memory:
            resource.setrlimit(resource.RLIMIT_AS, (task.limits.memory, task.limits.memory))
        os.environ.update(task.env)  # check-env, pass-env, HARNESS_SCRATCH (plan.make_plan)
        try:
            os.chdir(task.root)
        except OSError:
            pass
        observed = execute_task(task, log_fds)
        try:
            data = observed.to_wire()
        except (TypeError, ValueError) as exc:
            data = Observed("raised", f"the result is not plain data: {exc}").to_wire()
        _end_descendants()
        _send(result_fd, data)
    except BaseException as exc:  # noqa: BLE001 - report anything, then exit
        code = 1
        try:
            _end_descendants()
            _send(result_fd, Observed("failed", f"worker: {type(exc).__name__}: {exc}").to_wire())
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


def _end_descendants() -> None:
    """Every process the check started, in any session, ends with it."""
    for _ in range(5):
        if not procs.descendants(os.getpid()):
            break
        procs.kill_tree(os.getpid(), include_self=False)
        time.sleep(0.01)
        procs.reap_children()
    procs.reap_children()


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.close(fd)
