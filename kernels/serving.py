"""Use a saved checkpoint: rebuild its model, evaluate it, generate from it.

Everything is rebuilt from the checkpoint alone (its stamped config and
embedded tokenizer), so these functions also check that a checkpoint is
self-sufficient, and ``evaluate_checkpoint`` on the stamped eval set
recomputes the stamped val loss exactly.

``GenerationService`` serves generation requests in-process (a FIFO queue and
worker threads) with a kill switch: after ``stop()`` or SIGTERM it refuses new
requests (``ServiceStopped``) and completes every request it had accepted.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernels import checkpoint as ckpt_io
from kernels.errors import KernelsError


def model_from_checkpoint(loaded: ckpt_io.Checkpoint) -> tuple[Any, Any]:
    """(model, model config) built from the stamped config of a loaded checkpoint."""
    from kernels.config import MLPConfig, ModelConfig

    cfg = loaded.config
    if not cfg:
        raise ckpt_io.CheckpointError(f"{loaded.path}: no stamped model config; cannot rebuild")
    if loaded.family == "mlp":
        from kernels.models.mlp import MLPClassifier

        mcfg = MLPConfig.from_dict(cfg)
        return MLPClassifier(mcfg), mcfg
    from kernels.models.registry import build_model

    mcfg = ModelConfig.from_dict({**cfg, "family": loaded.family})
    return build_model(mcfg), mcfg


def evaluate_checkpoint(
    path: Path | str, split: str = "val", windows: int | None = None
) -> dict[str, Any]:
    """Loss (and perplexity or accuracy) of a checkpoint on a split of its dataset."""
    from kernels.train import ClassifierTask, evaluate_lm, gather_windows, load_lm_data

    loaded = ckpt_io.load_checkpoint(path)
    model, mcfg = model_from_checkpoint(loaded)
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
    out: dict[str, Any] = {"checkpoint": str(loaded.path), "step": loaded.step, "split": split}
    if loaded.family == "mlp":
        from kernels.data.digits import digits_splits

        splits = digits_splits(verify=True)
        task = ClassifierTask(model, {"train": splits["train"], "val": splits[split]})
        out.update({k.replace("val_", ""): v for k, v in task.evaluate(params).items()})
    else:
        spec = json.loads(loaded.stamps.get("eval_spec", "{}"))
        dataset = spec.get("dataset") or train_dataset(loaded)
        data = load_lm_data(dataset)
        if split not in ("val", "train"):
            raise ckpt_io.CheckpointError(f"LM checkpoints evaluate on val or train (got {split})")
        tokens = data.val if split == "val" else data.train
        n = windows or int(spec.get("windows", 64))
        n = min(n, (len(tokens) - 1) // mcfg.n_ctx)
        wins = gather_windows(tokens, np.arange(n), 0, mcfg.n_ctx)
        loss = evaluate_lm(model, params, wins)
        out.update(loss=loss, perplexity=math.exp(loss), windows=n, tokens=n * mcfg.n_ctx)
    stamped = loaded.val_loss
    out["stamped_val_loss"] = stamped
    if split == "val" and stamped is not None and windows is None:
        out["matches_stamp"] = bool(math.isclose(out["loss"], stamped, rel_tol=1e-6))
    return out


def train_dataset(loaded: ckpt_io.Checkpoint) -> str:
    cfg = json.loads(loaded.stamps.get("train_config", "{}"))
    return str(cfg.get("dataset", "pystdlib"))


def generate_from_checkpoint(
    path: Path | str,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Text generated from ``prompt`` with only the checkpoint (weights + embedded tokenizer)."""
    from kernels.data.tokenizer import ByteBPE
    from kernels.infer import generate

    loaded = ckpt_io.load_checkpoint(path)
    if loaded.family == "mlp":
        raise ckpt_io.CheckpointError(f"{loaded.path}: a classifier checkpoint cannot generate")
    if not loaded.tokenizer_json:
        raise ckpt_io.CheckpointError(f"{loaded.path}: no embedded tokenizer; cannot generate")
    tok = ByteBPE.from_json(loaded.tokenizer_json)
    model, _ = model_from_checkpoint(loaded)
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
    n_ctx = model.config.n_ctx
    ids = prompt_ids(tok, prompt, n_ctx)
    max_new = max(0, min(max_new_tokens, n_ctx - len(ids)))
    out = generate(model, params, ids, max_new, temperature=temperature, top_k=top_k, seed=seed)
    return tok.decode(np.asarray(out)).decode("utf-8", errors="replace")


