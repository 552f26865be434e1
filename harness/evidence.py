"""Write ``evidence/<run-id>/`` as the run goes (a listener).

Layout::

    evidence/<run-id>/
      INCOMPLETE                 present until the run finished cleanly
      run.json                   tool version, git, contract digest, seed, selection, status
      environment.json           versions, CPU, BLAS, threads, dependency digest
      results.json               the full RunResult (results schema v1)
      checks/<ID>/               raw stdout/stderr/artifacts of each check, as run
      criteria/<AC-ID>/
        criterion.yaml           the criterion, its invariants and falsifiers as run
        observations.jsonl       one line per invariant and falsifier
        metrics.jsonl            metrics the checks recorded
        logs/<ID>.stdout.txt     logs of each check
        artifacts/<ID>/...       artifacts of each check
        manifest.json            sorted path -> sha256, size of every file above

Every file is written atomically; a bundle whose run did not finish keeps the
INCOMPLETE marker and ``run.json`` says ``"complete": false``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import yaml

from harness import __version__
from harness.environment import collect_environment, git_state
from harness.fsutil import atomic_write_json, atomic_write_text, sha256_file
from harness.hooks import Listener, RunInfo
from harness.model import (
    ContractSet,
    CriterionResult,
    FalsifierResult,
    InvariantResult,
    RunResult,
)
from harness.runner import Plan

MARKER = "INCOMPLETE"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def float_repr(value: Any) -> Any:
    """Floats keep their exact bits beside the readable value."""
    if isinstance(value, float):
        if math.isfinite(value):
            return {"value": value, "hex": value.hex()}
        return {"value": str(value)}
    if isinstance(value, dict):
        return {k: float_repr(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [float_repr(v) for v in value]
    return value


def build_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


class EvidenceWriter(Listener):
    def __init__(self, evidence_root: Path, root: Path) -> None:
        self.evidence_root = evidence_root
        self.root = root
        self.run_dir: Path | None = None
        self.contracts: ContractSet | None = None
        self.info: RunInfo | None = None
        self.run_meta: dict[str, Any] = {}
        self.check_dirs: dict[str, Path] = {}
        self._yaml: dict[str, dict[str, Any]] = {}

    # -- events ------------------------------------------------------------
    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Plan) -> None:
        self.info, self.contracts = info, contracts
        self.run_dir = Path(info.evidence_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / MARKER).write_text("run in progress or interrupted\n")
        self.check_dirs = {t.key: Path(t.check_dir) for t in plan.tasks}
        env = collect_environment(self.root)
        atomic_write_json(self.run_dir / "environment.json", env)
        self.run_meta = {
            "run_id": info.run_id,
            "tool": "harness",
            "tool_version": __version__,
            "git": git_state(self.root) if "git" not in env else env["git"],
            "contract_digest": contracts.digest,
            "contracts": {k.path: k.sha256 for k in contracts.contracts},
            "seed": info.seed,
            "profile": info.profile,
            "selection": info.selection,
            "jobs": info.jobs,
            "started": info.started,
            "finished": None,
            "complete": False,
            "verdict": None,
        }
        atomic_write_json(self.run_dir / "run.json", self.run_meta)

    def criterion_finished(self, result: CriterionResult) -> None:
        assert self.run_dir is not None and self.contracts is not None
        folder = self.run_dir / "criteria" / result.criterion_id
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            folder / "criterion.yaml", self._criterion_yaml(result.criterion_id), durable=False
        )
        checks: list[InvariantResult | FalsifierResult] = [*result.invariants, *result.falsifiers]
        lines = [json.dumps(self._observation_line(r), sort_keys=True, default=str) for r in checks]
        atomic_write_text(folder / "observations.jsonl", "\n".join(lines) + "\n", durable=False)
        metrics = [
            json.dumps({"check": r.invariant_id, **m}, sort_keys=True, default=str)
            for r in result.invariants
            for m in r.metrics
        ]
        atomic_write_text(
            folder / "metrics.jsonl", "".join(m + "\n" for m in metrics), durable=False
        )
        for r in checks:
            key = r.invariant_id if isinstance(r, InvariantResult) else r.falsifier_id
            self._copy_check_files(key, folder)
        verdict = {
            "criterion_id": result.criterion_id,
            "verdict": result.verdict.value,
            "severity": result.severity,
            "reasons": list(result.reasons),
        }
        atomic_write_json(folder / "verdict.json", verdict, durable=False)
        atomic_write_json(folder / "manifest.json", build_manifest(folder))

    def run_finished(self, result: RunResult) -> None:
        assert self.run_dir is not None
        atomic_write_json(self.run_dir / "results.json", result.to_dict())
        self.run_meta.update(
            finished=result.finished,
            complete=not result.interrupted,
            verdict=result.verdict.value,
            summary=result.summary_line(),
        )
        atomic_write_json(self.run_dir / "run.json", self.run_meta)
        if not result.interrupted:
            (self.run_dir / MARKER).unlink(missing_ok=True)
        else:
            (self.run_dir / MARKER).write_text("interrupted: the bundle is partial\n")

    # -- helpers -----------------------------------------------------------
    def _parsed(self, path: str) -> dict[str, Any]:
        """Each contract's YAML, parsed once per run (the loader validated it)."""
        if path not in self._yaml:
            assert self.contracts is not None
            text = next(k.text for k in self.contracts.contracts if k.path == path)
            self._yaml[path] = yaml.load(text, Loader=_Loader) or {}
        return self._yaml[path]

    def _criterion_yaml(self, criterion_id: str) -> str:
        assert self.contracts is not None
        contract = self.contracts.contract_of(criterion_id)
        crit = next(c for c in self._parsed(contract.path).get("criteria", [])
                    if c["id"] == criterion_id)
        wanted = set(crit["invariants"])
        invs, fals = [], []
        for k in self.contracts.contracts:
            data = self._parsed(k.path)
            invs += [i for i in data.get("invariants", []) if i["id"] in wanted]
            fals += [f for f in data.get("falsifiers", []) if f["target"] in wanted]
        doc = {
            "contract": {"path": contract.path, "sha256": contract.sha256, "name": contract.name},
            "criterion": crit,
            "invariants": invs,
            "falsifiers": fals,
        }
        return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True)

    def _observation_line(self, r: InvariantResult | FalsifierResult) -> dict[str, Any]:
        if isinstance(r, InvariantResult):
            return {
                "id": r.invariant_id,
                "type": "invariant",
                "outcome": r.outcome.value,
                "expected": {j.observation: j.expected for j in r.judgements},
                "observed": float_repr(r.observations),
                "message": r.message,
                "duration": r.duration,
                "seed": r.seed,
            }
        return {
            "id": r.falsifier_id,
            "type": "falsifier",
            "kind": r.kind,
            "target": r.target,
            "outcome": r.outcome.value,
            "message": r.message,
            "detail": float_repr(r.detail),
            "duration": r.duration,
            "seed": self._seed_of(r.falsifier_id),
        }

    def _seed_of(self, key: str) -> int | None:
        from harness.worker import derive_seed

        return derive_seed(self.info.seed, key) if self.info else None

    def _copy_check_files(self, key: str, folder: Path) -> None:
        src = self.check_dirs.get(key)
        if src is None or not src.exists():
            return
        for name in ("stdout", "stderr"):
            f = src / f"{name}.txt"
            if f.exists():
                _copy(f, folder / "logs" / f"{key}.{name}.txt")
        arts = src / "artifacts"
        if arts.is_dir():
            for f in arts.rglob("*"):
                if f.is_file():
                    _copy(f, folder / "artifacts" / key / f.relative_to(arts))


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
