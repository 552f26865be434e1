"""Faults for the training service's checks (contracts/service.yaml, ``kind: fault``).

- ``DropSSE`` (``drop_sse``): the check hands it its open event stream
  (``acceptance.service_stream.SSEConnection``) after some events; it reads part of the
  next event and then resets the socket (RST): a client that vanished mid-event, on a
  flaky network or a closed laptop. The check reconnects with ``Last-Event-ID``: nothing
  may be lost or repeated, and the half-read event must come again.
- ``SlowTrainer`` (``slow_trainer``): the check hands it the pid of a run's training
  process; it throttles the process until it exits (SIGSTOP for ``stop_s``, SIGCONT for
  ``run_s``, again and again), as a starved CPU, a cgroup quota or a preempted VM
  would. The stream must keep its order, lose nothing and keep the connection alive
  with keep-alive comments through every stall.

Both verify that the fault took: ``InjectionFailed`` (the falsifier is then ERROR)
when the stream had already ended, or the process never stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from harness.falsify import InjectionFailed, Injector


class DropSSE(Injector):
    """Reset an SSE connection mid-event; params: partial_bytes (bytes of the next
    event read first; default 8)."""

    name = "drop_sse"

    def inject(self, stream: Any) -> Any:
        want = int(self.params.get("partial_bytes", 8))
        partial = b""
        if want > 0:
            try:
                partial = stream.resp.read1(want)
            except OSError as exc:
                raise InjectionFailed(f"the stream failed before the drop: {exc}") from exc
            if not partial:
                raise InjectionFailed("the server had already closed the stream: nothing to drop")
        if not stream.drop():
            raise InjectionFailed("the socket is still open after the reset")
        self.report = {"partial_bytes": len(partial), "partial": partial.decode(errors="replace")}
        return stream


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


class Throttle:
    """The thread that stops and continues a process until it is gone or ``stop()``."""

    def __init__(self, pid: int, stop_s: float, run_s: float, report: dict[str, Any]) -> None:
        self.pid, self.stop_s, self.run_s = pid, stop_s, run_s
        self.report = report  # the injector's: cycles and seconds stopped, kept up to date
        self.cycles = 0
        self.stopped_s = 0.0
        self.done = threading.Event()
        self.first_stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="slow-trainer", daemon=True)

    def loop(self) -> None:
        try:
            while not self.done.is_set():
                try:
                    os.kill(self.pid, signal.SIGSTOP)
                except ProcessLookupError:
                    return
                t0 = time.monotonic()
                deadline = t0 + 1.0
                while _state(self.pid) not in ("T", "t", "", "Z") and time.monotonic() < deadline:
                    time.sleep(0.002)
                self.cycles += 1
                self.first_stop.set()
                self.done.wait(self.stop_s)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGCONT)
                self.stopped_s += time.monotonic() - t0
                self.report.update(cycles=self.cycles, stopped_s=round(self.stopped_s, 3))
                self.done.wait(self.run_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.first_stop.set()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)


class SlowTrainer(Injector):
    """Throttle a training process until it exits; params: stop_s (default 0.8),
    run_s (default 0.2). Returns the ``Throttle``; the check calls its ``stop()``."""

    name = "slow_trainer"

    def inject(self, pid: int) -> Throttle:
        if _state(pid) in ("", "Z"):
            raise InjectionFailed(f"process {pid} is gone: nothing to slow down")
        self.report = {"pid": pid, "stop_s": float(self.params.get("stop_s", 0.8)),
                       "run_s": float(self.params.get("run_s", 0.2))}  # fmt: skip
        throttle = Throttle(pid, self.report["stop_s"], self.report["run_s"], self.report)
        throttle.thread.start()
        throttle.first_stop.wait(5)
        if throttle.cycles == 0:
            throttle.stop()
            raise InjectionFailed(f"process {pid} was not stopped")
        return throttle
