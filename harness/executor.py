"""Executors run tasks in worker processes; the local process pool is the default.

The interface is one generator: ``run(tasks)`` yields ``CheckStarted(task)`` and
``CheckDone(task, result)`` events (``harness.plan``) as they happen. A worker that dies (a
segfault, the OOM killer) or overruns its task's timeout is killed with its
whole process group and its task becomes ERROR; the run goes on. Tasks marked
``fresh`` (mutants, faults) get a worker of their own that exits afterwards, so
nothing they patch can leak into another check.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from harness.plan import CheckDone, CheckStarted, ExecutorEvent, Task
from harness.worker import execute_task, failure_result

WORKER_NAME = "harness-worker"


class Executor(Protocol):
    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]: ...

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers; ``kill`` (after Ctrl-C) ends them and their children now."""
        ...


def _worker_main(conn: Connection) -> None:
    os.setpgrp()  # its own process group: a timeout kills the check's children too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            result = execute_task(task)
        except BaseException as exc:  # never let a task take the worker loop down silently
            result = failure_result(task, f"{type(exc).__name__}: {exc}", 0.0)
        conn.send(result)
        if task.fresh:
            return


class _Worker:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn: Connection = parent
        # not daemonic: a check may itself run the harness (a nested pool)
        self.process = ctx.Process(
            target=_worker_main, args=(child,), daemon=False, name=WORKER_NAME
        )
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.started = 0.0

    def kill(self) -> None:
        pid = self.process.pid
        if pid is not None and self.process.is_alive():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


def _death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process died ({name})"
    return f"worker process exited unexpectedly (exit code {code})"


class LocalProcessExecutor:
    """A pool of ``jobs`` forked worker processes."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)
        self._ctx = mp.get_context("fork")
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []

    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]:
        pending = deque(tasks)
        try:
            while pending or self._busy:
                while pending and len(self._busy) < self.jobs:
                    task = pending.popleft()
                    worker = self._worker_for(task)
                    worker.task, worker.started = task, time.monotonic()
                    try:
                        worker.conn.send(task)
                    except (BrokenPipeError, OSError) as exc:
                        worker.kill()
                        yield CheckDone(task, failure_result(task, f"cannot start: {exc}", 0.0))
                        continue
                    self._busy.append(worker)
                    yield CheckStarted(task)
                yield from self._collect()
        except BaseException:
            self.shutdown(kill=True)
            raise

    def _worker_for(self, task: Task) -> _Worker:
        if task.fresh or not self._idle:
            if len(self._idle) + len(self._busy) >= self.jobs and self._idle:
                self._idle.pop().stop()
            return _Worker(self._ctx)
        return self._idle.pop()

    def _collect(self) -> Iterator[ExecutorEvent]:
        now = time.monotonic()
        deadline = min(w.started + w.task.timeout for w in self._busy if w.task)
        waitables: list[Any] = [w.conn for w in self._busy]
        waitables += [w.process.sentinel for w in self._busy]
        ready = set(wait(waitables, timeout=max(0.0, deadline - now)))
        now = time.monotonic()
        for worker in list(self._busy):
            task = worker.task
            assert task is not None
            elapsed = now - worker.started
            result = None
            if worker.conn in ready:
                try:
                    result = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join(timeout=1)
                    result = failure_result(task, _death_reason(worker.process.exitcode), elapsed)
                    worker.kill()
                    self._busy.remove(worker)
                    yield CheckDone(task, result)
                    continue
                self._busy.remove(worker)
                if task.fresh:
                    worker.stop()
                else:
                    worker.task = None
                    self._idle.append(worker)
                yield CheckDone(task, result)
            elif worker.process.sentinel in ready:
                worker.process.join(timeout=1)
                result = failure_result(task, _death_reason(worker.process.exitcode), elapsed)
                worker.kill()
                self._busy.remove(worker)
                yield CheckDone(task, result)
            elif elapsed >= task.timeout:
                worker.kill()
                self._busy.remove(worker)
                yield CheckDone(
                    task,
                    failure_result(
                        task,
                        f"timed out after {task.timeout:g}s (raise 'timeout' in the contract "
                        "if the check needs longer)",
                        elapsed,
                    ),
                )

    def shutdown(self, kill: bool = False) -> None:
        for worker in self._busy + self._idle:
            if kill:
                worker.kill()
            else:
                worker.stop()
        self._busy.clear()
        self._idle.clear()
        if kill:  # a worker forked just as Ctrl-C arrived is not tracked yet: end it too
            for proc in mp.active_children():
                if proc.name == WORKER_NAME and proc.pid is not None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        proc.kill()
                    proc.join(timeout=5)


class InlineExecutor:
    """Runs tasks in this process, one after another (debugging; no isolation)."""

    def run(self, tasks: Iterable[Task]) -> Iterator[ExecutorEvent]:
        for task in tasks:
            yield CheckStarted(task)
            yield CheckDone(task, execute_task(task))

    def shutdown(self, kill: bool = False) -> None:
        return None
