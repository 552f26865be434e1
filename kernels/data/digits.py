"""The 8x8 handwritten digits (UCI optdigits test set, as shipped by scikit-learn).

``load_digits()`` reads ``datasets/digits/digits.csv.gz`` (digest-verified):
1797 rows of 64 pixel counts in 0..16 followed by the label 0..9. Pixels are
scaled to [0, 1] float32. ``split_indices`` / ``digits_splits`` give a
deterministic train/val/test split (a seeded permutation, 70/15/15).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from kernels.data.manifest import DatasetError, Manifest, dataset_path

__all__ = ["DIGITS_NAME", "load_digits", "split_indices", "digits_splits", "SPLIT_SEED"]

DIGITS_NAME = "digits"
SPLIT_SEED = 0
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


def _parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt", encoding="ascii") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if raw.shape[1] != 65:
        raise DatasetError(f"{path}: expected 65 columns (64 pixels + label), got {raw.shape[1]}")
    pix, lab = raw[:, :64], raw[:, 64]
    if pix.min() < 0 or pix.max() > 16:
        raise DatasetError(f"{path}: pixel values must be in 0..16 (got {pix.min()}..{pix.max()})")
    if lab.min() < 0 or lab.max() > 9:
        raise DatasetError(f"{path}: labels must be in 0..9 (got {lab.min()}..{lab.max()})")
    X = np.ascontiguousarray(pix.astype(np.float32) / np.float32(16.0))
    y = np.ascontiguousarray(lab.astype(np.int64))
    return X, y


def load_digits(
    verify: bool = True, manifest: Manifest | str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(X float32[1797, 64] in [0, 1], y int64[1797])`` from the shipped file."""
    return _parse(dataset_path(DIGITS_NAME, verify=verify, manifest=manifest))


def split_indices(
    n: int,
    seed: int = SPLIT_SEED,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> dict[str, np.ndarray]:
    """Disjoint sorted int64 index arrays ``train``/``val``/``test`` covering ``range(n)``."""
    if n < 3:
        raise ValueError(f"'n' must be >= 3 (got {n})")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"fractions must be in (0, 1) with a sum below 1 (got val {val_fraction}, "
            f"test {test_fraction})"
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    return {
        "train": np.sort(perm[n_test + n_val :]).astype(np.int64),
        "val": np.sort(perm[n_test : n_test + n_val]).astype(np.int64),
        "test": np.sort(perm[:n_test]).astype(np.int64),
    }


def digits_splits(
    verify: bool = True, seed: int = SPLIT_SEED
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (X, y), "val": (X, y), "test": (X, y)}``, C-contiguous copies."""
    X, y = load_digits(verify)
    return {
        k: (np.ascontiguousarray(X[idx]), np.ascontiguousarray(y[idx]))
        for k, idx in split_indices(len(y), seed).items()
    }
