"""The kill switch: SIGTERM or SIGINT asks a training run to stop at the next step boundary.

A signal handler only records the request (``StopFlag.request``); the loop asks
``stop_requested`` after each optimizer step has completed and, when it is set,
writes a complete checkpoint of that step (digests, ``latest``), records the
process's usage and returns a ``TrainResult`` with ``stopped=True`` (no
``result.json``: the run is not finished). ``core train`` / ``core resume`` then
exit with ``EXIT_STOPPED``; ``core resume`` continues to the same bytes as a run
that was never stopped. Nothing is written from inside the handler: a signal lands
between any two bytecodes of the step, where the weights, the optimizer and the
data cursor need not agree.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import kernels.train as _t  # calls to trainer functions go through the package

# The exit status of ``core train`` / ``core resume`` when a stop request (SIGTERM,
# SIGINT) ended the run early at a complete checkpoint: sysexits' EX_TEMPFAIL ("try
# again later"), distinct from 0 (the run finished) and 1 (an error); resume it.
EXIT_STOPPED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """A request to stop at the next step boundary; set by a signal handler or a caller."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None  # the signal that asked, if one did
        self.requested_at: float | None = None  # time.monotonic() of the first request

    def request(self, signum: int | None = None) -> None:
        """Ask the run to stop (idempotent: the first request's signal and time are kept)."""
        if not self._event.is_set():
            self.signum, self.requested_at = signum, time.monotonic()
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def signal_name(self) -> str:
        if self.signum is None:
            return "a stop request"
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def stop_handler(stop: StopFlag) -> Callable[[int, Any], None]:
    """The signal handler ``stop_on_signals`` installs: it records the request, nothing
    more (the loop writes the checkpoint once the step in progress has finished). A
    second signal, while the first is being honoured, aborts at once (KeyboardInterrupt:
    the latest complete checkpoint stands, as after SIGKILL)."""

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.request(signum)

    return handle


@contextlib.contextmanager
def stop_on_signals(
    stop: StopFlag | None = None, signals: Sequence[int] = STOP_SIGNALS
) -> Iterator[StopFlag]:
    """Route ``signals`` (SIGTERM, SIGINT) to a ``StopFlag`` while the block runs; the
    previous handlers come back afterwards. Only the main thread can install signal
    handlers; elsewhere the flag is returned without any (a caller sets it itself)."""
    stop = stop if stop is not None else StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    handler = _t.stop_handler(stop)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_requested(st: Any) -> bool:
    """Whether the loop stops after the step it has just completed (``st``: its LoopState)."""
    return st.stop is not None and st.stop.is_set()
