"""``harness rerun`` and ``harness promote``: replay a run, sign off a run."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import Refused, UsageError
from harness.model import ContractSet, RunResult
from harness.sources import source_diff

ENV_KEYS = ("python", "packages", "blas", "threads", "dependency_digest")


# --------------------------------------------------------------------------- rerun


def require_verified(run_dir: Path, key_paths: list[Path]) -> None:
    """Refuse a bundle that does not verify under one of ``key_paths``: rerun runs
    the contracts stored in it, so they must be the ones a trusted key signed."""
    from harness.signing import load_public_key
    from harness.verify import verify_run

    if not key_paths:
        raise UsageError(
            f"rerun runs the contracts stored in {run_dir}, so it verifies the bundle first: "
            "pass --key PUB.pem (or set [tool.harness] allowed-keys), or --unverified for "
            "an unsigned bundle you made yourself"
        )
    problems = verify_run(run_dir, [load_public_key(k) for k in key_paths])
    if problems:
        raise RerunRefused(
            [
                f"{run_dir} does not verify, so none of its stored contracts was run:",
                *problems,
                "(an unsigned bundle you made yourself: rerun it with --unverified)",
            ]
        )


def load_recorded(run_dir: Path) -> tuple[dict[str, Any], ContractSet, RunResult]:
    """The recorded run.json, contracts and results; a malformed one is a UsageError."""
    from harness.loader import load_contract_set

    try:
        meta = json.loads((run_dir / "run.json").read_text())
        results = json.loads((run_dir / "results.json").read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{run_dir}: not a finished run ({exc.filename} is missing)") from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{run_dir}: run.json or results.json is unreadable: {exc}") from exc
    problems = _meta_problems(meta)
    if problems:
        raise UsageError(f"{run_dir / 'run.json'}: " + "; ".join(problems))
    try:
        old = RunResult.from_dict(results)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{run_dir / 'results.json'}: not a run's results ({exc!r})") from exc
    contracts = load_contract_set([run_dir / "contracts"])
    return meta, contracts, old


def _meta_problems(meta: Any) -> list[str]:
    from harness.plan import Profile

    if not isinstance(meta, dict):
        return [f"not a JSON object ({type(meta).__name__})"]
    problems = []
    if not isinstance(meta.get("run_id"), str):
        problems.append("run_id is not a string")
    if type(meta.get("seed")) is not int:
        problems.append("seed is not an integer")
    if meta.get("profile", "full") not in {p.value for p in Profile}:
        problems.append(f"profile {meta.get('profile')!r} is not a profile")
    sel = meta.get("selection", {})
    if not isinstance(sel, dict):
        problems.append("selection is not an object")
    else:
        if not isinstance(sel.get("keyword"), (str, type(None))):
            problems.append("selection.keyword is not a string")
        for key in ("tags", "criteria"):
            value = sel.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"selection.{key} is not a list of strings")
    return problems


def _tolerance(contracts: ContractSet, inv_id: str, name: str) -> tuple[float, float] | None:
    inv = contracts.invariants.get(inv_id)
    for e in inv.expect if inv else ():
        if e.observation == name and "approx" in e.comparators:
            return float(e.comparators.get("rel", 0.0)), float(e.comparators.get("abs", 0.0))
    return None


def _same(a: Any, b: Any, tol: tuple[float, float] | None) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        if tol is None:
            return a.hex() == b.hex()
        return abs(a - b) <= max(tol[0] * abs(a), tol[1])
    return bool(a == b and type(a) is type(b))


def compare_runs(contracts: ContractSet, old: RunResult, new: RunResult) -> list[str]:
    """Differences in verdicts and observations (bitwise unless a tolerance is declared)."""
    diffs: list[str] = []
    old_by = {c.criterion_id: c for c in old.criteria}
    for c in new.criteria:
        before = old_by.get(c.criterion_id)
        if before is None:
            diffs.append(f"{c.criterion_id}: not in the recorded run")
            continue
        if before.verdict != c.verdict:
            diffs.append(f"{c.criterion_id}: verdict {before.verdict.value} -> {c.verdict.value}")
        old_inv = {r.invariant_id: r for r in before.invariants}
        for r in c.invariants:
            prev = old_inv.get(r.invariant_id)
            if prev is None:
                continue
            if prev.outcome != r.outcome:
                diffs.append(f"{r.invariant_id}: {prev.outcome.value} -> {r.outcome.value}")
            for name in sorted(set(prev.observations) | set(r.observations)):
                a, b = prev.observations.get(name), r.observations.get(name)
                if not _same(a, b, _tolerance(contracts, r.invariant_id, name)):
                    diffs.append(f"{r.invariant_id}.{name}: {a!r} -> {b!r}")
        old_fal = {f.falsifier_id: f for f in before.falsifiers}
        for f in c.falsifiers:
            prev_f = old_fal.get(f.falsifier_id)
            if prev_f is not None and prev_f.outcome != f.outcome:
                diffs.append(f"{f.falsifier_id}: {prev_f.outcome.value} -> {f.outcome.value}")
    return diffs


def environment_diff(old_dir: Path, new_dir: Path) -> list[str]:
    try:
        a = json.loads((old_dir / "environment.json").read_text())
        b = json.loads((new_dir / "environment.json").read_text())
    except (OSError, ValueError):
        return ["environment: not recorded in one of the runs"]
    out = []
    for key in ENV_KEYS:
        if a.get(key) != b.get(key):
            out.append(f"environment.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    ca, cb = a.get("cpu", {}), b.get("cpu", {})
    for key in ("model", "numba_cpu_name", "cores"):
        if ca.get(key) != cb.get(key):
            out.append(f"environment.cpu.{key}: {ca.get(key)!r} -> {cb.get(key)!r}")
    return _git_diff(old_dir, new_dir) + out


def _git_diff(old_dir: Path, new_dir: Path) -> list[str]:
    """The code each run was made from (run.json's git, and the digests of the project
    source files its checks imported: sources.json), when it differs: a rerun with
    --here runs today's checkout, so a DIFFERS may come from the code, not from the run."""

    def git(run_dir: Path) -> dict[str, Any]:
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta.get("git") if isinstance(meta.get("git"), dict) else {}

    a, b = git(old_dir), git(new_dir)
    out = []
    if a.get("commit") != b.get("commit"):
        out.append(
            f"git.commit: {str(a.get('commit'))[:12]} -> {str(b.get('commit'))[:12]}: "
            "the code changed since that run; differences may come from it"
        )
    if a.get("dirty") or b.get("dirty"):
        out.append(
            f"git.dirty: {a.get('dirty')!r} -> {b.get('dirty')!r}: uncommitted or untracked "
            "files were part of at least one run"
        )
    return out + source_diff(old_dir, new_dir)


