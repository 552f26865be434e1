"""The training data stream over several epochs (issue 13, class 3: long horizons).

Every other training check stops inside the first epoch, so nothing watched the
stream roll over. This check draws the trainer's own stream (``next_indices``,
as ``draw_step`` does) over several epochs, with a batch size that does not
divide the number of windows so epochs straddle steps, and observes: each epoch
visits every window exactly once, consecutive epochs are shuffled differently,
and a stream restored from its saved state (cursor and generator) mid-epoch and
right at an epoch boundary continues with exactly the same indices.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _draw(rng: Any, cursor: Any, n: int, batch: int, steps: int) -> tuple[list[Any], list[int]]:
    from kernels import train as _t

    batches, epochs = [], []
    for _ in range(steps):
        idx, cursor = _t.next_indices(rng, cursor, n, batch)
        batches.append(idx)
        epochs.append(cursor.epoch)
    return batches, epochs


def stream_over_epochs(ctx: Any) -> dict[str, Any]:
    """params: families, batch, epochs. observations: epochs_seen, epochs_complete,
    epochs_with_gaps_or_repeats, repeated_orders, resume_mismatches, resumes_tested."""
    from acceptance.training import config_from, family_params
    from kernels import train as _t
    from kernels.train import DataCursor, build_task, new_rng, restore_rng, rng_state

    batch = int(ctx.params.get("batch", 64))
    want_epochs = int(ctx.params.get("epochs", 3))
    seen = complete = broken = repeated = mismatches = resumes = 0
    for family in ctx.params.get("families", ["gpt2", "mlp"]):
        cfg = config_from(family_params(ctx.params, family), family=family, seed=ctx.seed % 2**31)
        _, task, _, _, _ = build_task(cfg, None)
        n = int(task.n_units)
        steps = -(-want_epochs * n // batch) + 1
        rng = new_rng(ctx.seed % 2**31)
        cursor = DataCursor()
        saved = []  # (step, cursor, rng state) before each step
        stream: list[int] = []
        for _step in range(steps):
            saved.append((DataCursor(**cursor.to_dict()), rng_state(rng)))
            idx, cursor = _t.next_indices(rng, cursor, n, batch)
            stream.extend(int(i) for i in idx)
        # the stream cut into epochs of n: each a permutation, each order new
        orders = [stream[e * n : (e + 1) * n] for e in range(len(stream) // n)]
        seen += len(orders)
        for e, order in enumerate(orders):
            if sorted(order) == list(range(n)):
                complete += 1
            else:
                broken += 1
            if e and order == orders[e - 1]:
                repeated += 1
        # resume: mid-epoch, and at the first step that starts a new epoch
        boundary = next(
            (s for s in range(1, steps) if saved[s][0].epoch != saved[s - 1][0].epoch), steps // 2
        )
        for start in (steps // 3, boundary):
            cur0, state = saved[start]
            resumed, _ = _draw(
                restore_rng(state), DataCursor.from_dict(cur0.to_dict()), n, batch, 3
            )
            expect = stream[start * batch : (start + 3) * batch]
            resumes += 1
            mismatches += int(np.concatenate(resumed).tolist() != expect)
    return {
        "epochs_seen": seen,
        "epochs_complete": complete,
        "epochs_with_gaps_or_repeats": broken,
        "repeated_orders": repeated,
        "resumes_tested": resumes,
        "resume_mismatches": mismatches,
    }
