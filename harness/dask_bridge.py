"""The Dask bridge: the process that holds the Dask client for the coordinator.

Dask's messages carry pickles (a task's exception always does), so a Dask client
unpickles what the cluster sends. A check that got code into a Dask worker (say, by
rewriting a module a restarted worker imports) could then run code in whatever
process holds the client. That process is this one, never the coordinator:
``harness.dask_executor`` starts it with ``python -m harness.dask_bridge`` (its own
session, stdin from /dev/null, output to a log file, non-dumpable, dying with the
coordinator) and reads from it only frames of JSON and bytes, which it validates as
it validates a worker's record. A ``LocalCluster`` is started here too, so its
scheduler and worker processes are not the coordinator's either.

Protocol on one AF_UNIX stream socket, in frames (``send_frame``/``recv_frame``): an
8-byte length, a JSON header, then the blobs it lists. Coordinator -> bridge:
``{"op": "prepare", ...settings}``; ``{"op": "run"}`` with one blob, the pickled list
of tasks (the coordinator is trusted); ``{"op": "close"}``. SIGTERM ends a run now:
every future is cancelled and this run's fork servers on every worker are stopped.
Bridge -> coordinator: ``ready`` (``executor``: what ran the checks) or ``refused``
(``message``: one line); then per task ``started`` and ``done`` (``record``: a blob
index; ``logs``: name -> [blob index, true size]; ``artifacts``: [name, blob index];
``notes``: the retry, if any; ``cpu``: the check's CPU seconds, as the worker's fork
server reaped it; or ``failure``: why it never ran to the end).

A lost worker (the worker running a check died or was lost: ``KilledWorker``, a
closed connection) is one retry, noted; lost twice, the check fails. The scheduler
must not retry on its own (``distributed.scheduler.allowed-failures`` = 0): set for
the ``LocalCluster`` started here, required of an external scheduler.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import secrets
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from harness import procs
from harness.dask_worker import (
    WorkerSpec,
    digest_of,
    project_report,
    report_difference,
    run_on_worker,
    stop_checks,
    worker_report,
)
from harness.plan import Task, reported_cpu

RETRY = "harness.retry"  # the note a retried check's result carries
CLOSE_TIMEOUT = 20.0
# what the client takes from the cluster: plain values and bytes, never a pickled result
DESERIALIZERS = ["msgpack", "error"]
MAX_HEADER = 1024 * 1024  # bytes of one frame's JSON header
_LENGTH = struct.Struct(">Q")


class FrameError(ValueError):
    """A frame that is cut short, too large or not JSON."""


def send_frame(sock: socket.socket, header: dict[str, Any], blobs: Sequence[bytes] = ()) -> None:
    data = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)
    for blob in blobs:
        sock.sendall(blob)


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, max_blobs: int = 1 << 62) -> tuple[dict[str, Any], list[bytes]]:
    """One frame: its header and blobs (EOFError at the end; FrameError if malformed,
    with a header over ``MAX_HEADER`` or blobs over ``max_blobs`` bytes in all)."""
    try:
        (size,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    except EOFError:
        raise
    if size > MAX_HEADER:
        raise FrameError(f"a frame header of {size} bytes")
    try:
        header = json.loads(_exactly(sock, size))
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"a frame header that is not JSON ({exc})") from None
    lengths = header.get("blobs", []) if isinstance(header, dict) else None
    if not isinstance(lengths, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths
    ):
        raise FrameError("a frame header that is not an object listing its blobs")
    if sum(lengths) > max_blobs:
        raise FrameError(f"a frame of {sum(lengths)} bytes, over {max_blobs}")
    return header, [_exactly(sock, n) for n in lengths]


class Refusal(Exception):
    """The cluster cannot run this project's checks (one line, for the user)."""


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