# --------------------------------------------------------------------------- rerun


def rerun_at_commit(
    root: Path,
    run_dir: Path,
    meta: dict[str, Any],
    evidence: Path,
    argv: list[str],
    secrets: dict[str, Any],
    echo: Any = print,
) -> int | None:
    """Rerun ``run_dir`` with the code of the commit it was made at: check that commit
    out in a temporary git worktree (also when this checkout is at that commit: git
    status can be blind to a change) and run ``harness rerun --here`` there, from the
    project's folder in it (``root`` may be a subfolder of the repository: a monorepo).
    Returns its exit code. Refuses a run made from a dirty tree or at a commit this
    repository does not have."""
    import os
    import subprocess
    import sys
    import tempfile

    from harness.signing import PASSPHRASE_ENV, PIN_ENV

    recorded = meta.get("git")
    git: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    commit, dirty = git.get("commit"), git.get("dirty")
    import re

    if (
        dirty is not False
        or not isinstance(commit, str)
        or not re.fullmatch(r"[0-9a-f]{40}", commit)
    ):
        why = "from a tree with uncommitted or untracked files" if dirty else "outside git"
        raise UsageError(
            f"{run_dir} was made {why}: its code cannot be checked out again; "
            "rerun --here to run it with this checkout's code"
        )
    if subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True
    ).returncode:
        raise UsageError(
            f"{run_dir} was made at commit {commit[:12]}, which {root} does not have; "
            "fetch it, or rerun --here"
        )
    # always from the commit's own tree, even when this checkout is at it: git status can
    # be blind to a change (skip-worktree, an ignored file a check imports)
    prefix = subprocess.run(  # the project's folder in the repository ("" at its top)
        ["git", "rev-parse", "--show-prefix"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="harness-rerun-") as tmp:
        tree = Path(tmp) / "tree"
        added = subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), commit],
            cwd=root, capture_output=True, text=True,
        )  # fmt: skip
        if added.returncode:
            last = (added.stderr.strip().splitlines() or ["git worktree add failed"])[-1]
            raise UsageError(f"cannot check out {commit[:12]} in a worktree: {last}")
        project = tree / prefix if prefix else tree
        try:
            if not (project / "pyproject.toml").is_file():
                raise UsageError(
                    f"commit {commit[:12]} has no {prefix or './'}pyproject.toml: the project "
                    "was elsewhere in the repository then; rerun --here"
                )
            echo(f"rerunning at the run's commit {commit[:12]} in a temporary worktree")
            env = dict(os.environ)
            if secrets.get("passphrase"):
                env[PASSPHRASE_ENV] = secrets["passphrase"].decode()
            if secrets.get("pin"):
                env[PIN_ENV] = secrets["pin"]
            # the worktree's project folder first (its packages), ahead of an editable
            # install's finder
            code = (
                "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from harness.cli import main; sys.exit(main())"
            )
            cmd = [sys.executable, "-c", code, str(project), "rerun", "--here", str(run_dir),
                   f"--evidence-dir={evidence}", *argv]  # fmt: skip
            with subprocess.Popen(
                cmd, cwd=project, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            ) as proc:  # fmt: skip
                assert proc.stdout is not None
                for line in proc.stdout:  # progress as it comes
                    echo(line.rstrip("\n"))
            return proc.returncode
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True
            )
            subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)


