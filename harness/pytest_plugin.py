"""pytest collects contracts as items: ``pytest contracts/ -k repro``.

A contract file (a YAML file under a ``[tool.harness] contracts`` path, or one
starting with the harness's yaml-language-server schema line) becomes a
``ContractFile``; each acceptance criterion in it becomes a ``CriterionItem``
that runs the criterion's invariants and falsifiers through the harness's own
worker pool. An item agrees with ``harness run``'s exit code (docs/ci.md): it
fails when its criterion fails the run (a blocker NO-GO or UNPROVEN under the
default ``--harness-fail-on unproven``); a criterion that is NO-GO or UNPROVEN but
only reported (a warn criterion, or a blocker the chosen level lets pass) is
xfailed with its verdict and first reason, as is a WAIVED one (its waiver holds)
with its own verdict and the waiver; GO, and the fast profile's UNPROVEN-FAST when
it passes the gate, pass. Nothing is collected from a folder
the harness writes (the evidence directory, with each run's contract copies,
``.harness/``, a run bundle wherever ``--evidence-dir`` put it). This module imports
nothing heavy at start-up: the harness is imported only when a contract is
collected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.model import FailOn

_SCHEMA_MARK = "yaml-language-server: $schema="


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "contract harness")
    group.addoption(
        "--harness-profile",
        choices=("full", "fast", "teeth"),
        default="full",
        help="profile for contract items (default: full)",
    )
    group.addoption(
        "--harness-fail-on",
        choices=[f.value for f in FailOn],
        default="unproven",
        help="which blocker verdicts fail a contract item, as harness run --fail-on "
        "(default: unproven); warn criteria never fail, they xfail",
    )
    group.addoption("--harness-seed", type=int, default=None, help="seed for contract items")
    group.addoption("--harness-jobs", type=int, default=None, help="workers per criterion")


def _contract_dirs(config: pytest.Config) -> list[Path]:
    cached = getattr(config, "_harness_dirs", None)
    if cached is None:
        from harness.config import load_config

        try:
            cached = [p.resolve() for p in load_config(Path(config.rootpath)).contracts]
        except Exception:
            cached = []
        config._harness_dirs = cached  # type: ignore[attr-defined]
    return list(cached)


def _written_dirs(config: pytest.Config) -> list[Path]:
    """The folders the tool writes in the project at pytest's rootdir (its evidence
    directory and ``.harness/``), resolved; none in a project whose pyproject.toml
    does not configure the harness (read once per session, and without importing the
    harness there: the plugin is loaded in every pytest session)."""
    cached = getattr(config, "_harness_written", None)
    if cached is None:
        cached = []
        here = Path(config.rootpath).resolve()
        found = [d / "pyproject.toml" for d in (here, *here.parents)]
        pyproject = next((f for f in found if f.is_file()), None)
        try:
            configured = pyproject is not None and "tool.harness" in pyproject.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            configured = False
        if configured:
            from harness.config import load_config

            try:
                cfg = load_config(here)
                cached = [cfg.evidence_dir.resolve(), (cfg.root / ".harness").resolve()]
            except Exception:
                cached = []
        config._harness_written = cached  # type: ignore[attr-defined]
    return list(cached)


# A run's bundle (harness/evidence.py): run.json beside the audit trail, or beside the
# INCOMPLETE marker while the run goes on. Recognised wherever --evidence-dir put it.
_BUNDLE_FILES = ("audit.jsonl", "INCOMPLETE")


def _is_bundle(folder: Path) -> bool:
    return (folder / "run.json").is_file() and any(
        (folder / name).is_file() for name in _BUNDLE_FILES
    )


def _written_by_harness(path: Path, config: pytest.Config, *, upward: bool = False) -> bool:
    """``path`` is a folder the tool writes, or in one: the evidence directory (with
    the contract copies of every run in ``<run>/contracts/``), ``.harness/``, or a run
    bundle anywhere else (``upward``: also when a folder above ``path`` is one)."""
    resolved = path.resolve()
    if any(resolved.is_relative_to(d) for d in _written_dirs(config)):
        return True
    if not upward:
        return resolved.is_dir() and _is_bundle(resolved)
    return any(_is_bundle(folder) for folder in resolved.parents)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Never collect from a folder the harness writes: after ``harness run``, plain
    ``pytest`` must not find the contract copies (or a check's artifacts) in the
    evidence. Called for each folder before pytest enters it, so a bundle is skipped
    whole. None (not False) otherwise, so pytest's own ``--ignore`` still works."""
    return True if _written_by_harness(collection_path, config) else None


