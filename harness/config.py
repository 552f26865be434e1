"""``[tool.harness]`` in pyproject.toml: where contracts live, where evidence goes."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.model import MAX_WAIVER_DAYS
from harness.plan import Limits
from harness.signing import PIN_VALUE, is_pkcs11_uri

DEFAULT_TIMEOUT = 600.0
KNOWN_KEYS = {
    "contracts",
    "evidence-dir",
    "default-timeout",
    "allowed-packages",
    "jobs",
    "sign-key",
    "allowed-keys",
    "promotions",
    "regressions",
    "profile",
    "commands",
    "pass-env",
    "check-env",
    "preload",
    "limits",
    "executor",
    "scheduler",
    "max-waiver-days",
}
EXECUTORS = ("local", "dask")
#: set by the harness for every check: check-env may not name them
RESERVED_ENV = ("HARNESS_SCRATCH", "HARNESS_SEED", "HARNESS_PARAMS")


@dataclass(frozen=True)
class Config:
    root: Path
    contracts: tuple[Path, ...] = ()
    evidence_dir: Path = Path("evidence")
    default_timeout: float = DEFAULT_TIMEOUT
    allowed_packages: tuple[str, ...] = ()  # empty: any importable module
    jobs: int = 0  # 0: the number of cores
    sign_key: Path | str | None = None  # a PEM file, or a pkcs11: URI (harness/hsm.py)
    allowed_keys: tuple[Path, ...] = ()
    promotions: Path | None = None  # the promotion registry; None: <root>/release/promotions.jsonl
    regressions: Path | None = None  # the counterexample store; None: <root>/contracts/.regressions
    pyproject: Path | None = None
    commands: dict[str, str] = field(default_factory=dict)  # name -> "module:click_command"
    pass_env: tuple[str, ...] = ()  # variables (or patterns) checks get beyond the allowlist
    # variables set for every check, "{scratch}" replaced by its scratch folder; set
    # before an invariant's pass-env values, which win
    check_env: dict[str, str] = field(default_factory=dict)
    preload: tuple[str, ...] = ()  # modules the fork server imports once, before any check
    limits: Limits = field(default_factory=Limits)  # per-check defaults
    executor: str = "local"  # "local" (the fork server's pool) or "dask"
    scheduler: str | None = None  # dask: the scheduler's address; None: a LocalCluster
    max_waiver_days: int = MAX_WAIVER_DAYS  # the longest a waiver may run from today
    extra: dict[str, object] = field(default_factory=dict)

    def effective_jobs(self, requested: int | None = None) -> int:
        n = requested if requested else self.jobs
        return n if n and n > 0 else (os.cpu_count() or 1)


def find_project_root(start: Path | None = None) -> Path:
    """The nearest directory upward holding a pyproject.toml, else ``start``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def load_config(start: Path | None = None) -> Config:
    root = find_project_root(start)
    pyproject = root / "pyproject.toml"
    table: dict[str, object] = {}
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{pyproject}: invalid TOML: {exc}") from exc
        table = data.get("tool", {}).get("harness", {})
        if not isinstance(table, dict):
            raise UsageError(f"{pyproject}: [tool.harness] must be a table")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise UsageError(
            f"{pyproject}: unknown key(s) in [tool.harness]: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_KEYS))})"
        )

    def paths(key: str, default: list[str]) -> tuple[Path, ...]:
        raw = table.get(key, default)
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise UsageError(f"{pyproject}: [tool.harness] {key} must be a list of paths")
        return tuple(root / p for p in raw)

    try:
        timeout = float(table.get("default-timeout", DEFAULT_TIMEOUT))  # type: ignore[arg-type]
        jobs = int(table.get("jobs", 0))  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"{pyproject}: [tool.harness] default-timeout/jobs must be numbers"
        ) from exc
    sign_key = table.get("sign-key")
    if is_pkcs11_uri(sign_key) and PIN_VALUE.search(str(sign_key)):
        raise UsageError(
            f"{pyproject}: [tool.harness] sign-key: keep the PIN out of pyproject.toml "
            "(drop pin-value=; set $HARNESS_PKCS11_PIN when you run)"
        )
    allowed = table.get("allowed-packages", [])
    if not isinstance(allowed, list):
        raise UsageError(f"{pyproject}: [tool.harness] allowed-packages must be a list")
    commands = table.get("commands", {})
    if not isinstance(commands, dict) or not all(
        isinstance(v, str) and ":" in v for v in commands.values()
    ):
        raise UsageError(
            f'{pyproject}: [tool.harness] commands must map a name to "module:command" '
            '(e.g. commands = {core = "mypkg.cli:core"})'
        )
    lists = {}
    for key in ("pass-env", "preload"):
        raw = table.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise UsageError(f"{pyproject}: [tool.harness] {key} must be a list of strings")
        lists[key] = tuple(raw)
    check_env = _check_env(table.get("check-env", {}), pyproject)
    raw_limits = table.get("limits", {})
    if not isinstance(raw_limits, dict) or set(raw_limits) - {"memory", "output"}:
        raise UsageError(
            f"{pyproject}: [tool.harness] limits must be a table with memory and/or output "
            '(e.g. limits = {memory = "8GiB", output = "4MiB"})'
        )
    try:
        limits = Limits().merged(raw_limits, "[tool.harness] limits")
    except ValueError as exc:
        raise UsageError(f"{pyproject}: {exc}") from exc
    executor = table.get("executor", "local")
    if executor not in EXECUTORS:
        raise UsageError(
            f"{pyproject}: [tool.harness] executor must be one of {', '.join(EXECUTORS)} "
            f"(got {executor!r})"
        )
    scheduler = table.get("scheduler")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise UsageError(
            f'{pyproject}: [tool.harness] scheduler must be an address (e.g. "tcp://host:8786")'
        )
    max_waiver_days = table.get("max-waiver-days", MAX_WAIVER_DAYS)
    if (
        isinstance(max_waiver_days, bool)
        or not isinstance(max_waiver_days, int)
        or (max_waiver_days < 1)
    ):
        raise UsageError(
            f"{pyproject}: [tool.harness] max-waiver-days must be a whole number of days "
            f">= 1 (got {max_waiver_days!r}; the default is {MAX_WAIVER_DAYS})"
        )
    return Config(
        root=root,
        max_waiver_days=max_waiver_days,
        executor=str(executor),
        scheduler=scheduler,
        pass_env=lists["pass-env"],
        check_env=check_env,
        preload=lists["preload"],
        limits=limits,
        commands={str(k): str(v) for k, v in commands.items()},
        contracts=paths("contracts", ["contracts"]),
        evidence_dir=paths("evidence-dir", ["evidence"])[0],
        default_timeout=timeout,
        allowed_packages=tuple(str(a) for a in allowed),
        jobs=jobs,
        sign_key=(
            (str(sign_key) if is_pkcs11_uri(sign_key) else root / str(sign_key))
            if sign_key
            else None
        ),
        allowed_keys=paths("allowed-keys", []),
        promotions=paths("promotions", ["release/promotions.jsonl"])[0],
        regressions=paths("regressions", [])[0]
        if "regressions" in table
        else paths("contracts", ["contracts"])[0] / ".regressions",
        pyproject=pyproject if pyproject.is_file() else None,
        extra={k: v for k, v in table.items() if k == "profile"},
    )


def _check_env(raw: object, pyproject: Path) -> dict[str, str]:
    """``[tool.harness] check-env``: a table of variable names to strings."""
    example = '(e.g. check-env = { MY_LOG = "{scratch}/log.jsonl" })'
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise UsageError(
            f"{pyproject}: [tool.harness] check-env must map variable names to strings {example}"
        )
    for name, value in raw.items():
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise UsageError(
                f"{pyproject}: [tool.harness] check-env: {name!r} is not a variable name "
                f"with a value (no '=', no NUL) {example}"
            )
        if name in RESERVED_ENV:
            raise UsageError(
                f"{pyproject}: [tool.harness] check-env: {name} is set by the harness itself"
            )
    return dict(raw)
