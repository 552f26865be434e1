"""The core's root exception."""

from __future__ import annotations


class KernelsError(Exception):
    """Root of every error the core raises on purpose.

    Each of the core's errors (``TrainError``, ``CheckpointError``, ``DatasetError``,
    ...) derives from it and keeps its builtin base (``ValueError`` where it had one),
    so ``except KernelsError`` catches every refusal of the core and nothing else.
    """