def _is_contract(path: Path, config: pytest.Config) -> bool:
    if path.suffix not in (".yaml", ".yml") or _written_by_harness(path, config, upward=True):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.readline()
    except OSError:
        return False
    if _SCHEMA_MARK in head and "contract" in head:
        return True
    resolved = path.resolve()
    return any(resolved.is_relative_to(d) for d in _contract_dirs(config))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_contract(file_path, parent.config):
        return ContractFile.from_parent(parent, path=file_path)
    return None


class ContractLoadError(HarnessError):
    """A contract file collected by pytest does not load."""


class ContractFile(pytest.File):
    def collect(self) -> Any:
        from harness.config import load_config
        from harness.errors import ContractError
        from harness.loader import display_path, load_contract_set

        cfg = load_config(Path(self.config.rootpath))
        try:
            contracts = load_contract_set([*[p for p in cfg.contracts if p.exists()], self.path])
        except ContractError as exc:
            raise ContractLoadError(str(exc)) from None
        shown = display_path(self.path)
        for contract in contracts.contracts:
            if Path(contract.path).resolve() == self.path.resolve() or contract.path == shown:
                for criterion in contract.criteria:
                    yield CriterionItem.from_parent(
                        self,
                        name=criterion.id,
                        criterion=criterion,
                        contracts=contracts,
                        config_=cfg,
                    )


class CriterionNotGo(HarnessError):
    """A criterion run as a pytest item was not GO."""

    def __init__(self, result: Any) -> None:
        self.result = result
        super().__init__(result.verdict.value)


class CriterionItem(pytest.Item):
    def __init__(self, *, criterion: Any, contracts: Any, config_: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.criterion = criterion
        self.contracts = contracts
        self.harness_config = config_
        self.extra_keyword_matches.update(
            {*criterion.tags, *criterion.invariants, criterion.severity}
        )

    def runtest(self) -> None:
        from harness.judge import blocks_gate
        from harness.model import Verdict
        from harness.runner import RunRequest, run

        cfg = self.harness_config
        opt = self.config.getoption
        result = run(
            RunRequest(
                self.contracts,
                (self.criterion,),
                jobs=cfg.effective_jobs(opt("--harness-jobs")),
                seed=opt("--harness-seed"),
                profile=opt("--harness-profile"),
                fail_on=opt("--harness-fail-on"),
                evidence_root=None,
                root=cfg.root,
                default_timeout=cfg.default_timeout,
                allowed=cfg.allowed_packages,
                check_env=cfg.check_env,
                regressions=cfg.regressions,
                max_waiver_days=cfg.max_waiver_days,
            )
        )
        crit = result.criteria[0]
        self.user_properties.append(("verdict", crit.verdict.value))
        fail_on = opt("--harness-fail-on")
        if blocks_gate(crit, fail_on):
            raise CriterionNotGo(crit)
        first = f": {crit.reasons[0]}" if crit.reasons else ""
        if crit.waived:
            assert crit.waiver is not None
            pytest.xfail(f"WAIVED ({crit.verdict.value}), {crit.waiver.note()}{first}")
        if crit.verdict in (Verdict.NO_GO, Verdict.UNPROVEN):
            why = "a warn criterion" if crit.severity == "warn" else f"--harness-fail-on {fail_on}"
            pytest.xfail(f"{crit.verdict.value}, reported only ({why}){first}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, CriterionNotGo):
            r = excinfo.value.result
            lines = [f"{r.criterion_id} {r.title}: {r.verdict.value}"]
            lines += [f"  {reason}" for reason in r.reasons]
            lines += [f"  {r.waiver.note()}"] if r.waiver is not None else []
            return "\n".join(lines)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return (
            self.path,
            self.criterion.location.line - 1,
            f"{self.criterion.id}: {self.criterion.title}",
        )
