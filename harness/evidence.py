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
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from harness import __version__
from harness.audit import AuditLog
from harness.environment import collect_environment, git_state
from harness.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from harness.hooks import Listener, RunInfo
from harness.model import (
    ContractSet,
    CriterionResult,
    FalsifierResult,
    InvariantResult,
    RunResult,
)
from harness.plan import Plan
from harness.signing import (
    STATEMENT_TYPE,
    VERDICT_TYPE,
    Signer,
    canonical_json,
    make_envelope,
)

MARKER = "INCOMPLETE"
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


RUN_FILES = ("run.json", "environment.json", "results.json")
SEALS = ("manifest.json", "statement.json", "statement.dsse.json")
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"


def _safe_rel(path: str) -> str:
    parts = [p for p in Path(path).parts if p not in ("..", "/", ".")]
    return "/".join(parts) or "contract.yaml"


def build_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in SEALS and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def statement_result(verdict: str) -> str:
    return {"GO": "PASSED", "NO-GO": "FAILED"}.get(verdict, "WARNED")


def test_result_statement(
    result: CriterionResult,
    manifest: dict[str, dict[str, Any]],
    manifest_sha256: str,
    git: dict[str, Any],
) -> dict[str, Any]:
    """An in-toto Statement v1 with the test-result predicate for one criterion."""
    passed: list[str] = []
    warned: list[str] = []
    failed: list[str] = []
    for inv in result.invariants:
        {"PASS": passed, "SKIP": warned}.get(inv.outcome.value, failed).append(inv.invariant_id)
    for f in result.falsifiers:
        bucket = {"KILLED": passed, "SURVIVED": passed, "REFUTED": failed}
        bucket.get(f.outcome.value, warned).append(f.falsifier_id)
    commit = git.get("commit")
    subject = [
        {
            "name": f"git+commit:{commit}" if commit else "code-under-test",
            "digest": {"gitCommit": commit}
            if commit
            else {"sha256": manifest["criterion.yaml"]["sha256"]},
        }
    ]
    subject += [
        {"name": path, "digest": {"sha256": meta["sha256"]}}
        for path, meta in manifest.items()
        if path.startswith("artifacts/")
    ]
    return {
        "_type": STATEMENT_V1,
        "subject": subject,
        "predicateType": TEST_RESULT,
        "predicate": {
            "result": statement_result(result.verdict.value),
            "configuration": [
                {
                    "name": "criterion.yaml",
                    "digest": {"sha256": manifest["criterion.yaml"]["sha256"]},
                },
                {"name": "manifest.json", "digest": {"sha256": manifest_sha256}},
            ],
            "passedTests": passed,
            "warnedTests": warned,
            "failedTests": failed,
        },
    }


