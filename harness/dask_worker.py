"""What runs on a Dask worker for ``harness run --executor dask``, and the digests a
worker is held to (``harness.dask_executor`` has the whole picture).

``run_on_worker`` is the Dask task: it hands one task to a ``LocalProcessExecutor(1)``
of its own (a fork server started on the worker in a scrubbed environment, kept for
one run and one Dask thread, forking a fresh process per check with the check's
timeout and limits), with the check folder remapped to a private temporary folder,
and returns the record, the logs and the declared artifacts as bytes.

``project_report`` is what every worker answers before the first check (and each task
checks again, once per run and worker process): the sha256 of the project's source
files (``harness.sources.project_sources``) and its installed distributions. A
worker's project root is ``$HARNESS_PROJECT_ROOT`` on the worker, else the
coordinator's root path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import procs
from harness.environment import installed_distributions
from harness.executor import LocalProcessExecutor
from harness.fsutil import MAX_ARTIFACT, declared_files, read_capped
from harness.plan import CheckDone, Observed, Task
from harness.procs import scrubbed_environment
from harness.sources import project_sources

MAX_TRANSFER = 256 * 1024**2  # bytes of logs and artifacts one check sends back
ROOT_ENV = "HARNESS_PROJECT_ROOT"  # on a worker: where its copy of the project is


def size_text(n: int) -> str:
    """``256 MiB``, or a byte count when it is not a whole number of MiB."""
    return f"{n // 1024**2} MiB" if n >= 1024**2 and n % 1024**2 == 0 else f"{n} bytes"


def digest_of(mapping: Mapping[str, str]) -> str:
    """One sha256 over a name -> value mapping (sorted by name)."""
    text = json.dumps(sorted(mapping.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def worker_root(coordinator_root: str) -> Path:
    """Where the project is on this machine: ``$HARNESS_PROJECT_ROOT``, else the
    coordinator's root path (a checkout at the same place, or a LocalCluster)."""
    return Path(os.environ.get(ROOT_ENV) or coordinator_root)


def project_report(root: str | Path, exclude: Sequence[str]) -> dict[str, Any]:
    """The digests a worker is held to: its project's source files and its
    installed distributions (and the host, for messages)."""
    path = Path(root)
    report: dict[str, Any] = {"root": str(path), "host": socket.gethostname()}
    if not path.is_dir():
        report["error"] = f"no project folder {path} (set {ROOT_ENV} on the worker)"
        return report
    report["sources"] = project_sources(path, exclude)
    report["dependencies"] = installed_distributions()
    return report


def worker_report(coordinator_root: str, exclude: Sequence[str]) -> dict[str, Any]:
    """``project_report`` of this worker's project (run on every worker by ``client.run``)."""
    return project_report(worker_root(coordinator_root), exclude)


