"""The kill-switch checks' own logic (acceptance/training_stop.py): the stop plan and how
the service's submissions are accounted for against the moment of the stop."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from acceptance.training_stop import account, stop_plan


def ctx(params, seed=0):
    return SimpleNamespace(params=params, rng=random.Random(seed))


@pytest.mark.parametrize("seed", range(20))
def test_stop_plan_is_ordered_and_avoids_periodic_checkpoints(seed):
    cfg = SimpleNamespace(steps=14, ckpt_every=6)
    stops = [{"signal": "SIGTERM", "between": [2, 6]}, {"signal": "SIGINT", "between": [5, 12]}]
    plan = stop_plan(ctx({"stops": stops}, seed), cfg)
    assert [p["signal"] for p in plan] == ["SIGTERM", "SIGINT"]
    a, b = (p["step"] for p in plan)
    assert 2 <= a < b <= 11 and a % 6 and b % 6


def test_stop_plan_without_room_raises():
    cfg = SimpleNamespace(steps=14, ckpt_every=6)
    with pytest.raises(RuntimeError, match="no step to stop at"):
        stop_plan(ctx({"stops": [{"signal": "SIGTERM", "between": [6, 6]}]}), cfg)


def sub(t_submit, accepted, outcome, t_return=None, error="", text="ok", started=None,
        finished=None, prompt="p"):  # fmt: skip
    rec = {"t_submit": t_submit, "t_return": t_return or t_submit + 0.001, "accepted": accepted,
           "outcome": outcome, "error": error, "prompt": prompt}  # fmt: skip
    if outcome == "completed":
        rec.update(text=text, started_at=started, finished_at=finished)
    return rec


def test_account_classifies_every_submission_against_the_stop():
    subs = [
        sub(1.0, True, "completed", started=1.1, finished=1.2),  # in flight at the stop
        sub(1.05, True, "completed", started=1.3, finished=1.4),  # queued at the stop
        sub(1.06, True, "completed", started=1.4, finished=1.5, text="wrong"),
        sub(1.07, True, "lost"),
        sub(1.08, True, "failed"),
        sub(1.09, False, "refused", error="ServiceStopped"),  # refused before the stop
        sub(1.3, False, "refused", error="ServiceStopped"),
        sub(1.31, False, "refused", error="ValueError"),
        sub(1.32, True, "completed", started=1.5, finished=1.6),  # accepted after the stop
    ]
    obs = account({"stop_requested_at": 1.15, "submissions": subs}, {"p": "ok"})
    assert obs["stop_seen"] and obs["submitted"] == 9
    assert (obs["accepted"], obs["refused"], obs["completed"]) == (6, 3, 4)
    assert (obs["lost"], obs["accepted_failed"], obs["completions_wrong"]) == (1, 1, 1)
    assert (obs["queued_at_stop"], obs["in_flight_at_stop"]) == (3, 1)
    assert (obs["submitted_after_stop"], obs["accepted_after_stop"]) == (3, 1)
    assert (obs["refused_before_stop"], obs["refusals_not_service_stopped"]) == (1, 1)
    assert obs["drain_s"] == pytest.approx(0.45)


def test_account_without_a_stop_counts_nothing_after_it():
    subs = [sub(1.0, True, "completed", started=1.1, finished=1.2)]
    obs = account({"stop_requested_at": None, "submissions": subs}, {"p": "ok"})
    assert not obs["stop_seen"] and obs["submitted_after_stop"] == 0 and obs["drain_s"] == 0.0
