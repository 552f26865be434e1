"""GenerationService: served outputs, and the kill switch (stop completes what was accepted,
refuses what comes after, loses nothing)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import kernels.infer as infer
from kernels.config import ModelConfig
from kernels.models.registry import build_model
from kernels.serving import GenerationService, ServiceStopped

CFG = ModelConfig(family="gpt2", vocab_size=64, n_layer=1, d_model=16, n_head=2, n_ctx=32)


@pytest.fixture(scope="module")
def model_params():
    model = build_model(CFG)
    return model, model.init_params(3)


def prompts(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, CFG.vocab_size, size=4).astype(np.int32) for _ in range(n)]


@pytest.fixture
def gated(monkeypatch):
    """Generation that waits for ``gate`` before its first request, so requests queue."""
    gate, started = threading.Event(), threading.Event()
    real = infer.generate

    def generate(*args, **kwargs):
        started.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "generate", generate)
    return gate, started


@pytest.mark.parametrize("use_cache", [True, False])
def test_served_output_is_generate(model_params, use_cache):
    model, params = model_params
    with GenerationService(model, params, workers=2, use_cache=use_cache) as service:
        futures = [(p, service.submit(p, max_new_tokens=6)) for p in prompts(6)]
        for p, fut in futures:
            done = fut.result(timeout=60)
            assert np.array_equal(done.ids, infer.generate(model, params, p, 6))
            assert np.array_equal(done.new_ids, done.ids[4:]) and done.text is None
            assert done.submitted_at <= done.started_at <= done.finished_at
    assert service.stats() == {"accepted": 6, "refused": 0, "completed": 6, "failed": 0,
                               "queued": 0}  # fmt: skip


def test_stop_completes_queued_requests_and_refuses_new_ones(model_params, gated):
    model, params = model_params
    gate, started = gated
    service = GenerationService(model, params, workers=1)
    futures = [service.submit(p, max_new_tokens=5) for p in prompts(8)]
    assert started.wait(30)
    assert service.pending() == 7  # one in flight, seven queued
    service.request_stop()
    assert service.stopping
    with pytest.raises(ServiceStopped, match="accepts no new requests"):
        service.submit(prompts(1)[0], max_new_tokens=5)
    gate.set()
    assert service.stop(timeout=60)
    assert all(f.done() and f.exception() is None for f in futures)
    assert service.stats() == {"accepted": 8, "refused": 1, "completed": 8, "failed": 0,
                               "queued": 0}  # fmt: skip
    assert service.stopped_at is not None and service.stopped_at >= service.stop_requested_at
    with pytest.raises(ServiceStopped):  # still refused once stopped
        service.submit(prompts(1)[0], max_new_tokens=5)


def test_sigterm_stops_the_service_under_stop_on_signals(model_params, gated):
    model, params = model_params
    gate, started = gated
    service = GenerationService(model, params, workers=1)
    before = signal.getsignal(signal.SIGTERM)
    with service.stop_on_signals():
        futures = [service.submit(p, max_new_tokens=5) for p in prompts(4)]
        assert started.wait(30)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert service.stopping
        with pytest.raises(ServiceStopped):
            service.submit(prompts(1)[0], max_new_tokens=5)
        gate.set()
        assert service.stop(timeout=60)
    assert signal.getsignal(signal.SIGTERM) is before
    assert [f.result(timeout=1).ids.shape for f in futures] == [(9,)] * 4


def test_concurrent_submitters_racing_a_stop_lose_nothing(model_params):
    model, params = model_params
    service = GenerationService(model, params, workers=2)
    outcomes: list[str] = []
    futures = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for p in prompts(40):
            try:
                fut = service.submit(p, max_new_tokens=4)
            except ServiceStopped:
                with lock:
                    outcomes.append("refused")
                continue
            with lock:
                outcomes.append("accepted")
                futures.append(fut)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for th in threads:
        th.start()
    time.sleep(0.02)
    service.request_stop()
    for th in threads:
        th.join()
    assert service.stop(timeout=60)
    assert len(outcomes) == 160 and len(futures) == outcomes.count("accepted")
    assert all(f.done() and f.exception() is None for f in futures)  # none lost
    stats = service.stats()
    assert stats["completed"] == stats["accepted"] == len(futures)
    assert stats["refused"] == outcomes.count("refused")


def test_invalid_requests_are_refused_before_acceptance(model_params):
    model, params = model_params
    with GenerationService(model, params) as service:
        with pytest.raises(ValueError, match="n_ctx=32"):
            service.submit(np.zeros(30, dtype=np.int32), max_new_tokens=5)
        with pytest.raises(ValueError, match="tokenizer"):
            service.submit("def ", max_new_tokens=5)
        with pytest.raises(ValueError, match="vocab|token"):
            service.submit(np.array([999], dtype=np.int32), max_new_tokens=1)
        assert service.stats()["accepted"] == 0
    with pytest.raises(ValueError, match="workers"):
        GenerationService(model, params, workers=0)


def test_a_cancelled_queued_request_is_skipped(model_params, gated):
    model, params = model_params
    gate, started = gated
    service = GenerationService(model, params, workers=1)
    first = service.submit(prompts(1)[0], max_new_tokens=3)
    assert started.wait(30)
    second = service.submit(prompts(2)[1], max_new_tokens=3)
    assert second.cancel()
    gate.set()
    assert service.stop(timeout=60)
    assert first.result().ids.shape == (7,) and second.cancelled()
