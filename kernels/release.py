"""The offline canary: accept a candidate checkpoint only if it does not regress.

``accept_candidate`` evaluates the current and the candidate checkpoint on the
same held-out split (recomputed from the weights, never read from stamps) and
accepts the candidate only when its loss is within ``margin`` of the current
one. A rejected candidate keeps the current checkpoint: the rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernels import lifecycle


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    current_loss: float
    candidate_loss: float
    margin: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def candidate_regresses(current_loss: float, candidate_loss: float, margin: float) -> bool:
    """True when the candidate is worse than the current by more than ``margin`` (nats)."""
    return not candidate_loss <= current_loss + margin


def accept_candidate(
    current: Path | str, candidate: Path | str, margin: float, split: str = "val"
) -> GateDecision:
    from kernels.checkpoint import load_checkpoint
    from kernels.serving import evaluate_checkpoint

    if margin < 0:
        raise ValueError(f"margin must be >= 0 (got {margin})")
    a, b = load_checkpoint(current), load_checkpoint(candidate)
    if a.family != b.family:
        return GateDecision(
            False,
            float("nan"),
            float("nan"),
            margin,
            f"candidate family {b.family} differs from current {a.family}",
        )
    cur = float(evaluate_checkpoint(current, split)["loss"])
    cand = float(evaluate_checkpoint(candidate, split)["loss"])
    if candidate_regresses(cur, cand, margin):
        return GateDecision(
            False,
            cur,
            cand,
            margin,
            f"rejected: {split} loss {cand:.4f} > current {cur:.4f} + {margin}",
        )
    return GateDecision(
        True,
        cur,
        cand,
        margin,
        f"accepted: {split} loss {cand:.4f} <= current {cur:.4f} + {margin}",
    )


# ---------------------------------------------------------------- the served model


def served_checkpoint(deploy: Path | str) -> Path:
    """The checkpoint ``deploy`` serves: the path its ``current`` pointer names."""
    pointer = Path(deploy) / "current"
    try:
        return Path(pointer.read_text().strip())
    except OSError as exc:
        raise ValueError(
            f"{pointer}: no served checkpoint ({exc.strerror}); start with serve(deploy, ckpt)"
        ) from None


def serve(deploy: Path | str, checkpoint: Path | str) -> None:
    """Point ``deploy`` at ``checkpoint`` (atomically: a reader sees the old or the new)."""
    from kernels.checkpoint import atomic_write_text, weights_digest

    Path(deploy).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(deploy) / "current", f"{Path(checkpoint).resolve()}\n")
    lifecycle.record(
        "model.serve", deploy=str(deploy), checkpoint=str(Path(checkpoint).resolve()),
        weights_sha256=weights_digest(checkpoint),
    )  # fmt: skip


def canary_rollout(
    deploy: Path | str, candidate: Path | str, margin: float, split: str = "val"
) -> GateDecision:
    """Judge ``candidate`` against the checkpoint ``deploy`` serves, and serve it only if
    accepted. The decision is made before the pointer moves, so a rejected candidate is
    never served and the current model stays served: that is the rollback."""
    from kernels.checkpoint import weights_digest

    current = served_checkpoint(deploy)
    decision = accept_candidate(current, candidate, margin, split)
    digests = {
        "current_sha256": weights_digest(current),
        "candidate_sha256": weights_digest(candidate),
    }
    lifecycle.record(
        "canary.decision", deploy=str(deploy), current=str(current), candidate=str(candidate),
        **digests, **decision.to_dict(),
    )  # fmt: skip
    if decision.accepted:
        serve(deploy, candidate)
    else:  # the candidate is refused: the current model stays served
        lifecycle.record(
            "canary.rollback", deploy=str(deploy), kept=str(current), refused=str(candidate),
            **digests, reason=decision.reason,
        )  # fmt: skip
    return decision