def _listed(names: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def report_difference(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """What differs between the coordinator's report and a worker's, or ""."""
    if theirs.get("error"):
        return str(theirs["error"])
    where = f"{theirs.get('root')} on {theirs.get('host')}"
    a, b = mine.get("sources", {}), theirs.get("sources", {})
    if not isinstance(b, dict) or digest_of(a) != digest_of(b):
        b = b if isinstance(b, dict) else {}
        parts = []
        changed = sorted(n for n in set(a) & set(b) if a[n] != b[n])
        if changed:
            parts.append(f"changed there: {_listed(changed)}")
        if set(a) - set(b):
            parts.append(f"missing there: {_listed(sorted(set(a) - set(b)))}")
        if set(b) - set(a):
            parts.append(f"only there: {_listed(sorted(set(b) - set(a)))}")
        return (
            f"its source digest differs: the project's .py files in {where} are not "
            f"this checkout's ({'; '.join(parts)}); deploy the same commit to every worker"
        )
    a, b = mine.get("dependencies", {}), theirs.get("dependencies", {})
    if not isinstance(b, dict) or digest_of(a) != digest_of(b):
        b = b if isinstance(b, dict) else {}
        names = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
        shown = [f"{n} {b.get(n, 'absent')} there, {a.get(n, 'absent')} here" for n in names]
        return (
            f"its dependency digest differs: the installed distributions on "
            f"{theirs.get('host')} are not this environment's ({_listed(shown)}); "
            "install the same versions on every worker"
        )
    return ""


@dataclass(frozen=True)
class WorkerSpec:
    """What every Dask task carries besides its ``Task``: how to run it on a worker."""

    run_token: str  # one per run: the worker's fork servers and digest checks are per run
    root: str  # the coordinator's project root (a worker's default root)
    exclude: tuple[str, ...]  # folders, relative to the root, left out of the source digest
    sources: str  # the digests every worker must match
    dependencies: str
    pass_env: tuple[str, ...] = ()  # [tool.harness] pass-env: the worker's own values
    preload: tuple[str, ...] = ()
    max_transfer: int = MAX_TRANSFER


_lock = threading.Lock()
_verified: dict[str, str] = {}  # run token -> "" (this worker matches) or the difference
_executors: dict[int, tuple[tuple[Any, ...], LocalProcessExecutor]] = {}  # by thread


def _verify(spec: WorkerSpec, root: Path) -> str:
    """ "" when this worker's project and distributions have the run's digests."""
    with _lock:
        if spec.run_token not in _verified:
            report = project_report(root, spec.exclude)
            if report.get("error"):
                _verified[spec.run_token] = str(report["error"])
            elif digest_of(report["sources"]) != spec.sources:
                _verified[spec.run_token] = (
                    f"its source digest differs: the project's .py files in {root} are not "
                    "the coordinator's"
                )
            elif digest_of(report["dependencies"]) != spec.dependencies:
                _verified[spec.run_token] = (
                    "its dependency digest differs: the installed distributions are not "
                    "the coordinator's"
                )
            else:
                _verified[spec.run_token] = ""
        return _verified[spec.run_token]


def _executor_for(spec: WorkerSpec, root: Path) -> LocalProcessExecutor:
    """This Dask thread's fork server for this run (started on first use)."""
    key = (spec.run_token, str(root), spec.preload, spec.pass_env)
    ident = threading.get_ident()
    with _lock:
        cached = _executors.get(ident)
    if cached is not None and cached[0] == key:
        return cached[1]
    if cached is not None:
        _end(cached[1])
    executor = LocalProcessExecutor(
        1,
        env=scrubbed_environment(os.environ, spec.pass_env),
        preload=spec.preload,
        root=root,
        log_dir=Path(tempfile.mkdtemp(prefix="harness-dask-forkserver-")),
    )
    with _lock:
        _executors[ident] = (key, executor)
    return executor


def stop_checks(run_token: str) -> int:
    """End this run's fork servers on this worker and every check they run (run on
    every worker by ``client.run`` when a run ends or is interrupted). A fork server
    kills its whole tree on SIGTERM. Returns how many were stopped."""
    with _lock:
        mine = [(i, e) for i, (k, e) in _executors.items() if k[0] == run_token]
        for ident, _ in mine:
            del _executors[ident]
        _verified.pop(run_token, None)
    for _, executor in mine:
        _end(executor)
    return len(mine)


def _end(executor: LocalProcessExecutor) -> None:
    """Stop a fork server from any thread (it kills its whole tree on SIGTERM) and
    remove its log folder."""
    server = executor.server
    if server is not None and server.poll() is None:
        try:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if executor.log_dir is not None:
        shutil.rmtree(executor.log_dir, ignore_errors=True)


def remap(task: Task, check_dir: Path, root: Path) -> Task:
    """``task`` with its check folder moved to ``check_dir`` (the worker's own) and its
    project root to ``root``: the variables naming its scratch folder and the options
    naming folders of the project follow."""
    old_dir, old_root = task.check_dir, task.root

    def rebased(value: Any) -> Any:
        if isinstance(value, str) and (value == old_root or value.startswith(old_root + "/")):
            return str(root) + value[len(old_root) :]
        return value

    return dataclasses.replace(
        task,
        check_dir=str(check_dir),
        root=str(root),
        env={k: v.replace(old_dir, str(check_dir)) for k, v in task.env.items()},
        options={k: rebased(v) for k, v in task.options.items()},
    )


def _reply(observed: Observed, **parts: Any) -> dict[str, Any]:
    return {"record": observed.to_wire(), "logs": {}, "artifacts": [], **parts}


def pack(observed: Observed, task: Task, cap: int) -> dict[str, Any]:
    """The record, the logs and the declared artifacts of a finished check, as bytes
    (at most ``cap`` of logs and artifacts; over it, a ``failed`` record naming it)."""
    check_dir = Path(task.check_dir)
    logs: dict[str, list[Any]] = {}
    total = 0
    for name in ("stdout", "stderr"):
        data, size = read_capped(check_dir / f"{name}.txt", task.limits.output)
        if size:
            logs[name] = [data, size]
            total += len(data)
    over = Observed.failed(
        f"the check's logs and artifacts come to more than the {size_text(cap)} a Dask "
        "worker sends back for one check (attach less, or run it with the local executor)",
        observed.duration,
    )
    if total > cap:
        return _reply(over)
    artifacts: list[list[Any]] = []
    for name in dict.fromkeys(observed.artifacts):  # a name attached twice is sent once
        for rel, path in declared_files(check_dir / "artifacts", name):
            data, size = read_capped(path, min(MAX_ARTIFACT, cap - total + 1))
            if size > MAX_ARTIFACT:
                continue  # too big to seal: left out, as the local executor's evidence does
            total += size
            if total > cap:
                return _reply(over, logs=logs)
            artifacts.append([rel, data])
    return _reply(observed, logs=logs, artifacts=artifacts)


def run_on_worker(task: Task, spec: WorkerSpec) -> dict[str, Any]:
    """The Dask task: run ``task`` in a fresh process on this worker and return what it
    left as bytes. Never raises: any failure is a ``failed`` record."""
    procs.make_undumpable()  # a check (a same-user process) cannot read this worker
    root = worker_root(spec.root)
    problem = _verify(spec, root)
    if problem:
        return _reply(Observed.failed(f"Dask worker {_worker_name()}: {problem}"))
    tmp = Path(tempfile.mkdtemp(prefix="harness-dask-task-"))
    try:
        local = remap(task, tmp / "check", root)
        observed = Observed.failed("the worker's executor returned no result")
        executor = _executor_for(spec, root)
        for event in executor.run([local]):
            if isinstance(event, CheckDone):
                observed = event.observed
        reply = pack(observed, local, spec.max_transfer)
        executor.await_exits(0.5, [local.key])  # its CPU, as the fork server reaped it
        cpu = executor.cpu_seconds().get(local.key)
        if cpu is not None:
            reply["cpu"] = cpu
        return reply
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return _reply(Observed.failed(f"the Dask worker could not run the check: {exc!r}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:  # noqa: BLE001 - a name for a message only
        return socket.gethostname()