def prompt_ids(tok: Any, prompt: str | bytes, n_ctx: int) -> np.ndarray:
    """The token ids a prompt is served as: an empty prompt is a newline, and a prompt
    longer than the context keeps its last ``n_ctx - 1`` tokens (its end, with room
    for one new token). A module-level function so a contract can mutate it."""
    return tok.encode(prompt or "\n")[-(n_ctx - 1) :]


# ---------------------------------------------------------------- the generation service


class ServiceStopped(KernelsError, RuntimeError):
    """The service is stopping or has stopped: it accepts no new requests."""


@dataclass
class Completion:
    """A served request: the prompt's ids followed by the new ones, the decoded text
    (with a tokenizer), and when it was submitted, started and finished (monotonic)."""

    ids: np.ndarray
    n_prompt: int
    text: str | None
    submitted_at: float
    started_at: float
    finished_at: float

    @property
    def new_ids(self) -> np.ndarray:
        return self.ids[self.n_prompt :]

    @property
    def latency_s(self) -> float:
        return self.finished_at - self.submitted_at


@dataclass
class _Request:
    ids: np.ndarray
    max_new: int
    temperature: float
    top_k: int
    seed: int
    future: Future
    submitted_at: float


class GenerationService:
    """Generation from one model for concurrent callers, with a kill switch.

    ``submit(prompt, max_new_tokens)`` validates the request, queues it (first in,
    first out) and returns a ``concurrent.futures.Future`` of its ``Completion``;
    ``workers`` threads serve the queue (the numba kernels release the GIL). A text
    prompt is served as ``generate_from_checkpoint`` serves it (``prompt_ids``, the
    new tokens capped by the context); an id prompt must fit as it is.

    ``stop()``, or SIGTERM/SIGINT inside ``stop_on_signals()``, is the kill switch:
    from that moment every ``submit`` raises ``ServiceStopped``, while every request
    accepted before it, running or still queued, completes; then the workers exit.
    Nothing accepted is dropped. An HTTP layer maps a request to ``submit`` and
    ``ServiceStopped`` to 503.
    """

    def __init__(
        self,
        model: Any,
        params: dict[str, np.ndarray],
        tokenizer: Any = None,
        *,
        workers: int = 1,
        use_cache: bool = True,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer (got {workers!r})")
        model.check_params(params)
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.use_cache = use_cache
        # reentrant: request_stop may run in a signal handler, on the main thread, while
        # that thread is inside submit() holding the lock
        self._cond = threading.Condition(threading.RLock())
        self._queue: deque[_Request] = deque()
        self._stopping = False
        self._counts = {"accepted": 0, "refused": 0, "completed": 0, "failed": 0}
        self.stop_requested_at: float | None = None  # time.monotonic() of the stop
        self.stopped_at: float | None = None  # when the last worker exited
        self._running = workers
        self._threads = [
            threading.Thread(target=self._serve, name=f"generation-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @classmethod
    def from_checkpoint(cls, path: Path | str, **kwargs: Any) -> GenerationService:
        """A service over a checkpoint's weights and embedded tokenizer (refused without one)."""
        from kernels.data.tokenizer import ByteBPE

        loaded = ckpt_io.load_checkpoint(path)
        if loaded.family == "mlp":
            raise ckpt_io.CheckpointError(f"{loaded.path}: a classifier checkpoint cannot generate")
        if not loaded.tokenizer_json:
            raise ckpt_io.CheckpointError(f"{loaded.path}: no embedded tokenizer; cannot generate")
        model, _ = model_from_checkpoint(loaded)
        params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
        return cls(model, params, ByteBPE.from_json(loaded.tokenizer_json), **kwargs)

    # ------------------------------------------------------------ callers

    def submit(
        self,
        prompt: str | bytes | Sequence[int] | np.ndarray,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
    ) -> Future:
        """Queue a request; its future resolves to a ``Completion`` (or the generation
        error). Raises ``ServiceStopped`` once a stop was requested, ``ValueError`` for a
        request that cannot be served (checked before it is accepted)."""
        ids, max_new = self._encode(prompt, max_new_tokens)
        if not (temperature >= 0.0 and math.isfinite(temperature)) or top_k < 0:
            raise ValueError(f"temperature must be finite and >= 0, top_k >= 0 (got "
                             f"{temperature}, {top_k})")  # fmt: skip
        request = _Request(ids, max_new, float(temperature), int(top_k), int(seed), Future(),
                           time.monotonic())  # fmt: skip
        with self._cond:
            if self._stopping:
                self._counts["refused"] += 1
                raise ServiceStopped(
                    "the generation service is stopping: it accepts no new requests "
                    "(those accepted before the stop still complete)"
                )
            self._counts["accepted"] += 1
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def request_stop(self) -> None:
        """Refuse new requests from now on; accepted ones still complete. Never blocks on
        the work (a signal handler calls it)."""
        with self._cond:
            if not self._stopping:
                self._stopping = True
                self.stop_requested_at = time.monotonic()
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> bool:
        """``request_stop()``, then wait for every accepted request to complete and the
        workers to exit; True when they have (within ``timeout`` seconds, if given)."""
        self.request_stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not any(thread.is_alive() for thread in self._threads)

    @contextlib.contextmanager
    def stop_on_signals(
        self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
    ) -> Iterator[GenerationService]:
        """SIGTERM/SIGINT call ``request_stop`` while the block runs (main thread only);
        the previous handlers come back afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handle(signum: int, frame: Any) -> None:
            self.request_stop()

        previous = {sig: signal.signal(sig, handle) for sig in signals}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def __enter__(self) -> GenerationService:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def pending(self) -> int:
        """Accepted requests not started yet."""
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict[str, int]:
        """Requests accepted, refused, completed and failed so far, and still queued."""
        with self._cond:
            return {**self._counts, "queued": len(self._queue)}

    # ------------------------------------------------------------ workers

    def _encode(self, prompt: Any, max_new_tokens: int) -> tuple[np.ndarray, int]:
        n_ctx = self.model.config.n_ctx
        if isinstance(prompt, (str, bytes)):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a service with a tokenizer")
            ids = np.asarray(prompt_ids(self.tokenizer, prompt, n_ctx), dtype=np.int32)
            return ids, max(0, min(int(max_new_tokens), n_ctx - len(ids)))
        ids = np.ascontiguousarray(prompt, dtype=np.int32)
        if ids.ndim != 1 or len(ids) < 1:
            raise ValueError(f"prompt ids must be a non-empty 1-D sequence (got {ids.shape})")
        if max_new_tokens < 0 or len(ids) + max_new_tokens > n_ctx:
            raise ValueError(
                f"prompt ({len(ids)}) + max_new_tokens ({max_new_tokens}) must fit the "
                f"context n_ctx={n_ctx}"
            )
        self.model.check_tokens(ids[None, :])
        return ids, int(max_new_tokens)

    def _take(self) -> _Request | None:
        """The oldest queued request; None once a stop was requested and none is left."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            return self._queue.popleft()

    def _serve(self) -> None:
        try:
            while (request := self._take()) is not None:
                self._run(request)
        finally:
            with self._cond:
                self._running -= 1
                if self._running == 0:
                    self.stopped_at = time.monotonic()

    def _run(self, request: _Request) -> None:
        from kernels import infer  # looked up per call: ``kernels.infer:generate`` is patchable

        if not request.future.set_running_or_notify_cancel():
            return  # the caller cancelled it while it was queued
        started = time.monotonic()
        try:
            out = infer.generate(
                self.model, self.params, request.ids, request.max_new, request.temperature,
                request.top_k, request.seed, use_cache=self.use_cache,
            )  # fmt: skip
            text = None
            if self.tokenizer is not None:
                text = self.tokenizer.decode(np.asarray(out)).decode("utf-8", errors="replace")
        except Exception as exc:  # the request's own failure, reported to its caller
            with self._cond:
                self._counts["failed"] += 1
            request.future.set_exception(exc)
            return
        with self._cond:
            self._counts["completed"] += 1
        done = time.monotonic()
        ids = np.asarray(out)
        request.future.set_result(
            Completion(ids, len(request.ids), text, request.submitted_at, started, done)
        )
