"""Known-bad variants of the data layer (for contracts/data.yaml).

Each is patched in by dotted name, in one worker only, where the caller looks it
up at call time; the data contract's checks must go red against every one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kernels.data import governance as _governance
from kernels.data import manifest as _manifest
from kernels.data import pii as _pii
from kernels.data import pipeline as _pipeline

# ----------------------------------------------------------------- manifest


#: verify_digest memoised on its arguments (name, path, expected digest, manifest): a
#: file is hashed the first time it is loaded and never again in that process, so bytes
#: changed after the first load are trusted (kernels.data.manifest:verify_digest)
verify_digest_cached_by_path = functools.lru_cache(maxsize=None)(_manifest.verify_digest)


# ---------------------------------------------------------------------- PII

#: the scanner's detectors without the card detector (kernels.data.pii:_DETECTORS)
DETECTORS_WITHOUT_CARD = tuple(d for d in _pii._DETECTORS if d[0] != "card")

#: the scanner's detectors without the SSN detector
DETECTORS_WITHOUT_SSN = tuple(d for d in _pii._DETECTORS if d[0] != "ssn")


def luhn_doubling_from_the_left(digits: str) -> bool:
    """The Luhn check with every second digit doubled counting from the left, the
    ``reversed()`` forgotten: right for odd lengths (13, 15, 19 digits), wrong for even
    ones (14, 16), so most 16-digit cards are missed and some invalid numbers pass
    (kernels.data.pii:luhn_valid)."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def pii_gate_approval_by_name(
    entry: Any, flagged: bool, findings: Any, approvals: Any, problems: Any
) -> Any:
    """The approval is looked up by dataset name, not by name and content digest: a
    dataset changed after its approval trains (kernels.data.governance:pii_gate)."""
    if flagged and not any(name == entry.name for name, _digest in approvals):
        return _ORIGINAL_PII_GATE(entry, flagged, findings, {}, problems)
    return None


_ORIGINAL_PII_GATE = _governance.pii_gate


# ------------------------------------------------------------------- policy


def policy_allow_first(entry: Any, policy: Any) -> Any:
    """Allow rules decide first (deny-after-allow): a dataset whose license and source
    are allowed is never checked against the deny rules
    (kernels.data.governance:policy_check)."""
    allowed = (
        _governance._match(entry.license, policy.allow_licenses) is not None
        and _governance._match(entry.source, policy.allow_sources) is not None
    )
    return None if allowed else _ORIGINAL_POLICY_CHECK(entry, policy)


_ORIGINAL_POLICY_CHECK = _governance.policy_check


def record_overwrites(log: Path, event: str, **data: Any) -> str:
    """The audit log opened for writing instead of appending: each decision replaces
    the ones before it (kernels.data.governance:_record)."""
    Path(log).unlink(missing_ok=True)
    return str(_governance._audit.append_event(log, event, **data))


# ----------------------------------------------------------------- pipeline


def dedupe_key_raw_text(text: str) -> str:
    """The dedupe key hashes the raw text, whitespace runs not normalised as
    documented: a copy with one doubled space survives (kernels.data.pipeline:dedupe_key)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decontaminate_eval_positions(
    train: Sequence[Any], eval_docs: Sequence[Any], n: int = 13
) -> tuple[list[Any], list[Any]]:
    """decontaminate() that looks the hits up from the eval side and drops the train
    documents at the contaminated eval documents' positions (an index taken from the
    wrong array; kernels.data.pipeline:decontaminate)."""
    import numpy as np

    if not train or not eval_docs:
        return list(train), []
    ev_h, ev_owner = _pipeline.document_ngram_hashes([d.text for d in eval_docs], n)
    tr_h, _ = _pipeline.document_ngram_hashes([d.text for d in train], n)
    hit = np.isin(ev_h, np.unique(tr_h))
    bad = set(np.unique(ev_owner[hit]).tolist())
    kept = [d for i, d in enumerate(train) if i not in bad]
    removed = [
        _pipeline.Removed(d.id, "decontaminate", f"shares a {n}-gram with the eval split")
        for i, d in enumerate(train)
        if i in bad
    ]
    return kept, removed


_real_shard = _pipeline.shard


def shard_drops_last(docs: Sequence[Any], split: str, shard_bytes: int = 262144) -> list[Any]:
    """shard() that loses the last document of each split (kernels.data.pipeline:shard)."""
    return _real_shard(list(docs)[:-1], split, shard_bytes)


def shard_duplicates_first(docs: Sequence[Any], split: str, shard_bytes: int = 262144) -> list[Any]:
    """shard() that writes the first document of each split twice."""
    docs = list(docs)
    return _real_shard(docs[:1] + docs, split, shard_bytes)


# -------------------------------------------------------------------- drift


def never_alert(*args: Any, **kwargs: Any) -> bool:
    """A drift rule that never fires (kernels.data.drift:_slice_drifted). A strawman,
    kept: see FALSIFY-DATA-018's title."""
    return False