class EvidenceWriter(Listener):
    def __init__(self, evidence_root: Path, root: Path, signer: Signer | None = None) -> None:
        self.evidence_root = evidence_root
        self.signer = signer
        self.audit: AuditLog | None = None
        self.envelopes: dict[str, str] = {}
        self.root = root
        self.run_dir: Path | None = None
        self.contracts: ContractSet | None = None
        self.info: RunInfo | None = None
        self.run_meta: dict[str, Any] = {}
        self.check_dirs: dict[str, Path] = {}
        self.seeds: dict[str, int] = {}

    # -- events ------------------------------------------------------------
    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Plan) -> None:
        self.info, self.contracts = info, contracts
        self.run_dir = Path(info.evidence_dir)
        # the folder appears under its name only once it carries the INCOMPLETE marker
        staging = self.run_dir.with_name(f".{self.run_dir.name}.staging")
        staging.mkdir(parents=True)
        (staging / MARKER).write_text("run in progress or interrupted\n")
        os.rename(staging, self.run_dir)
        self.check_dirs = {t.key: Path(t.check_dir) for t in plan.tasks}
        self.seeds = {t.key: t.seed for t in plan.tasks}  # the seeds the checks ran with
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
        for k in contracts.contracts:  # the contract text exactly as run, for rerun
            atomic_write_text(self.run_dir / "contracts" / _safe_rel(k.path), k.text, durable=False)
        self.audit = AuditLog(self.run_dir / "audit.jsonl")
        self.audit.append(
            "run_start",
            run_id=info.run_id,
            seed=info.seed,
            profile=info.profile,
            contract_digest=contracts.digest,
            git=self.run_meta["git"],
            signed=self.signer is not None,
            keyid=self.signer.keyid if self.signer else None,
        )

    def check_started(self, key: str, kind: str) -> None:
        if self.audit:
            self.audit.append("check_start", id=key, kind=kind)

    def invariant_finished(self, result: InvariantResult) -> None:
        if self.audit:
            self.audit.append(
                "check_finish",
                id=result.invariant_id,
                outcome=result.outcome.value,
                duration=result.duration,
            )

    def falsifier_finished(self, result: FalsifierResult) -> None:
        if self.audit:
            self.audit.append(
                "falsifier_outcome",
                id=result.falsifier_id,
                target=result.target,
                kind=result.kind,
                outcome=result.outcome.value,
            )

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
        manifest = build_manifest(folder)
        atomic_write_json(folder / "manifest.json", manifest)
        statement = test_result_statement(
            result, manifest, sha256_file(folder / "manifest.json"), self.run_meta["git"]
        )
        body = canonical_json(statement)
        atomic_write_bytes(folder / "statement.json", body, durable=False)
        envelope = make_envelope(body, STATEMENT_TYPE, self.signer)
        atomic_write_json(folder / "statement.dsse.json", envelope)
        digest = sha256_file(folder / "statement.dsse.json")
        self.envelopes[result.criterion_id] = digest
        if self.audit:
            self.audit.append(
                "bundle_sealed",
                criterion=result.criterion_id,
                verdict=result.verdict.value,
                envelope_sha256=digest,
            )

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
        assert self.audit is not None
        self.audit.append(
            "verdict",
            verdict=result.verdict.value,
            interrupted=result.interrupted,
            summary=result.summary_line(),
        )
        verdict = {
            "run_id": result.run_id,
            "verdict": result.verdict.value,
            "complete": not result.interrupted,
            "summary": result.summary_line(),
            "criteria": {
                c.criterion_id: {
                    "verdict": c.verdict.value,
                    "severity": c.severity,
                    "envelope_sha256": self.envelopes.get(c.criterion_id),
                }
                for c in result.criteria
            },
            "contract_digest": result.contract_digest,
            "git": self.run_meta["git"],
            "seed": result.seed,
            "profile": result.profile,
            "audit_head": self.audit.head,
            "audit_count": self.audit.count,
            "run_files": {
                name: sha256_file(self.run_dir / name)
                for name in RUN_FILES
                if (self.run_dir / name).exists()
            }
            | {
                f"contracts/{p.relative_to(self.run_dir / 'contracts').as_posix()}": sha256_file(p)
                for p in sorted((self.run_dir / "contracts").rglob("*"))
                if p.is_file()
            },
            "signed": self.signer is not None,
            "keyid": self.signer.keyid if self.signer else None,
        }
        self.audit.close()
        body = canonical_json(verdict)
        atomic_write_bytes(self.run_dir / "verdict.json", body)
        atomic_write_json(
            self.run_dir / "verdict.dsse.json", make_envelope(body, VERDICT_TYPE, self.signer)
        )
        if not result.interrupted:
            # everything a check left is now copied into its criteria folders
            shutil.rmtree(self.run_dir / "checks", ignore_errors=True)
            (self.run_dir / MARKER).unlink(missing_ok=True)
        else:
            (self.run_dir / MARKER).write_text("interrupted: the bundle is partial\n")

    # -- helpers -----------------------------------------------------------
    def _criterion_yaml(self, criterion_id: str) -> str:
        """The criterion, its invariants and their falsifiers exactly as declared."""
        assert self.contracts is not None
        contract = self.contracts.contract_of(criterion_id)
        crit = next(c for c in contract.criteria if c.id == criterion_id)
        wanted = set(crit.invariants)
        invs, fals = [], []
        for k in self.contracts.contracts:
            invs += [i.declared for i in k.invariants if i.id in wanted]
            fals += [f.declared for f in k.falsifiers if f.target in wanted]
        doc = {
            "contract": {"path": contract.path, "sha256": contract.sha256, "name": contract.name},
            "criterion": crit.declared,
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
            "seed": self.seeds.get(r.falsifier_id),
        }

    def _copy_check_files(self, key: str, folder: Path) -> None:
        src = self.check_dirs.get(key)
        if src is None or not src.exists():
            return
        for name in ("stdout", "stderr"):
            f = src / f"{name}.txt"
            if f.exists() and f.stat().st_size > 0:  # an empty log says nothing
                _copy(f, folder / "logs" / f"{key}.{name}.txt")
        arts = src / "artifacts"
        if arts.is_dir():
            for f in arts.rglob("*"):
                if f.is_file():
                    _copy(f, folder / "artifacts" / key / f.relative_to(arts))


def _copy(src: Path, dest: Path) -> None:
    """A hard link where possible (checks/ is removed when the run completes, so the
    bundle's copy is then the only name), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
