from __future__ import annotations

import numpy as np
import pytest

from kernels.data.digits import digits_splits, load_digits, split_indices
from kernels.data.manifest import load_manifest


def test_load_digits_shapes_dtypes_ranges():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.all(np.isfinite(X))
    # pixel counts 0..16 scaled exactly
    assert np.array_equal(X * 16, np.round(X * 16))
    assert set(np.unique(y).tolist()) == set(range(10))
    assert np.bincount(y).min() > 150


def test_split_is_deterministic_disjoint_and_covering():
    _, y = load_digits()
    a, b = split_indices(len(y)), split_indices(len(y))
    for k in a:
        assert np.array_equal(a[k], b[k])
    allidx = np.concatenate(list(a.values()))
    assert np.array_equal(np.sort(allidx), np.arange(len(y)))
    sizes = {k: len(v) for k, v in a.items()}
    assert sizes == load_manifest()["digits"].splits
    assert not np.array_equal(split_indices(len(y), seed=1)["test"], a["test"])


def test_digits_splits_arrays():
    sp = digits_splits()
    assert set(sp) == {"train", "val", "test"}
    X, y = load_digits()
    idx = split_indices(len(y))
    for k, (Xs, ys) in sp.items():
        assert Xs.dtype == np.float32 and ys.dtype == np.int64
        assert np.array_equal(Xs, X[idx[k]]) and np.array_equal(ys, y[idx[k]])
        assert len(np.unique(ys)) == 10


def test_split_indices_validates():
    with pytest.raises(ValueError, match="fractions"):
        split_indices(100, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="'n' must be >= 3"):
        split_indices(2)