def detect_binning_the_current_sample(self: Any, current: Any) -> Any:
    """``DriftDetector.detect`` with each slice's PSI bins spanning the current sample's
    range instead of the reference's: a shift moves the bins with the data, so PSI sees
    almost no drift (kernels.data.drift:DriftDetector.detect)."""
    import numpy as np

    from kernels.data import drift

    cur = drift.slice_means(current, list(self.slices.values()))
    n, m = self._ref.shape[0], cur.shape[0]
    crit = drift.ks_critical(n, m, self.alpha / len(self.names))
    out = []
    for s, name in enumerate(self.names):
        lo, hi = float(cur[:, s].min()), float(cur[:, s].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, self.bins + 1)
        ref_counts = drift.bin_counts(self._ref[:, s], edges)
        counts = drift.bin_counts(cur[:, s], edges)
        p = drift.psi(ref_counts, counts, self.eps)
        d = drift.ks_statistic(self._ref[:, s], cur[:, s])
        hit = bool(drift._slice_drifted(p, d, crit, self.psi_threshold))
        out.append(drift.SliceDrift(name, p, d, crit, hit, ref_counts.tolist(), counts.tolist()))
    return drift.DriftReport(
        alert=any(x.drifted for x in out),
        slices=out,
        n_reference=n,
        n_current=m,
        params={"bins": self.bins, "alpha": self.alpha, "psi_threshold": self.psi_threshold},
        dataset=self.dataset,
    )


def authorize_first_dataset_only(records: list[dict[str, Any]]) -> Any:
    """The trainer's gate asks governance about the run's first dataset only (written
    when a run read one dataset): an LM run's second dataset, its tokenizer, is never
    checked against the policy (kernels.train:authorize_data)."""
    from kernels.data.governance import GovernanceError, authorize_training
    from kernels.train import TrainError

    try:
        return authorize_training([records[0]["name"]])
    except GovernanceError as exc:
        raise TrainError(f"refused by data governance: {exc}") from exc


#: the manifest path resolved once, when the trainer's module is imported, before a
#: run sets $KERNELS_DATA_MANIFEST: the repository's datasets/manifest.yaml
_MANIFEST_AT_IMPORT = _manifest.default_manifest_path()


def authorize_manifest_read_at_import(records: list[dict[str, Any]]) -> Any:
    """The trainer's gate judges the datasets of the manifest resolved at import time
    (the repository's), not the copy named by $KERNELS_DATA_MANIFEST that the run reads:
    a copy marked pii: true, or with PII planted, trains unapproved
    (kernels.train:authorize_data)."""
    from kernels.data.governance import GovernanceError, authorize_training
    from kernels.train import TrainError

    try:
        return authorize_training([r["name"] for r in records], manifest=_MANIFEST_AT_IMPORT)
    except GovernanceError as exc:
        raise TrainError(f"refused by data governance: {exc}") from exc


def ks_statistic_one_sided(a: Any, b: Any) -> float:
    """KS D taken as sup(F_a - F_b), the abs() forgotten: a shift one way is missed
    (kernels.data.drift:ks_statistic)."""
    import numpy as np

    x, y = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([x, y])
    fa = np.searchsorted(x, grid, side="right") / x.size
    fb = np.searchsorted(y, grid, side="right") / y.size
    return float(max(0.0, np.max(fa - fb)))


def bin_counts_left_closed(x: Any, edges: Any) -> Any:
    """Bins looked up with ``searchsorted(side="left")``: a value exactly on an inner
    edge is counted in the bin below it (kernels.data.drift:bin_counts)."""
    import numpy as np

    e = np.asarray(edges, float)
    k = np.clip(np.searchsorted(e, np.asarray(x, float), side="left") - 1, 0, e.size - 2)
    return np.bincount(k, minlength=e.size - 1).astype(np.int64)


def detect_without_bonferroni(self: Any, current: Any) -> Any:
    """``DriftDetector.detect`` with each slice's KS test at level ``alpha`` instead of
    ``alpha / n_slices`` (the Bonferroni division forgotten): the chance that an
    i.i.d. sample raises any alert is no longer bounded by ``alpha``."""
    from kernels.data import drift

    cur = drift.slice_means(current, list(self.slices.values()))
    n, m = self._ref.shape[0], cur.shape[0]
    crit = drift.ks_critical(n, m, self.alpha)
    out = []
    for s, name in enumerate(self.names):
        counts = drift.bin_counts(cur[:, s], self._edges[s])
        p = drift.psi(self._ref_counts[s], counts, self.eps)
        d = drift.ks_statistic(self._ref[:, s], cur[:, s])
        hit = bool(drift._slice_drifted(p, d, crit, self.psi_threshold))
        ref_counts = self._ref_counts[s].tolist()
        out.append(drift.SliceDrift(name, p, d, crit, hit, ref_counts, counts.tolist()))
    return drift.DriftReport(
        alert=any(x.drifted for x in out),
        slices=out,
        n_reference=n,
        n_current=m,
        params={"bins": self.bins, "alpha": self.alpha, "psi_threshold": self.psi_threshold},
        dataset=self.dataset,
    )
