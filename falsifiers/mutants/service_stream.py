"""Known-bad event streams and kill switches of the training service (for
contracts/service.yaml, AC-SVC-004 and AC-SVC-005).

Each is a way a real SSE endpoint or a real run manager has got it wrong: ids
numbered per connection (a reconnect then repeats or skips), a poll that sleeps on
the event loop (no keep-alive can go out while it waits), a DELETE that SIGKILLs the
trainer and writes the cancelled status itself, and a shutdown that signals the
trainers but does not wait for them. The service checks run the service in a
process of its own, which applies these patches
(``harness.falsify.patching.patch_environment``); the targets are the module-level
names ``kernels.service.app`` looks up at call time (``training_event_stream``,
``RunStore``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from kernels.service.runs import (
    STATUS,
    TERMINAL,
    RunStore,
    atomic_write_json,
    read_json,
)

# ---------------------------------------------------------------- the event stream


async def ids_per_connection(
    store: RunStore, run_id: str, after: int, poll_s: float
) -> AsyncIterator[ServerSentEvent]:
    """Ids from a counter of the connection ("1, 2, 3, ... as we send them") instead of
    each event's line in events.jsonl. A first connection looks right; a reconnect with
    ``Last-Event-ID: N`` resumes at the right line but numbers from 1 again, so the
    client's next ``Last-Event-ID`` points back into what it already has
    (kernels.service.app:training_event_stream)."""
    last, sent = after, 0
    while True:
        batch = store.events(run_id, last)
        for ev in batch:
            last = int(ev["id"])
            sent += 1
            yield ServerSentEvent(data=json.dumps(ev["data"], sort_keys=True),
                                  event=ev["event"], id=str(sent))  # fmt: skip
        if batch:
            continue
        if store.status(run_id)["status"] in TERMINAL and not store.events(run_id, last):
            return
        await asyncio.sleep(poll_s)


async def blocking_poll(
    store: RunStore, run_id: str, after: int, poll_s: float
) -> AsyncIterator[ServerSentEvent]:
    """Waits for the next event with ``time.sleep`` inside the async generator (the
    loop that worked in a thread, pasted into the handler): the event loop is blocked
    for as long as the run is quiet, so no keep-alive comment goes out (and no other
    request is served) until the trainer writes again
    (kernels.service.app:training_event_stream)."""
    last = after
    while True:
        batch = store.events(run_id, last)
        for ev in batch:
            last = int(ev["id"])
            yield ServerSentEvent(data=json.dumps(ev["data"], sort_keys=True),
                                  event=ev["event"], id=str(last))  # fmt: skip
        if batch:
            continue
        if store.status(run_id)["status"] in TERMINAL and not store.events(run_id, last):
            return
        time.sleep(poll_s)


# ---------------------------------------------------------------- the kill switch


class KillingCancelStore(RunStore):
    """DELETE writes the run's ``cancelled`` status itself and SIGKILLs the trainer
    ("it is cancelled anyway, why wait for a step"): the API says cancelled at once, but
    the step in progress is lost and no final checkpoint is written; only the last
    periodic one, if any, is left (kernels.service.app:RunStore, RunStore.cancel)."""

    def cancel(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(run_id)
        proc = self.procs.get(run_id)
        if proc is not None and proc.poll() is None:
            st = read_json(path / STATUS)
            if st.get("status") not in TERMINAL:
                atomic_write_json(path / STATUS, {**st, "status": "cancelled",
                                                  "stopped_by": "DELETE",
                                                  "finished_at": time.time()})  # fmt: skip
            proc.send_signal(signal.SIGKILL)
        return self.status(run_id)


class NoWaitShutdownStore(RunStore):
    """Shutdown forwards SIGTERM to every running trainer and returns ("they are in
    sessions of their own, they will checkpoint and exit by themselves"): the service
    exits 0 while its runs are still mid-step, so whoever restarts or inspects it
    finds runs still running, or killed with the machine
    (kernels.service.app:RunStore, RunStore.shutdown)."""

    def shutdown(self, timeout: float = 60.0) -> None:
        with self.lock:
            self.accepting = False
            procs = dict(self.procs)
        for run_id, proc in procs.items():
            if proc.poll() is None:
                st = read_json(self.root / run_id / STATUS)
                if st.get("status") not in TERMINAL:
                    st.setdefault("stopped_by", "shutdown")
                    atomic_write_json(self.root / run_id / STATUS, st)
                proc.send_signal(signal.SIGTERM)