class Bridge:
    """The Dask client (and the LocalCluster, if any) of one run."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.client: Any = None
        self.cluster: Any = None
        self.spec: WorkerSpec | None = None
        self.token = secrets.token_hex(6)
        self.futures: dict[Any, Task] = {}
        self._capacity = (0.0, 1)

    def prepare(self) -> dict[str, Any]:
        """Start or reach the cluster and hold every worker to the project's digests."""
        import dask
        import distributed

        s = self.settings
        scheduler, timeout = s.get("scheduler"), float(s.get("connect_timeout", 60))
        if not scheduler:
            jobs = int(s.get("jobs", 1))
            # the harness retries a check whose worker died, once, and records it; a
            # worker holds only the check it runs, so a lost worker loses only that one
            config = {
                "distributed.scheduler.allowed-failures": 0,
                "distributed.scheduler.worker-saturation": 1.0,
            }
            with dask.config.set(config):
                security = distributed.Security.temporary()  # TLS: no check can join
                self.cluster = distributed.LocalCluster(
                    n_workers=jobs, threads_per_worker=1, processes=True,
                    dashboard_address=":0", security=security, silence_logs=logging.ERROR,
                )  # fmt: skip
            self.client = distributed.Client(
                self.cluster, security=security, deserializers=DESERIALIZERS,
                set_as_default=False,
            )  # fmt: skip
            where = f"a LocalCluster of {jobs} worker processes"
        else:
            where = f"the Dask scheduler at {scheduler}"
            try:
                self.client = distributed.Client(
                    scheduler, timeout=timeout, deserializers=DESERIALIZERS, set_as_default=False
                )
            except (OSError, TimeoutError, ValueError) as exc:
                raise Refusal(f"cannot reach {where}: {exc}") from None
            try:
                failures = self.client.run_on_scheduler(_allowed_failures)
            except Exception as exc:  # noqa: BLE001 - any refusal of the scheduler's
                raise Refusal(
                    f"cannot read distributed.scheduler.allowed-failures from {where} ({exc!r})"
                ) from None
            if failures != 0:
                raise Refusal(
                    f"{where} re-runs a task whose worker died {failures} times "
                    "(distributed.scheduler.allowed-failures); start it with "
                    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 so that a lost check is "
                    "retried once, by the harness, and recorded (docs/dask.md)"
                )
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise Refusal(f"no Dask worker joined {where} within {timeout:g}s ({exc})") from None
        root, exclude = str(s["root"]), [str(e) for e in s.get("exclude", [])]
        mine = project_report(root, exclude)
        theirs = self.client.run(worker_report, root, exclude)
        for address, report in sorted(theirs.items()):
            problem = report_difference(mine, report if isinstance(report, dict) else {})
            if problem:
                raise Refusal(f"Dask worker {address} runs other code: {problem} (docs/dask.md)")
        self.spec = WorkerSpec(
            run_token=self.token,
            root=root,
            exclude=tuple(exclude),
            sources=digest_of(mine["sources"]),
            dependencies=digest_of(mine["dependencies"]),
            pass_env=tuple(s.get("pass_env", ())),
            preload=tuple(s.get("preload", ())),
            max_transfer=int(s["max_transfer"]),
        )
        return {
            "name": "dask",
            "scheduler": scheduler or "LocalCluster",
            "workers": {a: r.get("host", "") for a, r in sorted(theirs.items())},
            "source_digest": self.spec.sources,
            "dependency_digest": self.spec.dependencies,
        }

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[dict[str, Any], list[bytes]]]:
        """Frames for the coordinator: ``started`` and ``done`` of every task."""
        from distributed import as_completed

        pending = deque(tasks)
        attempts: dict[str, int] = {}
        lost: dict[str, str] = {}
        done = as_completed(loop=self.client.loop)
        while pending or self.futures:
            while pending and len(self.futures) < self._threads():
                task = pending.popleft()
                attempts[task.key] = attempts.get(task.key, 0) + 1
                key = f"harness-{self.token}-{task.key}-{attempts[task.key]}"
                try:
                    future = self.client.submit(
                        run_on_worker, task, self.spec, key=key, pure=False, retries=0
                    )
                except Exception as exc:  # noqa: BLE001 - a task that cannot be sent fails
                    yield self._failed(task, f"cannot submit to Dask: {exc!r}", lost)
                    continue
                self.futures[future] = task
                done.add(future)
                yield {"op": "started", "key": task.key}, []
            future = next(done)
            task = self.futures.pop(future)
            why = _lost_reason(future)
            if why and attempts[task.key] < 2:
                lost[task.key] = why
                pending.appendleft(task)  # retried at once, first in line
                continue
            if why:
                message = (
                    f"the Dask worker running it was lost twice ({lost[task.key]}; then {why}): "
                    "retried once"
                )
                yield self._failed(task, message, lost)
                continue
            yield self._received(task, future, lost)

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

    @staticmethod
    def _failed(
        task: Task, message: str, lost: dict[str, str]
    ) -> tuple[dict[str, Any], list[bytes]]:
        return {"op": "done", "key": task.key, "failure": message, "notes": _notes(task, lost)}, []

    def _received(
        self, task: Task, future: Any, lost: dict[str, str]
    ) -> tuple[dict[str, Any], list[bytes]]:
        try:
            reply = future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - e.g. a pickle the client does not take
            return self._failed(task, f"the Dask worker's reply was refused: {exc!r}", lost)
        finally:
            future.release()
        if not isinstance(reply, dict) or not isinstance(reply.get("record"), bytes):
            return self._failed(task, "the Dask worker sent a malformed reply", lost)
        blobs = [reply["record"]]
        header: dict[str, Any] = {"op": "done", "key": task.key, "record": 0, "logs": {}}
        header["artifacts"], header["notes"] = [], _notes(task, lost)
        cpu = reported_cpu(reply.get("cpu"))
        if cpu is not None:
            header["cpu"] = cpu
        try:
            for name, (data, size) in dict(reply.get("logs") or {}).items():
                header["logs"][str(name)] = [len(blobs), int(size)]
                blobs.append(bytes(data))
            for rel, data in reply.get("artifacts") or []:
                header["artifacts"].append([str(rel), len(blobs)])
                blobs.append(bytes(data))
        except (TypeError, ValueError) as exc:
            return self._failed(task, f"the Dask worker sent a malformed reply ({exc})", lost)
        return header, blobs

    def close(self, kill: bool) -> None:
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            try:
                if kill and self.futures:
                    client.cancel(list(self.futures), force=True)
                self.futures.clear()
                # this run's fork servers on every worker, and any check still running
                client.run(stop_checks, self.token, on_error="ignore")
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


