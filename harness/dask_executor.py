"""Run checks on a Dask cluster: ``harness run --executor dask [--scheduler ADDRESS]``.

The coordinator stays where it is: it plans, judges, writes and signs. Three parts:

- ``DaskExecutor`` (here, in the coordinator): starts the Dask bridge, sends it the
  tasks, and turns what comes back, frames of JSON and bytes, into ``CheckStarted``
  and ``CheckDone`` events: it validates each record (``parse_record``), writes the
  logs and the declared artifacts into the task's check folder here, and the evidence
  writer copies them from there as it does locally. It never imports ``distributed``
  and never unpickles anything from the cluster.
- ``harness.dask_bridge`` (a process of its own): the Dask client, and the
  ``LocalCluster`` when there is no ``--scheduler``; holds every worker to the
  coordinator's digests before the first check; retries a check whose worker was lost,
  once, and notes it.
- ``harness.dask_worker`` (on each worker): runs each task in a fresh process there
  with the local executor, in a private temporary folder, and sends back bytes.

The guarantees, for users: docs/dask.md. ``distributed`` is the optional ``dask``
extra; a missing one is a one-line usage error (exit 4).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.dask_bridge import RETRY, FrameError, recv_frame, send_frame
from harness.dask_worker import MAX_TRANSFER, size_text
from harness.errors import UsageError
from harness.executor import MAX_RESULT, parse_record
from harness.fsutil import write_beneath
from harness.plan import (
    MAX_SIZE,
    CheckDone,
    CheckStarted,
    ExecutorEvent,
    Observed,
    Task,
    reported_cpu,
    safe_name,
)
from harness.procs import NEVER_PASS
from harness.worker import log_files

EXTRA = "pip install 'ml-contract-harness[dask]'"
CONNECT_TIMEOUT = 60.0  # seconds to reach the scheduler and see a first worker
STOP_TIMEOUT = 60.0  # seconds the bridge has to cancel, stop the checks and close
MAX_NOTE = 1000  # characters of the bridge's retry note kept


def require_distributed() -> None:
    """A UsageError (exit 4) naming the extra when ``distributed`` is not installed."""
    if importlib.util.find_spec("distributed") is None:
        raise UsageError(f"--executor dask needs the 'distributed' package: {EXTRA}")


class DaskExecutor:
    """Runs tasks on a Dask cluster: the one at ``scheduler``, or a ``LocalCluster`` of
    ``jobs`` worker processes of one thread each, started by ``prepare`` and closed by
    ``shutdown``. ``exclude``: folders (relative to ``root``) left out of the source
    digest, e.g. the evidence folder. ``log_dir``: where the bridge's log goes."""

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
        log_dir: Path | None = None,
    ) -> None:
        require_distributed()
        self.jobs = max(1, jobs)
        self.settings: dict[str, Any] = {
            "scheduler": scheduler,
            "jobs": self.jobs,
            "root": str(root),
            "preload": list(preload),
            "pass_env": list(pass_env),
            "exclude": list(exclude),
            "max_transfer": max_transfer,
            "connect_timeout": connect_timeout,
        }
        self.max_transfer = max_transfer
        self.log_dir = log_dir
        self.bridge: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._cpu: dict[str, float] = {}  # task key -> CPU seconds (``cpu_seconds``)

    # -- the bridge ----------------------------------------------------------
    def _start_bridge(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_dir = self.log_dir or Path(tempfile.gettempdir())
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / "dask-bridge.log"
        env = {k: v for k, v in os.environ.items() if k not in NEVER_PASS}
        with open(self.log, "ab") as log:
            self.bridge = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.dask_bridge",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C at the terminal reaches the coordinator only
            )
        theirs.close()
        self.sock = ours

    def _recv(self) -> tuple[dict[str, Any], list[bytes]]:
        assert self.sock is not None
        return recv_frame(self.sock, self.max_transfer + MAX_RESULT + (1 << 20))

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1][:300]}" if lines else ""

    # -- start -------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Start the bridge, which starts or reaches the cluster and holds every
        worker to this checkout's digests. A refusal is a UsageError (nothing ran)."""
        self._start_bridge()
        assert self.sock is not None
        try:
            send_frame(self.sock, {"op": "prepare", **self.settings})
            header, _ = self._recv()
        except (OSError, EOFError, FrameError) as exc:
            self.shutdown(kill=True)
            raise UsageError(f"the Dask bridge failed at start ({exc}){self._log_tail()}") from None
        if header.get("op") == "refused":
            self.shutdown(kill=True)
            lines = str(header.get("message", "")).splitlines() or ["refused"]
            raise UsageError(lines[0][:2000])
        info = header.get("executor")
        if header.get("op") != "ready" or not isinstance(info, dict):
            self.shutdown(kill=True)
            raise UsageError("the Dask bridge answered something else than ready at start")
        return info

    # -- running -----------------------------------------------------------
    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]:
        if self.sock is None:
            self.prepare()
        assert self.sock is not None
        expected = {t.key: t for t in tasks}
        try:
            try:
                send_frame(self.sock, {"op": "run"}, [pickle.dumps(list(expected.values()))])
            except OSError as exc:
                yield from self._fail_all(expected, f"the Dask bridge is gone ({exc})")
                return
            while expected:
                try:
                    header, blobs = self._recv()
                except (OSError, EOFError, FrameError) as exc:
                    yield from self._fail_all(
                        expected, f"the Dask bridge stopped ({exc}){self._log_tail()}"
                    )
                    return
                task = expected.get(str(header.get("key")))
                if task is None:
                    continue
                if header.get("op") == "started":
                    yield CheckStarted(task)
                elif header.get("op") == "done":
                    del expected[task.key]
                    yield self._done(task, header, blobs)
        except BaseException:
            self.shutdown(kill=True)
            raise

    def _fail_all(self, expected: dict[str, Task], message: str) -> Iterator[ExecutorEvent]:
        for task in list(expected.values()):
            del expected[task.key]
            Path(task.check_dir).mkdir(parents=True, exist_ok=True)
            yield CheckDone(task, Observed.failed(message), log_files(Path(task.check_dir)))

    def _done(self, task: Task, header: Mapping[str, Any], blobs: list[bytes]) -> CheckDone:
        check_dir = Path(task.check_dir)
        check_dir.mkdir(parents=True, exist_ok=True)
        notes = header.get("notes")
        kept = {}
        if isinstance(notes, dict) and isinstance(notes.get(RETRY), str):
            kept[RETRY] = notes[RETRY][:MAX_NOTE]
        if header.get("failure"):
            observed = Observed.failed(str(header["failure"]))
        else:
            observed = self._write_reply(task, header, blobs)
        cpu = reported_cpu(header.get("cpu"))
        if cpu is not None:
            self._cpu[task.key] = cpu
        return CheckDone(task, observed, log_files(check_dir), kept)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of each finished check, as its worker's fork server reaped it."""
        return dict(self._cpu)

    def _write_reply(self, task: Task, header: Mapping[str, Any], blobs: list[bytes]) -> Observed:
        """Validate a worker's reply and write its logs and artifacts into the task's
        check folder here; the record it carries, or a ``failed`` one."""
        check_dir = Path(task.check_dir)

        def blob(index: Any) -> bytes:
            if not isinstance(index, int) or isinstance(index, bool):
                raise ValueError("a blob index that is not a number")
            if not 0 <= index < len(blobs):
                raise ValueError(f"no blob {index}")
            return blobs[index]

        try:
            observed = parse_record(blob(header.get("record")))
            logs, artifacts = header.get("logs", {}), header.get("artifacts", [])
            if not isinstance(logs, dict) or not isinstance(artifacts, list):
                raise ValueError("logs or artifacts of the wrong type")
            if sum(len(b) for b in blobs[1:]) > self.max_transfer:
                return Observed.failed(
                    f"the Dask worker sent more than {size_text(self.max_transfer)}",
                    observed.duration,
                )
            for name in ("stdout", "stderr"):
                if name in logs:
                    index, size = logs[name]
                    data = blob(index)
                    if not isinstance(size, int) or size < len(data):
                        raise ValueError(f"the {name} log's size is not a size")
                    write_beneath(check_dir, f"{name}.txt", [data], min(size, MAX_SIZE))
            declared = {a.split("/")[0] for a in observed.artifacts}
            written: set[str] = set()
            for rel, index in artifacts:
                if (
                    not isinstance(rel, str)
                    or not safe_name(rel)
                    or rel.split("/")[0] not in declared
                    or rel in written
                ):
                    return Observed.failed(
                        f"the Dask worker sent an artifact the check did not declare: "
                        f"{str(rel)[:200]!r}",
                        observed.duration,
                    )
                write_beneath(check_dir, f"artifacts/{rel}", [blob(index)])
                written.add(rel)
        except (OSError, ValueError, TypeError) as exc:
            return Observed.failed(f"the Dask worker's reply cannot be used: {exc}")
        return observed

    # -- stop --------------------------------------------------------------
    def shutdown(self, kill: bool = False) -> None:
        """End the run on the cluster: a normal close, or (``kill``, after Ctrl-C)
        SIGTERM, on which the bridge cancels every future and stops the checks."""
        bridge, sock = self.bridge, self.sock
        self.bridge = self.sock = None
        if bridge is not None and bridge.poll() is None:
            if kill or sock is None:
                bridge.send_signal(signal.SIGTERM)
            else:
                try:
                    send_frame(sock, {"op": "close"})
                except OSError:
                    bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait(timeout=10)
        if sock is not None:
            sock.close()
