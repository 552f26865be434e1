"""Run checks on a Dask cluster: ``harness run --executor dask [--scheduler ADDRESS]``.

The coordinator (``harness.runner``) stays where it is: it plans, judges, writes and
signs. A Dask worker only runs tasks, with the guarantees of the local pool:

- **a fresh process per check on the worker.** The Dask task (``run_on_worker``)
  hands the task to a ``LocalProcessExecutor(1)`` of its own: a fork server started
  on the worker in a scrubbed environment (the worker's own, less its secrets) forks
  one worker per check, with the check's timeout, limits and the killing of its
  children enforced there. The fork server lives for one run and one Dask thread.
- **no shared filesystem.** The check runs with its check folder remapped to a
  private temporary folder of the worker. What comes back is bytes: the JSON record,
  the two logs (each capped at the output limit, with its true size) and the files of
  the artifacts the check declared, at most ``MAX_TRANSFER`` bytes in all (more is a
  ``failed`` record naming the cap). The executor writes them into the coordinator's
  check folder and the evidence writer copies them from there as it does locally;
  the signing key is never part of a task.
- **a lost worker is one retry, recorded.** When the worker running a check dies or
  is lost (``KilledWorker``, a closed connection), the check is submitted once more
  and the result says so (``harness.retry``); lost twice, it is ERROR. The
  scheduler must not retry on its own (``distributed.scheduler.allowed-failures``
  = 0: set for the ``LocalCluster`` this module starts, and required of an
  external scheduler).
- **the same code everywhere.** Before the first check, every worker reports the
  digest of the project's source files (``harness.sources.project_sources``: every
  ``.py`` file under its project root, outside hidden folders, Python environments
  and the evidence folder) and of its installed distributions and Python version;
  a worker that differs from the coordinator stops the run before it starts (exit 4,
  naming the worker and what differs). Each task checks its worker again (once per
  run and worker process), so a worker that joins later is held to the same digests.
  A worker's project root is ``$HARNESS_PROJECT_ROOT`` on the worker, else the
  coordinator's root path.

``distributed`` is an optional dependency (the ``dask`` extra), imported only here and
only when a Dask executor is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import procs
from harness.environment import installed_distributions
from harness.errors import UsageError
from harness.executor import MAX_RESULT, LocalProcessExecutor, parse_record
from harness.fsutil import MAX_ARTIFACT, declared_files, read_capped
from harness.plan import MAX_SIZE, CheckDone, CheckStarted, ExecutorEvent, Observed, Task, safe_name
from harness.procs import scrubbed_environment
from harness.sources import project_sources
from harness.worker import log_files

EXTRA = "pip install 'ml-contract-harness[dask]'"
MAX_TRANSFER = 256 * 1024**2  # bytes of logs and artifacts one check sends back
ROOT_ENV = "HARNESS_PROJECT_ROOT"  # on a worker: where its copy of the project is
CONNECT_TIMEOUT = 60.0  # seconds to reach the scheduler and see a first worker
CLOSE_TIMEOUT = 20.0
RETRY = "harness.retry"  # the note a retried check's result carries
# what the coordinator's client takes from the cluster: plain values, never a pickle
DESERIALIZERS = ["msgpack", "error"]


def require_distributed() -> None:
    """A UsageError (exit 4) naming the extra when ``distributed`` is not installed."""
    if importlib.util.find_spec("distributed") is None:
        raise UsageError(f"--executor dask needs the 'distributed' package: {EXTRA}")


# --------------------------------------------------------------------------- digests


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


# --------------------------------------------------------------------------- the worker side


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
        cached[1].shutdown(kill=True)
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
        server = executor.server
        if server is not None and server.poll() is None:
            try:
                server.send_signal(signal.SIGTERM)
            except OSError:
                pass
    return len(mine)


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
        f"the check's logs and artifacts come to more than the {cap // 1024**2} MiB a Dask "
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
        for event in _executor_for(spec, root).run([local]):
            if isinstance(event, CheckDone):
                observed = event.observed
        return pack(observed, local, spec.max_transfer)
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


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


# --------------------------------------------------------------------------- the coordinator side


class DaskExecutor:
    """Runs tasks on a Dask cluster: the one at ``scheduler``, or a ``LocalCluster`` of
    ``jobs`` worker processes of one thread each, started by ``prepare`` and closed by
    ``shutdown``. ``exclude``: folders (relative to ``root``) left out of the source
    digest, e.g. the evidence folder."""

    def __init__(
        self,
        jobs: int,
        *,
        root: Path,
        scheduler: str | None = None,
        preload: Sequence[str] = (),
        pass_env: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_transfer: int = MAX_TRANSFER,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        require_distributed()
        self.jobs = max(1, jobs)
        self.root = Path(root)
        self.scheduler = scheduler
        self.preload = tuple(preload)
        self.pass_env = tuple(pass_env)
        self.exclude = tuple(exclude)
        self.max_transfer = max_transfer
        self.connect_timeout = connect_timeout
        self.client: Any = None
        self.cluster: Any = None
        self.spec: WorkerSpec | None = None
        self.token = secrets.token_hex(6)
        self._futures: dict[Any, tuple[Task, float]] = {}
        self._capacity = (0.0, 1)

    # -- start -------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Start or reach the cluster and hold every worker to this checkout's
        digests. A UsageError (nothing has run) says what is wrong."""
        import dask
        import distributed

        if self.scheduler is None:
            # the harness retries a check whose worker died, once, and records it; a
            # worker holds only the check it runs, so a lost worker loses only that one
            settings = {
                "distributed.scheduler.allowed-failures": 0,
                "distributed.scheduler.worker-saturation": 1.0,
            }
            with dask.config.set(settings):
                security = distributed.Security.temporary()  # TLS: no check can join
                self.cluster = distributed.LocalCluster(
                    n_workers=self.jobs,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    security=security,
                    silence_logs=logging.CRITICAL,
                )
            self.client = distributed.Client(
                self.cluster, security=security, deserializers=DESERIALIZERS,
                set_as_default=False,
            )  # fmt: skip
            where = f"a LocalCluster of {self.jobs} worker processes"
        else:
            where = f"the Dask scheduler at {self.scheduler}"
            try:
                self.client = distributed.Client(
                    self.scheduler, timeout=self.connect_timeout,
                    deserializers=DESERIALIZERS, set_as_default=False,
                )  # fmt: skip
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(f"cannot reach {where}: {exc}") from None
            self._require_no_scheduler_retries(where)
        try:
            self.client.wait_for_workers(1, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise UsageError(
                f"no Dask worker joined {where} within {self.connect_timeout:g}s ({exc})"
            ) from None
        mine = project_report(self.root, self.exclude)
        theirs = self.client.run(worker_report, str(self.root), list(self.exclude))
        for address, report in sorted(theirs.items()):
            problem = report_difference(mine, report if isinstance(report, dict) else {})
            if problem:
                raise UsageError(f"Dask worker {address} runs other code: {problem} (docs/dask.md)")
        self.spec = WorkerSpec(
            run_token=self.token,
            root=str(self.root),
            exclude=self.exclude,
            sources=digest_of(mine["sources"]),
            dependencies=digest_of(mine["dependencies"]),
            pass_env=self.pass_env,
            preload=self.preload,
            max_transfer=self.max_transfer,
        )
        return {
            "name": "dask",
            "scheduler": self.scheduler or "LocalCluster",
            "workers": {a: r.get("host", "") for a, r in sorted(theirs.items())},
            "source_digest": self.spec.sources,
            "dependency_digest": self.spec.dependencies,
        }

    def _require_no_scheduler_retries(self, where: str) -> None:
        try:
            failures = self.client.run_on_scheduler(_allowed_failures)
        except Exception as exc:  # noqa: BLE001 - any refusal of the scheduler's
            raise UsageError(
                f"cannot read distributed.scheduler.allowed-failures from {where} ({exc!r})"
            ) from None
        if failures != 0:
            raise UsageError(
                f"{where} re-runs a task whose worker died {failures} times "
                "(distributed.scheduler.allowed-failures); start it with "
                "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 so that a lost check is "
                "retried once, by the harness, and recorded (docs/dask.md)"
            )

    # -- running -----------------------------------------------------------
    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]:
        if self.client is None:
            self.prepare()
        from distributed import as_completed

        pending = deque(tasks)
        attempts: dict[str, int] = {}
        lost: dict[str, str] = {}
        done = as_completed(loop=self.client.loop)
        try:
            while pending or self._futures:
                while pending and len(self._futures) < self._threads():
                    task = pending.popleft()
                    attempts[task.key] = attempts.get(task.key, 0) + 1
                    failure = self._submit(task, attempts[task.key], done)
                    if failure:
                        yield self._failed(task, failure, lost)
                        continue
                    yield CheckStarted(task)
                future = next(done)
                task, started = self._futures.pop(future)
                why = self._lost_reason(future)
                if why and attempts[task.key] < 2:
                    lost[task.key] = why
                    pending.appendleft(task)  # retried at once, first in line
                    continue
                if why:
                    yield self._failed(
                        task,
                        f"the Dask worker running it was lost twice ({lost[task.key]}; then "
                        f"{why}): retried once",
                        lost,
                    )
                    continue
                yield self._received(task, future, time.monotonic() - started, lost)
        except BaseException:
            self.shutdown(kill=True)
            raise

    def _threads(self) -> int:
        """How many checks the cluster runs at once (asked at most once a second)."""
        asked, n = self._capacity
        if time.monotonic() - asked > 1.0:
            try:
                n = max(1, sum(self.client.nthreads().values()))
            except Exception:  # noqa: BLE001 - keep the last answer
                pass
            self._capacity = (time.monotonic(), n)
        return n

    def _submit(self, task: Task, attempt: int, done: Any) -> str:
        try:
            future = self.client.submit(
                run_on_worker, task, self.spec, key=f"harness-{self.token}-{task.key}-{attempt}",
                pure=False, retries=0,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a task that cannot be sent is its failure
            return f"cannot submit to Dask: {exc!r}"
        self._futures[future] = (task, time.monotonic())
        done.add(future)
        return ""

    @staticmethod
    def _lost_reason(future: Any) -> str:
        """Why the worker never answered (a lost or killed worker), or "" for a reply."""
        if future.status == "finished":
            return ""
        try:
            exc = future.exception(timeout=10)
        except Exception as err:  # noqa: BLE001 - cancelled, or the scheduler is gone
            exc = err
        worker = getattr(getattr(exc, "last_worker", None), "address", "")
        text = f"{type(exc).__name__}" + (f" on {worker}" if worker else f": {exc}"[:200])
        return text

    def _failed(self, task: Task, message: str, lost: Mapping[str, str]) -> CheckDone:
        Path(task.check_dir).mkdir(parents=True, exist_ok=True)
        return CheckDone(
            task, Observed.failed(message), log_files(Path(task.check_dir)), _notes(task, lost)
        )

    def _received(
        self, task: Task, future: Any, elapsed: float, lost: Mapping[str, str]
    ) -> CheckDone:
        try:
            reply = future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - e.g. a pickle the client does not take
            return self._failed(task, f"the Dask worker's reply was refused: {exc!r}", lost)
        finally:
            future.release()
        observed = self._write_reply(task, reply, elapsed)
        return CheckDone(task, observed, log_files(Path(task.check_dir)), _notes(task, lost))

    def _write_reply(self, task: Task, reply: Any, elapsed: float) -> Observed:
        """Validate a worker's reply and write its logs and artifacts into the task's
        check folder here; the record it carries, or a ``failed`` one."""
        check_dir = Path(task.check_dir)
        check_dir.mkdir(parents=True, exist_ok=True)
        if not isinstance(reply, dict) or not isinstance(reply.get("record"), bytes):
            return Observed.failed("the Dask worker sent a malformed reply", elapsed)
        observed = parse_record(reply["record"][: MAX_RESULT + 1], elapsed)
        logs, artifacts = reply.get("logs", {}), reply.get("artifacts", [])
        if not isinstance(logs, dict) or not isinstance(artifacts, (list, tuple)):
            return Observed.failed("the Dask worker sent a malformed reply", elapsed)
        total = 0
        try:
            for name in ("stdout", "stderr"):
                if name not in logs:
                    continue
                data, size = logs[name]
                if not isinstance(data, bytes) or not isinstance(size, int) or size < len(data):
                    return Observed.failed(f"the Dask worker sent a malformed {name} log", elapsed)
                total += len(data)
                _write_new(check_dir / f"{name}.txt", data, min(size, MAX_SIZE))
            declared = {a.split("/")[0] for a in observed.artifacts}
            written: set[str] = set()
            for rel, data in artifacts:
                total += len(data) if isinstance(data, bytes) else 0
                if total > self.max_transfer:
                    return Observed.failed(
                        f"the Dask worker sent more than {self.max_transfer // 1024**2} MiB",
                        elapsed,
                    )
                if (
                    not isinstance(rel, str)
                    or not isinstance(data, bytes)
                    or not safe_name(rel)
                    or rel.split("/")[0] not in declared
                    or rel in written
                ):
                    return Observed.failed(
                        f"the Dask worker sent an artifact the check did not declare: {rel!r}"[
                            :300
                        ],
                        elapsed,
                    )
                _write_new(check_dir / "artifacts" / rel, data)
                written.add(rel)
        except (OSError, ValueError, TypeError) as exc:
            return Observed.failed(f"cannot write what the Dask worker sent: {exc}", elapsed)
        return observed

    # -- stop --------------------------------------------------------------
    def shutdown(self, kill: bool = False) -> None:
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            try:
                if kill and self._futures:
                    client.cancel(list(self._futures), force=True)
                self._futures.clear()
                # this run's fork servers on every worker, and any check still running
                client.run(stop_checks, self.token, wait=True, on_error="ignore")
            except Exception:  # noqa: BLE001 - the cluster may be gone already
                pass
            try:
                client.close(timeout=CLOSE_TIMEOUT)
            except Exception:  # noqa: BLE001
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=CLOSE_TIMEOUT)
            except Exception:  # noqa: BLE001
                pass


def _notes(task: Task, lost: Mapping[str, str]) -> dict[str, str]:
    if task.key not in lost:
        return {}
    return {RETRY: f"retried once: the first attempt's Dask worker was lost ({lost[task.key]})"}


def _write_new(path: Path, data: bytes, size: int | None = None) -> None:
    """Write ``data`` to a new file at ``path`` (never through a link, never over a
    file); ``size`` larger than the data extends it, sparse, to the size the worker's
    file had (a log cut at the output limit keeps its true size for the note)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
        if size is not None and size > len(data):
            os.ftruncate(fd, size)
    finally:
        os.close(fd)
