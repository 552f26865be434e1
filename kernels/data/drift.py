"""Input-drift detection: PSI and the two-sample Kolmogorov-Smirnov statistic per slice.

A :class:`DriftDetector` is fitted on a reference sample (rows x features) and a
set of named slices (feature index groups: the 16 2x2 pixel blocks of the digits
set by default, see :func:`digit_block_slices`). A slice's value for a row is the
mean of its features. ``detect(current)`` compares each slice's distribution in
the current sample with the reference:

- PSI over ``bins`` equal-width bins spanning the reference range (values outside
  go to the end bins), with ``eps`` smoothing of empty bins;
- the KS statistic D = sup |F_ref - F_cur|, judged against its asymptotic critical
  value at level ``alpha / n_slices`` (Bonferroni, so ``alpha`` bounds the chance
  that an i.i.d. sample raises any alert).

A slice has drifted when D exceeds its critical value AND PSI exceeds
``psi_threshold`` (``_slice_drifted``); the report names the drifted slices, most
drifted first, and carries a retrain suggestion with the dataset reference.

The numba kernels (``_bin_counts_kernel``, ``_psi_kernel``, ``_ks_kernel``,
``_slice_means_kernel``) validate nothing; call the wrappers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from kernels.config import JIT

__all__ = [
    "bin_counts",
    "psi",
    "ks_statistic",
    "ks_critical",
    "slice_means",
    "digit_block_slices",
    "SliceDrift",
    "DriftReport",
    "DriftDetector",
]


# ------------------------------------------------------------------ kernels
@njit(**JIT)
def _bin_counts_kernel(x, edges, out):  # type: ignore[no-untyped-def]
    nb = edges.shape[0] - 1
    for i in range(x.shape[0]):
        v = x[i]
        if v < edges[1]:
            k = 0
        elif v >= edges[nb - 1]:
            k = nb - 1
        else:  # edges[lo] <= v < edges[hi]
            lo = 1
            hi = nb - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if v >= edges[mid]:
                    lo = mid
                else:
                    hi = mid
            k = lo
        out[k] += 1
    return out


@njit(**JIT)
def _psi_kernel(ref, cur, eps):  # type: ignore[no-untyped-def]
    nr = 0.0
    nc = 0.0
    for k in range(ref.shape[0]):
        nr += ref[k]
        nc += cur[k]
    total = 0.0
    for k in range(ref.shape[0]):
        p = ref[k] / nr
        q = cur[k] / nc
        if p < eps:
            p = eps
        if q < eps:
            q = eps
        total += (q - p) * math.log(q / p)
    return total


@njit(**JIT)
def _ks_kernel(a, b):  # type: ignore[no-untyped-def]
    x = np.sort(a)
    y = np.sort(b)
    n = x.shape[0]
    m = y.shape[0]
    i = 0
    j = 0
    d = 0.0
    while i < n and j < m:
        v = x[i] if x[i] < y[j] else y[j]
        while i < n and x[i] <= v:
            i += 1
        while j < m and y[j] <= v:
            j += 1
        diff = abs(i / n - j / m)
        if diff > d:
            d = diff
    return d


@njit(**JIT)
def _slice_means_kernel(X, members, sizes, out):  # type: ignore[no-untyped-def]
    for r in range(X.shape[0]):
        for s in range(members.shape[0]):
            acc = 0.0
            for k in range(sizes[s]):
                acc += X[r, members[s, k]]
            out[r, s] = acc / sizes[s]
    return out


# ----------------------------------------------------------------- wrappers
def _vec(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size == 0 or a.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"'{name}' must be a non-empty 1-D numeric array (got {_desc(a)})")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"'{name}' must be finite")
    return a


_NUMERIC_KINDS = "iufcm"  # what np.issubdtype(dtype, np.number) accepts, read cheaply


def _desc(a: np.ndarray) -> str:
    return f"dtype={a.dtype} shape={a.shape}"


def bin_counts(x: Any, edges: Any) -> np.ndarray:
    """int64 counts of ``x`` in the bins ``edges`` (values outside go to the end bins)."""
    xv = _vec(x, "x")
    e = _vec(edges, "edges")
    if e.size < 2 or (e[1:] <= e[:-1]).any():
        raise ValueError("'edges' must have at least 2 strictly increasing values")
    return _bin_counts_kernel(xv, e, np.zeros(e.size - 1, dtype=np.int64))


def psi(ref_counts: Any, cur_counts: Any, eps: float = 1e-4) -> float:
    """Population stability index sum((q - p) * ln(q / p)) of two histograms."""
    r = _vec(ref_counts, "ref_counts")
    c = _vec(cur_counts, "cur_counts")
    if r.shape != c.shape:
        raise ValueError(f"'ref_counts' and 'cur_counts' differ in shape ({r.shape} vs {c.shape})")
    if (r < 0).any() or (c < 0).any() or r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total")
    if not 0 < eps < 1:
        raise ValueError(f"'eps' must be in (0, 1) (got {eps!r})")
    return float(_psi_kernel(r, c, float(eps)))


def ks_statistic(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D = sup_x |F_a(x) - F_b(x)|."""
    return float(_ks_kernel(_vec(a, "a"), _vec(b, "b")))


def ks_critical(n: int, m: int, alpha: float) -> float:
    """Asymptotic critical value of D at level ``alpha``: c(alpha) * sqrt((n + m) / (n m))."""
    if n < 1 or m < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n, m >= 1 and alpha in (0, 1) (got {n}, {m}, {alpha})")
    return math.sqrt(-math.log(alpha / 2.0) / 2.0) * math.sqrt((n + m) / (n * m))