# --------------------------------------------------------------------------- promote


@dataclass(frozen=True)
class Rule:
    """One promotion rule as evaluated: its name, whether it holds, and why."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def promotion_rules(
    run_dir: Path,
    allowed_keys: list[Path],
    root: Path | None = None,
    required: Collection[str] | None = None,
    policy: Any = None,
    target: str = "",
    *,
    contracts: Collection[str] | None = None,
    require_policy: bool = False,
    evaluation: dict[str, Any] | None = None,
    ledger: Path | None = None,
) -> list[Rule]:
    """Every rule a promotion of ``run_dir`` must pass. Only a signed, GO, full readiness
    run, of no selection, from a clean tree is promotable; with ``root`` (the candidate's
    checkout) it must have been made at that checkout's commit, clean now too; with
    ``required`` (criterion IDs, default in the CLI: every blocker of the contract set)
    each must be in it and GO; with ``contracts`` (the sha256 of each of the candidate's
    contract files) it must have run exactly those; with ``policy``, the target's
    candidate and sign-off rules (``require_policy``: a missing policy is a failed rule).
    ``evaluation`` receives what the policy rules found (the candidate's digests, the
    roles whose sign-off holds), so a promotion records exactly what was judged.
    Nothing after the signature is read from a bundle that does not verify."""
    from harness.environment import git_state
    from harness.signing import load_public_key
    from harness.verify import verify_run

    if not allowed_keys:
        why = "no allowed keys: pass --allowed-key PUB.pem or set [tool.harness] allowed-keys"
        return [Rule("signature", False, why)]
    problems = verify_run(run_dir, [load_public_key(k) for k in allowed_keys])
    if problems:
        detail = "the run does not verify under an allowed key: " + "; ".join(problems[:3])
        return [Rule("signature", False, detail + (" ..." if len(problems) > 3 else ""))]
    rules = [Rule("signature", True, "the bundle verifies under an allowed key")]
    verdict = json.loads((run_dir / "verdict.json").read_text())
    v = verdict.get("verdict")
    rules.append(Rule("verdict", v == "GO", f"the run's verdict is {v}"))
    crits = verdict.get("criteria") if isinstance(verdict.get("criteria"), dict) else {}
    waived = sorted(
        cid
        for cid, c in crits.items()
        if isinstance(c, dict) and c.get("waiver") == "active" and c.get("severity") == "blocker"
    )
    rules.append(
        Rule(
            "no waiver",
            not waived,
            "no blocker criterion is WAIVED"
            if not waived
            else f"WAIVED (a waiver lets the gate pass, never a promotion): {', '.join(waived[:5])}"
            + (" ..." if len(waived) > 5 else ""),
        )
    )
    profile = verdict.get("profile")
    rules.append(
        Rule(
            "profile",
            profile == "full",
            f"profile {profile}"
            + ("" if profile == "full" else ": only a full readiness run is promotable"),
        )
    )
    git = verdict.get("git") if isinstance(verdict.get("git"), dict) else {}
    dirty, commit = git.get("dirty"), git.get("commit")
    rules.append(
        Rule(
            "clean tree",
            dirty is False,
            "made from a clean checkout"
            if dirty is False
            else "made from a tree with uncommitted or untracked files"
            if dirty
            else "made outside a git checkout (no commit to bind)",
        )
    )
    meta = json.loads((run_dir / "run.json").read_text())  # a run file the verdict sealed
    selection = meta.get("selection") if isinstance(meta.get("selection"), dict) else {}
    chosen = sorted(k for k, v in selection.items() if v)
    rules.append(
        Rule(
            "no selection",
            not chosen,
            f"a selection ({', '.join(chosen)}) is never a readiness run"
            if chosen
            else "the run ran every criterion it was given",
        )
    )
    if contracts is not None:
        ran = meta.get("contracts") if isinstance(meta.get("contracts"), dict) else {}
        same = sorted(map(str, ran.values())) == sorted(contracts)
        rules.append(
            Rule(
                "contracts",
                same,
                f"the run's {len(ran)} contract file(s) are the candidate's"
                if same
                else f"the run's {len(ran)} contract file(s) differ from the candidate's "
                f"{len(contracts)} (contracts from elsewhere, or older text)",
            )
        )
    if root is not None:
        now = git_state(root)
        head = now.get("commit")
        rules.append(
            Rule(
                "candidate commit",
                commit is not None and commit == head and now.get("dirty") is False,
                f"run at {str(commit)[:12]}, candidate {root} at {str(head)[:12]}"
                + ("" if now.get("dirty") is False else " with uncommitted or untracked files"),
            )
        )
    if required is not None:
        crits = verdict.get("criteria") if isinstance(verdict.get("criteria"), dict) else {}
        missing = sorted(set(required) - set(crits))
        not_go = sorted(c for c in set(required) & set(crits) if crits[c].get("verdict") != "GO")
        detail = f"{len(required) - len(missing) - len(not_go)}/{len(required)} required GO"
        if missing:
            detail += f"; not run: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        if not_go:
            detail += f"; not GO: {', '.join(not_go[:5])}" + (" ..." if len(not_go) > 5 else "")
        rules.append(Rule("required criteria", not missing and not not_go, detail))
    if policy is not None:
        rules += policy_rules(run_dir, policy, target, evaluation, ledger)
    elif require_policy:
        rules.append(
            Rule(
                "policy",
                False,
                "no release-policy.yaml: promotion needs the roles that sign off and the "
                "candidate it releases (docs/releasing.md)",
            )
        )
    return rules


def _rel_to(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _ledger_entries(ledger: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, entry)`` for each line of the registry that is a JSON object;
    the others are skipped (the hash chain reports them)."""
    for n, line in enumerate(ledger.read_bytes().split(b"\n"), 1):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict):
            yield n, entry


