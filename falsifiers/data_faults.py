"""Broken training data for release gates: a candidate trained on it must be rejected.

``trained_on(fault, seed)`` is a context manager under which the real trainer
(``kernels.train``) trains on a corrupted copy of its training split, without
knowing: it wraps the loader the trainer calls (``kernels.train:load_digits_splits``
for ``shuffle_labels``, ``kernels.train:load_lm_data`` for ``corrupt_text``) and
puts the original back on exit. Evaluation data is never touched.

    with trained_on("corrupt_text", seed=cfg.seed):
        train(cfg, out)

The corruption depends only on the fault and the seed, so a faulty run is as
reproducible as a clean one. Leaving the block without the fault having been
applied (the trainer never loaded the data it corrupts) raises ``FaultNotApplied``:
a gate must not be shown a "broken" candidate that trained on clean data.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

DATA_FAULTS = ("shuffle_labels", "corrupt_text")

# fault -> the trainer's loader it wraps (a name in kernels.train)
LOADERS = {"shuffle_labels": "load_digits_splits", "corrupt_text": "load_lm_data"}


class FaultNotApplied(RuntimeError):
    """The trainer never loaded the data the fault corrupts (wrong family, or the
    trainer no longer calls the loader through ``kernels.train``)."""


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0xFA17])


def shuffle_labels(seed: int, train: tuple[np.ndarray, np.ndarray]) -> tuple[Any, np.ndarray]:
    """The classifier's training split with its labels permuted (features unchanged)."""
    x, y = train
    return x, y[_rng(seed).permutation(len(y))]


def corrupt_text(seed: int, tokens: np.ndarray) -> np.ndarray:
    """The LM's training tokens replaced by uniformly random ones over the same range."""
    return _rng(seed).integers(0, int(tokens.max()) + 1, size=tokens.shape).astype(tokens.dtype)


def apply_data_fault(fault: str, seed: int, loaded: Any) -> Any:
    """What the trainer's loader returns under ``fault``: the splits (``shuffle_labels``)
    or the ``LMData`` (``corrupt_text``) with only the training split corrupted."""
    if fault == "shuffle_labels":
        splits = dict(loaded)
        splits["train"] = shuffle_labels(seed, splits["train"])
        return splits
    if fault == "corrupt_text":
        return dataclasses.replace(loaded, train=corrupt_text(seed, loaded.train))
    raise ValueError(f"data fault must be one of {', '.join(DATA_FAULTS)} (got {fault!r})")


@contextlib.contextmanager
def trained_on(fault: str, seed: int) -> Iterator[None]:
    """While active, ``kernels.train`` trains on data corrupted by ``fault`` (seeded)."""
    import kernels.train as trainer

    if fault not in DATA_FAULTS:
        raise ValueError(f"data fault must be one of {', '.join(DATA_FAULTS)} (got {fault!r})")
    name = LOADERS[fault]
    real = getattr(trainer, name)
    applied = []

    def faulty_loader(*args: Any, **kwargs: Any) -> Any:
        applied.append(True)
        return apply_data_fault(fault, seed, real(*args, **kwargs))

    setattr(trainer, name, faulty_loader)
    try:
        yield
    finally:
        setattr(trainer, name, real)
    if not applied:
        raise FaultNotApplied(
            f"data fault {fault!r}: the trainer never called kernels.train.{name}, "
            "so the run trained on clean data"
        )
