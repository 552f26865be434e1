"""The drift detector's statistics, recomputed independently (issue 13, class 5).

INV-DATA-007/008 judge the detector's outcome (alert or not) with margins wide
enough for a wrong statistic to pass. This check recomputes every statistic the
detector reports, per slice, with code that shares nothing with it: bin counts
with ``numpy.histogram`` (values clipped into the reference range, as the
detector documents), PSI by its formula, the two-sample KS statistic with
``scipy.stats.ks_2samp`` and the critical value from the Kolmogorov
distribution (``scipy.stats.kstwobign``) at the Bonferroni level.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from acceptance.data_pipeline import _detector, _digits_with_ref, _iid_split


def _counts(values: np.ndarray, edges: np.ndarray) -> list[int]:
    clipped = np.clip(values, edges[0], edges[-1])
    return np.histogram(clipped, bins=edges)[0].astype(int).tolist()


def _psi(ref: list[int], cur: list[int], eps: float) -> float:
    p = np.maximum(np.asarray(ref, float) / sum(ref), eps)
    q = np.maximum(np.asarray(cur, float) / sum(cur), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def drift_statistics_match_reference(ctx: Any) -> dict[str, Any]:
    """params: samples (i.i.d. and shifted pairs), shift, n_ref, n_cur, bins, alpha,
    psi_threshold. observations: slices_compared, count_mismatches, psi_max_error,
    ks_max_error, critical_max_rel_error, decision_mismatches, drifted_slices."""
    from scipy.stats import ks_2samp, kstwobign

    from kernels.data.drift import slice_means

    X, dsref = _digits_with_ref()
    samples = int(ctx.params.get("samples", 6))
    n_ref, n_cur = int(ctx.params.get("n_ref", 1257)), int(ctx.params.get("n_cur", 270))
    shift = float(ctx.params.get("shift", 0.3))
    alpha = float(ctx.params.get("alpha", 0.01))
    psi_threshold = float(ctx.params.get("psi_threshold", 0.1))
    compared = count_bad = decisions_bad = drifted = 0
    psi_err = ks_err = crit_err = 0.0
    for s in range(samples):
        ref, cur = _iid_split(X, int(ctx.seed) % (2**31) + s, n_ref, n_cur)
        if s % 2:  # every other pair drifts: a brightness shift of a few blocks, in the
            # pixels' own units ([0, 1]), so shifted slice means stay inside the reference
            # range and the bin edges, not only the tails, decide the counts
            cols = [c for c in range(X.shape[1]) if (c // 8) < 4 and (c % 8) < 4]
            cur[:, cols] = np.clip(cur[:, cols] + shift, 0, 1)
        det = _detector(ref, ctx, dsref)
        rep = det.detect(cur)
        groups = list(det.slices.values())
        ref_means = slice_means(ref, groups)  # the slice values (inputs, not statistics)
        cur_means = slice_means(cur, groups)
        n, m = ref_means.shape[0], cur_means.shape[0]
        c_alpha = float(kstwobign.isf(alpha / len(groups)))
        crit = c_alpha * math.sqrt((n + m) / (n * m))
        for k, sd in enumerate(rep.slices):
            compared += 1
            col_r, col_c = ref_means[:, k], cur_means[:, k]
            lo, hi = float(col_r.min()), float(col_r.max())
            edges = np.linspace(
                lo, hi if hi > lo else lo + 1.0, int(ctx.params.get("bins", 10)) + 1
            )
            ref_counts, cur_counts = _counts(col_r, edges), _counts(col_c, edges)
            count_bad += int(ref_counts != sd.ref_counts or cur_counts != sd.cur_counts)
            psi = _psi(ref_counts, cur_counts, 1e-4)
            ks = float(ks_2samp(col_r, col_c).statistic)
            psi_err = max(psi_err, abs(psi - sd.psi))
            ks_err = max(ks_err, abs(ks - sd.ks))
            crit_err = max(crit_err, abs(crit - sd.ks_critical) / crit)
            decision = ks > crit and psi > psi_threshold
            decisions_bad += int(decision != sd.drifted)
            drifted += int(decision)
    return {
        "slices_compared": compared,
        "count_mismatches": count_bad,
        "psi_max_error": psi_err,
        "ks_max_error": ks_err,
        "critical_max_rel_error": crit_err,
        "decision_mismatches": decisions_bad,
        "drifted_slices": drifted,  # the comparison covers both decisions
    }