def slice_means(X: Any, slices: Sequence[Sequence[int]]) -> np.ndarray:
    """float64[rows, n_slices]: each row's mean over each slice's feature indices."""
    a = np.asarray(X)
    if a.ndim != 2 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"'X' must be a non-empty 2-D numeric array (got {_desc(a)})")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not slices or any(len(s) == 0 for s in slices):
        raise ValueError("'slices' must be a non-empty list of non-empty index lists")
    width = max(len(s) for s in slices)
    members = np.zeros((len(slices), width), dtype=np.int64)
    sizes = np.zeros(len(slices), dtype=np.int64)
    for i, s in enumerate(slices):
        idx = np.asarray(s, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= a.shape[1]:
            raise ValueError(f"slice {i} has feature indices outside 0..{a.shape[1] - 1}")
        members[i, : idx.size] = idx
        sizes[i] = idx.size
    return _slice_means_kernel(a, members, sizes, np.zeros((a.shape[0], len(slices))))


def digit_block_slices(block: int = 2) -> dict[str, list[int]]:
    """The 8x8 digits' pixel blocks of ``block`` x ``block``, named 'rows r0-r1 cols c0-c1'."""
    if block not in (1, 2, 4, 8):
        raise ValueError(f"'block' must divide 8 (got {block})")
    out: dict[str, list[int]] = {}
    for r in range(0, 8, block):
        for c in range(0, 8, block):
            name = f"pixels rows {r}-{r + block - 1} cols {c}-{c + block - 1}"
            out[name] = [(r + i) * 8 + (c + j) for i in range(block) for j in range(block)]
    return out


# ------------------------------------------------------------------ detector
@dataclass(frozen=True)
class SliceDrift:
    name: str
    psi: float
    ks: float
    ks_critical: float
    drifted: bool
    ref_counts: list[int]
    cur_counts: list[int]


@dataclass
class DriftReport:
    alert: bool
    slices: list[SliceDrift]
    n_reference: int
    n_current: int
    params: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] | None = None

    @property
    def drifted(self) -> list[str]:
        """Names of the drifted slices, most drifted (largest D / critical) first."""
        hits = [s for s in self.slices if s.drifted]
        hits.sort(key=lambda s: -(s.ks / s.ks_critical))
        return [s.name for s in hits]

    def retrain_suggestion(self) -> dict[str, Any] | None:
        """What to retrain on and why, with the dataset reference (None without an alert)."""
        if not self.alert:
            return None
        return {"dataset": self.dataset, "slices": self.drifted, "reason": "input drift"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "params": dict(self.params),
            "slices": [
                {"name": s.name, "psi": s.psi, "ks": s.ks, "ks_critical": s.ks_critical}
                for s in self.slices
            ],
            "retrain": self.retrain_suggestion(),
        }


def _slice_drifted(psi_value: float, ks: float, ks_crit: float, psi_threshold: float) -> bool:
    """The alert rule of one slice."""
    return ks > ks_crit and psi_value > psi_threshold


class DriftDetector:
    """Fit on a reference sample; ``detect`` a current sample slice by slice."""

    def __init__(
        self,
        reference: Any,
        slices: Mapping[str, Sequence[int]] | None = None,
        *,
        bins: int = 10,
        alpha: float = 0.01,
        psi_threshold: float = 0.1,
        eps: float = 1e-4,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"'bins' must be an int >= 2 (got {bins!r})")
        if not 0 < alpha < 1:
            raise ValueError(f"'alpha' must be in (0, 1) (got {alpha!r})")
        if not psi_threshold >= 0:
            raise ValueError(f"'psi_threshold' must be >= 0 (got {psi_threshold!r})")
        self.slices = dict(slices if slices is not None else digit_block_slices())
        self.names = list(self.slices)
        self.bins, self.alpha, self.psi_threshold, self.eps = bins, alpha, psi_threshold, eps
        self.dataset = dataset
        self._ref = slice_means(reference, list(self.slices.values()))
        # each slice's reference values, contiguous and sorted once: ``detect`` passes
        # them to ``ks_statistic`` (D depends on the values, not their order), which then
        # sorts an already sorted array instead of the whole reference every time
        self._ref_sorted = np.sort(self._ref.T, axis=1)
        self._edges = []
        self._ref_counts = []
        for s in range(self._ref.shape[1]):
            col = self._ref[:, s]
            lo, hi = float(col.min()), float(col.max())
            if hi <= lo:
                hi = lo + 1.0
            edges = np.linspace(lo, hi, bins + 1)
            self._edges.append(edges)
            self._ref_counts.append(bin_counts(col, edges))

    def detect(self, current: Any) -> DriftReport:
        cur = slice_means(current, list(self.slices.values()))
        n, m = self._ref.shape[0], cur.shape[0]
        crit = ks_critical(n, m, self.alpha / len(self.names))
        columns = np.ascontiguousarray(cur.T)  # one copy, not one per slice and function
        out = []
        for s, name in enumerate(self.names):
            counts = bin_counts(columns[s], self._edges[s])
            p = psi(self._ref_counts[s], counts, self.eps)
            d = ks_statistic(self._ref_sorted[s], columns[s])
            out.append(
                SliceDrift(
                    name,
                    p,
                    d,
                    crit,
                    bool(_slice_drifted(p, d, crit, self.psi_threshold)),
                    self._ref_counts[s].tolist(),
                    counts.tolist(),
                )
            )
        return DriftReport(
            alert=any(x.drifted for x in out),
            slices=out,
            n_reference=n,
            n_current=m,
            params={
                "bins": self.bins,
                "alpha": self.alpha,
                "psi_threshold": self.psi_threshold,
                "eps": self.eps,
            },
            dataset=self.dataset,
        )
