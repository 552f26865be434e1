"""Write ``evidence/<run-id>/`` as the run goes (a listener).

Layout::

    evidence/<run-id>/
      INCOMPLETE                 present until the run finished cleanly
      run.json                   tool version, git, contract digest, seed, selection, status
      environment.json           versions, CPU, BLAS, threads, dependency digest
      results.json               the full RunResult (results schema v1)
      sources.json               sha256 of each project source file the checks loaded,
                                 and which check loaded which (``harness.sources``)
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

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from auditchain import AuditLog
from harness import __version__
from harness.environment import (
    EnvironmentProbe,
    interpreter_environment,
    local_environment,
    uncommitted_sources,
)
from harness.errors import HarnessError
from harness.fsutil import (
    MAX_ARTIFACT,
    atomic_write_bytes,
    atomic_write_json,
    declared_files,
    dumps_json,
    read_capped,
    sha256_file,
)
from harness.hooks import Listener, RunInfo
from harness.model import (
    ContractSet,
    CriterionResult,
    FalsifierResult,
    InvariantResult,
    RunResult,
)
from harness.plan import Plan, Task
from harness.policy_paths import declared_audit_log, log_state
from harness.procs import redact, sync_filesystem
from harness.runs import MARKER, hold_run_lock
from harness.signing import (
    STATEMENT_TYPE,
    VERDICT_TYPE,
    Signer,
    canonical_json,
    make_envelope,
)
from harness.sources import SOURCES_FILE, RecordedSources

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
MAX_SERVICE_LOG = 10 * 1024**2  # bytes of a service's log kept in the evidence


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
    """path -> sha256 and size of every file under ``folder``, at any depth.

    Dotfiles count, and so does a nested file named like a seal
    (``artifacts/X/manifest.json``): only the three SEALS at the top of ``folder``,
    written after the manifest and each covering it, are left out. Links are not
    followed: a symbolic link, a pipe or a device is listed by its kind alone
    (``{"type": "symlink"}``), which ``harness verify`` never accepts."""
    out: dict[str, dict[str, Any]] = {}
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as listing:
            entries = list(listing)
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(folder).as_posix()
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif current == folder and entry.name in SEALS:
                continue
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                out[rel] = {"sha256": sha256_file(path), "size": size}
            else:
                out[rel] = {"type": "symlink" if entry.is_symlink() else "special"}
    return dict(sorted(out.items()))


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
    """The coordinator's bundle writer: the only process that writes the bundle.

    Every file it writes is digested from the bytes it wrote (kept in memory),
    so the manifests and the signed verdict seal what the coordinator wrote,
    not what is on disk when it seals: a file a check changed or planted in the
    meantime makes ``verify`` fail. Logs are capped at the task's output limit
    and redacted of secret values; of a check's artifacts only the files it
    declared (``ctx.attach``) are copied, never through a symlink. Signing
    happens once, in ``run_finished``, after every worker is gone: ``signer`` is
    a callable that loads the key then.
    """

    def __init__(
        self,
        evidence_root: Path,
        root: Path,
        signer: Signer | Callable[[], Signer | None] | None = None,
        *,
        redactions: Mapping[str, str] | None = None,
        probe: EnvironmentProbe | None = None,
    ) -> None:
        self.evidence_root = evidence_root
        if signer is not None and hasattr(signer, "sign"):
            fixed = signer
            self.load_signer: Callable[[], Signer | None] | None = lambda: fixed  # type: ignore[assignment,return-value]
        else:
            self.load_signer = signer  # type: ignore[assignment]
        self.redactions = dict(redactions or {})
        self.audit: AuditLog | None = None
        self.root = root
        self.run_dir: Path | None = None
        self.contracts: ContractSet | None = None
        self.info: RunInfo | None = None
        self.run_meta: dict[str, Any] = {}
        self.tasks: dict[str, Task] = {}  # the plan's tasks: check dirs, limits, seeds
        self.run_digests: dict[str, str] = {}  # run-level file -> sha256 of what we wrote
        self.sealed: dict[str, dict[str, dict[str, Any]]] = {}  # criterion -> manifest
        self.statements: dict[str, bytes] = {}  # criterion -> unsigned statement body
        self.order: list[str] = []
        self.sources = RecordedSources({}, {})  # the project sources the checks loaded
        self._live: int | None = None  # the run folder's lock, held until it is sealed
        # until environment.json is written; one started early (the CLI starts it before it
        # loads the contracts) gains that time too, else run_started starts it
        self._env_probe: EnvironmentProbe | None = probe
        self._local_env: dict[str, Any] = {}

    # -- writing -----------------------------------------------------------
    def _write_run_file(self, rel: str, data: bytes, durable: bool = False) -> None:
        assert self.run_dir is not None
        atomic_write_bytes(self.run_dir / rel, data, durable=durable)
        self.run_digests[rel] = hashlib.sha256(data).hexdigest()

    def _write_sealed(self, cid: str, rel: str, data: bytes) -> None:
        assert self.run_dir is not None
        atomic_write_bytes(self.run_dir / "criteria" / cid / rel, data, durable=False)
        self.sealed.setdefault(cid, {})[rel] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }

    def _restore_marker(self) -> None:
        """Only the coordinator writes markers: one a check removed comes back, noted."""
        assert self.run_dir is not None
        if not (self.run_dir / MARKER).exists():
            (self.run_dir / MARKER).write_text("run in progress or interrupted\n")
            if self.audit:
                self.audit.append("tamper", what=f"{MARKER} was removed during the run; restored")

    # -- events ------------------------------------------------------------
    def run_started(self, info: RunInfo, contracts: ContractSet, plan: Plan) -> None:
        self.info, self.contracts = info, contracts
        self.run_dir = Path(info.evidence_dir)
        # the folder appears under its name only once it carries the INCOMPLETE marker
        staging = self.run_dir.with_name(f".{self.run_dir.name}.staging")
        staging.mkdir(parents=True)
        (staging / MARKER).write_text("run in progress or interrupted\n")
        os.rename(staging, self.run_dir)
        self._live = hold_run_lock(self.run_dir)  # `harness gc` leaves the run alone
        self.tasks = {t.key: t for t in plan.tasks}
        # the interpreter's versions, CPU and BLAS cost imports: a probe process collects
        # them while the services and the fork server start (checks_starting waits for it)
        self._local_env = local_environment(self.root)
        if self._env_probe is None:
            self._env_probe = EnvironmentProbe()
        self.run_meta = {
            "run_id": info.run_id,
            "tool": "harness",
            "tool_version": __version__,
            "git": self._local_env["git"],
            "contract_digest": contracts.digest,
            "contracts": {k.path: k.sha256 for k in contracts.contracts},
            "seed": info.seed,
            "profile": info.profile,
            "selection": info.selection,
            "jobs": info.jobs,
            "executor": info.executor,
            "started": info.started,
            "finished": None,
            "complete": False,
            "verdict": None,
        }
        self._lifecycle_log = declared_audit_log(self.root)
        if self._lifecycle_log is not None:  # a check must not write it: compared at the end
            self.run_meta["lifecycle_log"] = {
                "path": self._lifecycle_log.relative_to(self.root).as_posix(),
                "before": log_state(self._lifecycle_log),
            }
        self._write_run_file("run.json", dumps_json(self.run_meta).encode(), durable=True)
        for k in contracts.contracts:  # the contract text exactly as run, for rerun
            rel = f"contracts/{_safe_rel(k.path)}"
            self._write_run_file(rel, k.text.encode("utf-8"))
        self.audit = AuditLog(self.run_dir / "audit.jsonl")
        self.audit.append(
            "run_start",
            run_id=info.run_id,
            seed=info.seed,
            profile=info.profile,
            contract_digest=contracts.digest,
            git=self.run_meta["git"],
            signed=self.load_signer is not None,
        )

    def _write_environment(self) -> None:
        """``environment.json``, once the probe has answered (waiting for it). A Ctrl-C
        meanwhile ends the probe; the file then holds what needs no import, and says so."""
        probe = self._env_probe
        if probe is None:
            return
        self._env_probe = None
        interrupted: BaseException | None = None
        try:
            found = probe.result()  # the probe is ended whatever happens here
        except BaseException as exc:
            interrupted = exc
            why = "interrupted while waiting for the environment probe"
            found = {**interpreter_environment(imports=False), "probe_error": why}
        env = {**found, **self._local_env}
        self._write_run_file("environment.json", dumps_json(env).encode())
        if interrupted is not None:
            raise interrupted

    def checks_starting(self) -> None:
        self._write_environment()  # no check runs beside the probe

    def check_started(self, key: str, kind: str) -> None:
        if self.audit:
            self.audit.append("check_start", id=key, kind=kind)

    def check_sources(self, key: str, digests: Mapping[str, str]) -> None:
        self.sources.files.update(digests)
        self.sources.checks[key] = sorted(digests)

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

    def service_started(self, key: str, record: Mapping[str, object]) -> None:
        if self.audit:
            self.audit.append("service_started", service=key, url=record.get("url"),
                              ready_s=record.get("ready_s"), error=record.get("error"))  # fmt: skip

    def service_stopped(self, key: str, record: Mapping[str, object], log: Path) -> None:
        """The service's log (capped, redacted) as ``services/<key>.log``, sealed with
        the run's files; what it was in ``run.json``."""
        if self.run_dir is None:
            return
        data, size = read_capped(log, MAX_SERVICE_LOG)
        data = redact(data, self.redactions)
        if size > MAX_SERVICE_LOG:
            data += f"\n[harness: log truncated: kept {MAX_SERVICE_LOG} of {size} bytes]\n".encode()
        rel = f"services/{_safe_rel(key)}.log"
        self._write_run_file(rel, data)
        self.run_meta.setdefault("services", {})[key] = {**record, "log": rel}
        if self.audit:
            self.audit.append(
                "service_stopped",
                service=key,
                **{k: v for k, v in record.items() if k in ("url", "error", "exit_code")},
            )

    def criterion_finished(self, result: CriterionResult) -> None:
        assert self.run_dir is not None and self.contracts is not None
        self._restore_marker()
        cid = result.criterion_id
        self.sealed[cid] = {}
        self.order.append(cid)
        self._write_sealed(cid, "criterion.yaml", self._criterion_yaml(cid).encode("utf-8"))
        checks: list[InvariantResult | FalsifierResult] = [*result.invariants, *result.falsifiers]
        lines = [json.dumps(self._observation_line(r), sort_keys=True, default=str) for r in checks]
        self._write_sealed(cid, "observations.jsonl", ("\n".join(lines) + "\n").encode())
        metrics = [
            json.dumps({**m, "check": r.invariant_id}, sort_keys=True, default=str)
            for r in result.invariants
            for m in r.metrics
        ]
        self._write_sealed(cid, "metrics.jsonl", "".join(m + "\n" for m in metrics).encode())
        for r in checks:
            key = r.invariant_id if isinstance(r, InvariantResult) else r.falsifier_id
            self._copy_check_files(cid, key, r)
        verdict: dict[str, Any] = {
            "criterion_id": cid,
            "verdict": result.verdict.value,
            "severity": result.severity,
            "reasons": list(result.reasons),
        }
        if result.waiver is not None:  # the criterion's own verdict stays; this says WAIVED
            verdict["waiver"] = result.waiver.to_dict()
        self._write_sealed(cid, "verdict.json", dumps_json(verdict).encode())
        manifest = dict(sorted(self.sealed[cid].items()))
        manifest_bytes = dumps_json(manifest).encode()
        folder = self.run_dir / "criteria" / cid
        atomic_write_bytes(folder / "manifest.json", manifest_bytes, durable=False)
        statement = test_result_statement(
            result, manifest, hashlib.sha256(manifest_bytes).hexdigest(), self.run_meta["git"]
        )
        body = canonical_json(statement)
        atomic_write_bytes(folder / "statement.json", body, durable=False)
        self.statements[cid] = body  # signed with the verdict, once every check has ended

    def run_finished(self, result: RunResult) -> None:
        try:
            self._write_environment()
            self._seal(result)
        finally:
            if self._live is not None:
                os.close(self._live)
                self._live = None

    _lifecycle_log: Path | None = None

    def _check_committed(self) -> None:
        """A run from a clean checkout must have run the commit's bytes: every source a
        check imported and every contract is compared with the commit's blob. One that
        differs (a skip-worktree edit, an ignored module a check imports, a file changed
        during the run) makes the run dirty, as git status would have, and says which."""
        assert self.audit is not None
        git = self.run_meta.get("git")
        if not isinstance(git, dict) or git.get("dirty") is not False or not git.get("commit"):
            return
        files = dict(self.sources.files)
        for path, digest in self.run_meta.get("contracts", {}).items():
            rel = Path(path)
            if rel.is_absolute():
                try:
                    rel = rel.resolve().relative_to(self.root.resolve())
                except ValueError:
                    continue  # a contract outside the project: the contracts rule judges it
            files[rel.as_posix()] = digest
        differ = uncommitted_sources(self.root, str(git["commit"]), files)
        if differ:
            self.run_meta["git"] = {**git, "dirty": True, "uncommitted": differ[:50]}
            self.audit.append("uncommitted_sources", files=differ[:50], count=len(differ))

    def _seal(self, result: RunResult) -> None:
        assert self.run_dir is not None and self.audit is not None
        self._restore_marker()
        self._write_run_file("results.json", dumps_json(result.to_dict()).encode())
        self._write_run_file(SOURCES_FILE, dumps_json(self.sources.to_json()).encode())
        self._check_committed()
        if self._lifecycle_log is not None:
            self.run_meta["lifecycle_log"]["after"] = log_state(self._lifecycle_log)
        self.run_meta.update(
            finished=result.finished,
            complete=not result.interrupted,
            verdict=result.verdict.value,
            summary=result.summary_line(),
        )
        self._write_run_file("run.json", dumps_json(self.run_meta).encode())
        # every worker is gone: only now is the key decrypted
        signer, sign_error = None, None
        if self.load_signer is not None:
            try:
                signer = self.load_signer()
            except HarnessError as exc:  # the bundle is still written, unsigned, and says so
                sign_error = exc
                self.audit.append("sign_failed", error=str(exc))
        envelopes: dict[str, str] = {}
        for cid in self.order:
            envelope = dumps_json(make_envelope(self.statements[cid], STATEMENT_TYPE, signer))
            data = envelope.encode()
            path = self.run_dir / "criteria" / cid / "statement.dsse.json"
            atomic_write_bytes(path, data, durable=False)
            envelopes[cid] = hashlib.sha256(data).hexdigest()
            self.audit.append(
                "bundle_sealed",
                criterion=cid,
                verdict=next(
                    (c.verdict.value for c in result.criteria if c.criterion_id == cid), None
                ),
                envelope_sha256=envelopes[cid],
            )
        self.audit.append(
            "verdict",
            verdict=result.verdict.value,
            interrupted=result.interrupted,
            summary=result.summary_line(),
            keyid=signer.keyid if signer else None,
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
                    "envelope_sha256": envelopes.get(c.criterion_id),
                    # only with a waiver: active (WAIVED, not blocking), expired or unused
                    **({"waiver": c.waiver.status.value} if c.waiver is not None else {}),
                }
                for c in result.criteria
            },
            "contract_digest": result.contract_digest,
            "git": self.run_meta["git"],
            "seed": result.seed,
            "profile": result.profile,
            "audit_head": self.audit.head,
            "audit_count": self.audit.count,
            "run_files": dict(sorted(self.run_digests.items())),
            "signed": signer is not None,
            "keyid": signer.keyid if signer else None,
        }
        self.audit.close()
        # every file of the bundle on disk in one call, not an fsync each (a fsync storm
        # of two per criterion), before the verdict that seals them is written
        sync_filesystem(self.run_dir)
        body = canonical_json(verdict)
        atomic_write_bytes(self.run_dir / "verdict.json", body)
        atomic_write_json(
            self.run_dir / "verdict.dsse.json", make_envelope(body, VERDICT_TYPE, signer)
        )
        if sign_error is not None:
            (self.run_dir / MARKER).write_text(f"not signed: {sign_error}\n")
            raise sign_error
        if not result.interrupted:
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
            "seed": self.tasks[r.falsifier_id].seed if r.falsifier_id in self.tasks else None,
        }

    def _copy_check_files(self, cid: str, key: str, r: InvariantResult | FalsifierResult) -> None:
        """Copy a check's logs (capped, redacted) and its declared artifacts."""
        task = self.tasks.get(key)
        if task is None:
            return
        src = Path(task.check_dir)
        cap = task.limits.output
        for name in sorted(r.logs):
            data, size = read_capped(src / f"{name}.txt", cap)
            if not size:  # an empty log says nothing
                continue
            data = redact(data, self.redactions)
            if size > cap:
                data += (
                    f"\n[harness: output truncated: kept {cap} of {size} bytes; "
                    "raise 'limits: {output: ...}' to keep more]\n"
                ).encode()
            self._write_sealed(cid, f"logs/{key}.{name}.txt", data)
        arts = src / "artifacts"
        for name in r.artifacts:
            for rel, path in declared_files(arts, name):
                data, size = read_capped(path, MAX_ARTIFACT)
                if size > MAX_ARTIFACT:
                    continue  # too big to seal: left out, and the manifest says nothing of it
                self._write_sealed(cid, f"artifacts/{key}/{rel}", data)
