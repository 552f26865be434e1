"""Known-bad kill switches (for contracts/training.yaml, AC-TRAIN-008).

Each is a way a real trainer or server has got graceful shutdown wrong: the stop
flag honoured only at an epoch boundary, a SIGTERM handler that exits on the spot
(the last periodic checkpoint is all that is left), a step abandoned half-way whose
checkpoint records a data cursor one batch ahead of the weights, and servers whose
stop drops, fails or keeps accepting requests. The checks run the trainer and the
service in child processes, which apply these patches too
(``acceptance.training_child``, ``acceptance.training_stop``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from kernels.serving import GenerationService, ServiceStopped
from kernels.train import EXIT_STOPPED, StopFlag

# ---------------------------------------------------------------- the trainer

_EPOCH_SEEN: dict[str, int] = {}


def stop_requested_at_epoch_end(st: Any) -> bool:
    """The stop flag read where an ``for epoch in ...: for batch in ...`` loop reads it,
    after the inner loop: only when the step just finished an epoch. A run shorter than
    an epoch (or a long epoch) trains on to its end after SIGTERM
    (kernels.train:stop_requested)."""
    epoch = int(st.cursor.epoch)
    ended = _EPOCH_SEEN.get("epoch", epoch) != epoch
    _EPOCH_SEEN["epoch"] = epoch
    return st.stop is not None and st.stop.is_set() and ended


def stop_handler_exiting(stop: StopFlag) -> Any:
    """A SIGTERM handler that exits on the spot with the documented status ("graceful:
    we checkpoint every N steps anyway"): the step in progress is lost and the run
    resumes from the last periodic checkpoint, or from scratch (kernels.train:stop_handler)."""

    def handle(signum: int, frame: Any) -> None:
        stop.request(signum)
        sys.exit(EXIT_STOPPED)

    return handle


def train_step_abandoned_on_stop(cfg: Any, task: Any, opt: Any, st: Any) -> dict[str, Any]:
    """A step that, when a stop was requested during its gradient computation, skips the
    optimizer update ("why apply an update we are about to abandon?") but still counts
    the step: its batch was drawn, so the checkpoint of that step holds a data cursor and
    generator one batch ahead of its weights and moments, and the resumed run never
    trains on that batch (kernels.train:train_step)."""
    import kernels.train as t

    t_step = time.perf_counter()
    batch, st.cursor = task.draw_step(st.rng, st.cursor, cfg.batch_size * cfg.grad_accum)
    loss, grads = t.accumulate_gradients(task, st.params, task.split(batch, cfg.grad_accum))
    lr = t.learning_rate(cfg, st.step)
    grad_norm = 0.0
    if not t.stop_requested(st):
        grad_norm = t.apply_update(opt, st.params, grads, lr)
    st.step += 1
    units = task.units_in(batch)
    st.tokens_seen += units
    return {
        "step": st.step, "loss": float(loss), "lr": lr, "grad_norm": float(grad_norm),
        "tokens_per_s": units / max(time.perf_counter() - t_step, 1e-9),
    }  # fmt: skip


# ---------------------------------------------------------------- the service


def take_until_stopped(self: GenerationService) -> Any:
    """A worker loop that checks the stop flag before taking the next request ("stop
    means stop"): the request in flight completes, the queued ones are never served and
    their callers wait forever (kernels.serving:GenerationService._take)."""
    with self._cond:
        while not self._queue and not self._stopping:
            self._cond.wait()
        if self._stopping:
            return None
        return self._queue.popleft()


def request_stop_failing_queued(self: GenerationService) -> None:
    """A stop that fails the queued requests fast with ServiceStopped instead of
    serving them: accepted work is refused after the fact
    (kernels.serving:GenerationService.request_stop)."""
    with self._cond:
        if not self._stopping:
            self._stopping = True
            self.stop_requested_at = time.monotonic()
        while self._queue:
            request = self._queue.popleft()
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(ServiceStopped("stopping: request dropped"))
        self._cond.notify_all()


def submit_refusing_once_stopped(
    self: GenerationService,
    prompt: Any,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> Any:
    """``submit`` that refuses only once the workers have exited (``stopped_at``), not
    from the stop request on: while the queue drains it keeps accepting work, and a
    request it accepts after the last worker left is never served
    (kernels.serving:GenerationService.submit)."""
    from concurrent.futures import Future

    from kernels.serving import _Request

    ids, max_new = self._encode(prompt, max_new_tokens)
    request = _Request(ids, max_new, float(temperature), int(top_k), int(seed), Future(),
                       time.monotonic())  # fmt: skip
    with self._cond:
        if self.stopped_at is not None:
            self._counts["refused"] += 1
            raise ServiceStopped("the generation service has stopped")
        self._counts["accepted"] += 1
        self._queue.append(request)
        self._cond.notify()
    return request.future