def ledger_records(ledger: Path | None) -> list[dict[str, Any]]:
    """The promotion records of the registry (its chain and signatures are checked by
    ``verify_ledger``; here only what they anchor is read)."""
    if ledger is None or not ledger.is_file():
        return []
    records = (entry.get("record") for _, entry in _ledger_entries(ledger))
    return [record for record in records if isinstance(record, dict)]


def policy_rules(
    run_dir: Path,
    policy: Any,
    target: str,
    evaluation: dict[str, Any] | None = None,
    ledger: Path | None = None,
) -> list[Rule]:
    """The release policy's rules for ``target``: the candidate (its artifacts exist and
    every weights file is stamped ``purpose: ship``: never an ablation, never unstamped)
    and the sign-offs (k of the target's roles, each signed by the role's committed key
    over this run and this candidate). ``evaluation`` receives the digests and roles."""
    from harness.errors import HarnessError
    from harness.policy import (
        audited_candidate,
        candidate_digests,
        stamped_purpose,
        valid_signoffs,
    )

    spec = policy.target(target)
    try:
        digests = candidate_digests(policy, spec)
    except HarnessError as exc:
        return [Rule("candidate", False, str(exc))]
    purposes = {rel: stamped_purpose(policy.root / rel) for rel in spec.candidate}
    wrong = [
        f"{rel} ({', '.join(sorted(p - {'ship'}))})" for rel, p in purposes.items() if p - {"ship"}
    ]
    rules = [
        Rule(
            "candidate",
            not wrong,
            f"{len(digests)} artifact(s) bound by digest"
            + (f"; not stamped purpose: ship: {', '.join(wrong)}" if wrong else ""),
        )
    ]
    if policy.audit_log is not None:
        meta = json.loads((run_dir / "run.json").read_text())  # sealed: the bundle verified
        during = meta.get("lifecycle_log") if isinstance(meta, dict) else None
        if not isinstance(during, dict) or during.get("path") != _rel_to(
            policy.audit_log, policy.root
        ):
            during = {"before": "not recorded by the run", "after": None}
        anchors = [
            {**r["lifecycle"], "run_id": r.get("run_id")}
            for r in ledger_records(ledger)
            if isinstance(r.get("lifecycle"), dict)
            and r["lifecycle"].get("log") == _rel_to(policy.audit_log, policy.root)
        ]
        unaudited = audited_candidate(policy, spec, anchors, during)
        rules.append(
            Rule(
                "lifecycle",
                not unaudited,
                "; ".join(unaudited)
                if unaudited
                else f"every weights file was written by an audited training run that data "
                f"governance allowed ({policy.audit_log.name})",
            )
        )
    good, why = valid_signoffs(run_dir, policy, spec, digests)
    detail = f"{len(good)} of {spec.k} required ({', '.join(spec.roles)})"
    rules.append(Rule("sign-offs", len(good) >= spec.k, "; ".join([detail, *why])))
    if evaluation is not None:
        evaluation.update(candidate=digests, signoffs=good)
    return rules