def _lost_reason(future: Any) -> str:
    """Why the worker never answered (a lost or killed worker), or "" for a reply."""
    if future.status == "finished":
        return ""
    try:
        exc = future.exception(timeout=10)
    except Exception as err:  # noqa: BLE001 - cancelled, or the scheduler is gone
        exc = err
    worker = getattr(getattr(exc, "last_worker", None), "address", "")
    return f"{type(exc).__name__}" + (f" on {worker}" if worker else f": {exc}"[:200])


def _notes(task: Task, lost: dict[str, str]) -> dict[str, str]:
    if task.key not in lost:
        return {}
    return {RETRY: f"retried once: the first attempt's Dask worker was lost ({lost[task.key]})"}


def serve(sock: socket.socket) -> None:
    """Answer the coordinator until it closes the connection or says close."""
    bridge: Bridge | None = None
    killed = False
    try:
        while True:
            try:
                header, blobs = recv_frame(sock)
            except (EOFError, OSError):
                killed = True
                return
            op = header.get("op")
            if op == "prepare":
                bridge = Bridge(header)
                try:
                    info = bridge.prepare()
                except Refusal as exc:
                    send_frame(sock, {"op": "refused", "message": str(exc)})
                    continue
                send_frame(sock, {"op": "ready", "executor": info})
            elif op == "run" and bridge is not None:
                for frame, parts in bridge.run(pickle.loads(blobs[0])):
                    send_frame(sock, frame, parts)
            elif op == "close":
                return
    except BaseException:
        killed = True
        raise
    finally:
        if bridge is not None:
            bridge.close(kill=killed)


def main() -> None:
    fd, coordinator = int(sys.argv[1]), int(sys.argv[2])
    procs.make_undumpable()  # a check (a same-user process) cannot read or write us
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != coordinator:  # it died before the signal was armed
        return

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # unwinds into serve's cleanup: cancel, stop the checks

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main()