def promotion_problems(
    run_dir: Path,
    allowed_keys: list[Path],
    root: Path | None = None,
    required: Collection[str] | None = None,
    policy: Any = None,
    target: str = "",
    **options: Any,
) -> list[str]:
    """Why ``run_dir`` may not be promoted (empty: it may)."""
    return _failures(
        promotion_rules(run_dir, allowed_keys, root, required, policy, target, **options)
    )


def _failures(rules: list[Rule]) -> list[str]:
    """``name: detail`` of each rule that failed."""
    return [f"{r.name}: {r.detail}" for r in rules if not r.ok]


def promotion_record(run_dir: Path, name: str, keyid: str, signer_name: str) -> dict[str, Any]:
    """What a promotion of ``run_dir`` to ``name`` by the key ``keyid`` records."""
    import datetime as _dt

    from harness.fsutil import sha256_file

    verdict = json.loads((run_dir / "verdict.json").read_text())
    return {
        "name": name,
        "run_id": verdict["run_id"],
        "run_dir": str(run_dir),
        "verdict": verdict["verdict"],
        "verdict_sha256": sha256_file(run_dir / "verdict.json"),
        "run_signed_by": verdict.get("keyid"),
        "contract_digest": verdict.get("contract_digest"),
        "git": verdict.get("git"),
        "promoted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "promoted_by": keyid,
        "signer_name": signer_name,
    }


def promote(
    run_dir: Path,
    name: str,
    allowed_keys: list[Path],
    signer: Any,
    ledger: Path,
    signer_name: str = "",
    root: Path | None = None,
    required: Collection[str] | None = None,
    policy: Any = None,
    on_rules: Callable[[list[Rule]], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Refuse unless every rule of ``promotion_rules`` holds (with ``policy``: its rules
    for the target ``name`` too; ``options``: its keyword options); then append a signed
    promotion record to the hash-chained ``ledger``, binding the candidate's digests and
    the sign-offs exactly as they were judged. ``on_rules`` is shown the rules judged,
    pass or fail (the CLI prints them): the rules are evaluated once, so what is shown
    is what was decided."""
    from auditchain import AuditLog
    from harness.signing import PROMOTION_TYPE, canonical_json, make_envelope

    unsigned = ["a promotion must be signed: pass --sign-key (the promoter's private key)"]
    if signer is None and on_rules is None:  # nothing to show: refused before any reading
        raise PromotionRefused(unsigned)
    judged: dict[str, Any] = {}
    rules = promotion_rules(
        run_dir, allowed_keys, root, required, policy, name, evaluation=judged,
        ledger=ledger, **options,
    )  # fmt: skip
    if on_rules is not None:
        on_rules(rules)
    if signer is None:  # the rules were shown: a dry run says what would fail
        raise PromotionRefused(unsigned)
    problems = _failures(rules)
    if problems:
        raise PromotionRefused(problems)
    record = promotion_record(run_dir, name, signer.keyid, signer_name)
    if policy is not None:
        record.update(candidate=judged["candidate"], signoffs=judged["signoffs"])
    if policy is not None and policy.audit_log is not None:  # signed: history up to here
        from harness.policy_paths import log_state

        record["lifecycle"] = {
            "log": _rel_to(policy.audit_log, policy.root),
            **log_state(policy.audit_log),
        }
    envelope = make_envelope(canonical_json(record), PROMOTION_TYPE, signer)
    log = AuditLog(ledger)
    try:
        log.append("promotion", record=record, envelope=envelope)
    finally:
        log.close()
    if policy is not None and policy.audit_log is not None:  # the model's own chain
        with AuditLog(policy.audit_log, durable=True) as lifecycle:
            lifecycle.append("promotion", record=record, envelope=envelope)
    return record


def verify_ledger(ledger: Path, public_keys: list[Any]) -> list[str]:
    """The promotion ledger's chain holds and every record's envelope verifies."""
    from auditchain import verify_chain
    from harness.shapes import open_envelope_strict
    from harness.signing import PROMOTION_TYPE, canonical_json

    _, count, problems = verify_chain(ledger)
    problems = [f"{ledger}: {p}" for p in problems]
    if count == 0:
        return [*problems, f"{ledger}: no promotion recorded"]
    for n, entry in _ledger_entries(ledger):  # a line that is no object: the chain said so
        opened = open_envelope_strict(entry.get("envelope"), public_keys, PROMOTION_TYPE)
        problems += [f"{ledger}:{n}: {p}" for p in opened.problems]
        try:
            same = opened.payload == canonical_json(entry.get("record"))
        except (ValueError, TypeError, RecursionError):
            same = False
        if opened.payload is not None and not same:
            problems.append(f"{ledger}:{n}: record differs from its signed payload")
        record = entry.get("record")
        claimed = record.get("promoted_by") if isinstance(record, dict) else None
        if opened.keyids and claimed not in opened.keyids:
            problems.append(
                f"{ledger}:{n}: promoted_by {claimed!r} is not the key that signed the record"
            )
    return problems


class BundleRefused(Refused):
    """A command refused a bundle; ``reasons`` says every rule that failed (exit 1)."""

    what = "refused"

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(
            f"{self.what}: "
            + "; ".join(reasons[:3])
            + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")
        )

    def report_lines(self) -> list[str]:
        return [f"harness: {self.what}:", *(f"  {r}" for r in self.reasons)]


class RerunRefused(BundleRefused):
    """``harness rerun`` refused a bundle that does not verify."""

    what = "rerun refused"


class PromotionRefused(BundleRefused):
    """A promotion was refused; ``reasons`` says every rule that failed (exit 1)."""

    what = "promotion refused"
