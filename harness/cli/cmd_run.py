"""``harness run`` and ``harness rerun``: build one RunRequest, call the runner once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from harness.cli.group import cli, config, contract_paths, find_run
from harness.errors import NothingSelected, UsageError
from harness.exitcodes import ExitCode
from harness.model import FailOn
from harness.plan import Profile

# --------------------------------------------------------------------------- run


def _deferred_key(spec: Path | str, passphrase: bytes | None, pin: str | None) -> Any:
    """The signing key, checked now and used only after the checks: a PEM file
    (DeferredKey) or a pkcs11: URI naming a key in a token (harness.hsm.TokenKey).
    A key that does not open stops the run here, with one line (exit 4)."""
    from harness.signing import DeferredKey

    if isinstance(spec, str):
        from harness.hsm import TokenKey

        key: Any = TokenKey(spec, pin)
    else:
        key = DeferredKey(spec, passphrase)
    key.check()
    return key


def _coordinator_setup() -> None:
    """This process is the coordinator: orphans of checks come back to it (and are
    killed when the checks end), and what it imports after the checks is already
    imported now (a check could have rewritten an importable file)."""
    import harness.verify  # noqa: F401 - the HTML report verifies the bundle at the end
    from harness.procs import become_subreaper

    become_subreaper()


def _project_settings(cfg: Any) -> dict[str, Any]:
    """What a run takes from ``[tool.harness]`` whatever started it (``run``, ``rerun``):
    one place, so a new setting cannot reach one and not the other."""
    return {
        "root": cfg.root,
        "default_timeout": cfg.default_timeout,
        "allowed": cfg.allowed_packages,
        "pass_env": cfg.pass_env,
        "check_env": cfg.check_env,
        "regressions": cfg.regressions,
        "preload": cfg.preload,
        "limits": cfg.limits,
        "max_waiver_days": cfg.max_waiver_days,
    }


def _executor_choice(executor: str | None, scheduler: str | None, cfg: Any) -> tuple[str, Any]:
    """The executor and Dask scheduler a run uses: the options, else [tool.harness]. A
    scheduler means Dask; Dask needs the distributed package (one line, exit 4)."""
    if executor == "local" and scheduler:
        raise UsageError("--scheduler runs on Dask: drop it, or use --executor dask")
    name = executor or ("dask" if scheduler else cfg.executor)
    scheduler = (scheduler or cfg.scheduler) if name == "dask" else None
    if name == "dask":
        from harness.dask_executor import require_distributed

        require_distributed()
    return name, scheduler


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-k", "keyword", help="Select criteria by keyword expression (like pytest -k).")
@click.option("--tag", "tags", multiple=True, help="Select criteria with this tag (repeatable).")
@click.option(
    "--criterion",
    "criteria",
    multiple=True,
    metavar="AC-ID",
    help="Select one criterion by ID (repeatable).",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes [cores].")
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default=None,
    help="local: a fresh process per check on this machine; dask: the same on a Dask "
    "cluster (the dask extra; docs/dask.md) [[tool.harness] executor, else local].",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The Dask scheduler to run on (tcp://host:8786; implies --executor dask); without "
    "it --executor dask starts a LocalCluster of --jobs processes [[tool.harness] scheduler].",
)
@click.option("--seed", type=click.IntRange(min=0), help="The run's seed [random, recorded].")
@click.option(
    "--profile",
    type=click.Choice([p.value for p in Profile]),
    default=None,
    help="full: everything; fast: skip mutants and slow falsifiers "
    "(criteria end UNPROVEN-FAST, never GO, and the run still exits 0 under the default "
    "--fail-on); teeth: only the mutants.",
)
@click.option("--fast", is_flag=True, help="Same as --profile fast.")
@click.option("--teeth", is_flag=True, help="Same as --profile teeth.")
@click.option(
    "--fail-on",
    type=click.Choice([f.value for f in FailOn]),
    default=FailOn.UNPROVEN.value,
    show_default=True,
    help="Which blocker verdicts fail the run (exit 1). no-go: only NO-GO; unproven: "
    "NO-GO or UNPROVEN, while UNPROVEN-FAST (only the fast profile's skipped mutants and "
    "slow falsifiers missing) passes, so --fast gates a merge; unproven-fast: anything "
    "short of GO. Warn criteria never fail the run.",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="FORMAT[=FILE]",
    help="json=FILE, junit=FILE, markdown=FILE, html=FILE, sarif=FILE or github (repeatable). "
    "In GitHub Actions, github or markdown output also appends the Markdown summary to "
    "$GITHUB_STEP_SUMMARY, once.",
)
@click.option("--evidence-dir", type=click.Path(), help="Where run bundles go [config].")
@click.option("--no-evidence", is_flag=True, help="Write no evidence bundle.")
@click.option("-v", "--verbose", is_flag=True, help="Print every reason of every criterion.")
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="Ed25519 private key (PEM), or a pkcs11: URI naming one in a token, to sign "
    "the evidence [$HARNESS_SIGN_KEY or [tool.harness] sign-key].",
)
@click.option(
    "--require-signature",
    is_flag=True,
    help="Refuse to run without a signing key (release profile).",
)
def run(
    paths: tuple[str, ...],
    keyword: str | None,
    tags: tuple[str, ...],
    criteria: tuple[str, ...],
    jobs: int | None,
    executor: str | None,
    scheduler: str | None,
    seed: int | None,
    profile: str | None,
    fast: bool,
    teeth: bool,
    fail_on: str,
    outputs: tuple[str, ...],
    evidence_dir: str | None,
    no_evidence: bool,
    verbose: bool,
    sign_key: str | None,
    require_signature: bool,
) -> int:
    """Run the contracts and print a verdict per acceptance criterion.

    Exits 0 when the gate passes (--fail-on: by default no blocker criterion is NO-GO
    or UNPROVEN), 1 when it does not."""
    from harness.environment import EnvironmentProbe

    # environment.json's versions, CPU and BLAS: collected by a process of its own,
    # started first so it runs while the run starts (the first check waits for it);
    # its environment is a check's (harness.procs.scrubbed_environment): none of ours
    probe = None if no_evidence else EnvironmentProbe()
    try:
        from harness.judge import run_exit_code
        from harness.loader import load_contract_set
        from harness.reporters import make_writers
        from harness.reporters.terminal import TerminalReporter
        from harness.runner import RunRequest
        from harness.runner import run as run_request
        from harness.selection import select
        from harness.signing import resolve_sign_key, take_passphrase, take_pin

        # No check or command started later inherits them. Neither is redacted from the
        # logs: no check is given them, and a redaction would confirm a check's guess.
        passphrase = take_passphrase()
        pin = take_pin()
        _coordinator_setup()
        if sum(bool(x) for x in (profile, fast, teeth)) > 1:
            raise UsageError("choose one of --profile, --fast, --teeth")
        profile = profile or ("fast" if fast else "teeth" if teeth else "full")
        cfg = config()
        executor_name, scheduler = _executor_choice(executor, scheduler, cfg)
        contracts = load_contract_set(contract_paths(paths, cfg))
        chosen = select(contracts, keyword, tags, criteria)
        if not chosen:
            raise NothingSelected(
                f"no criterion matches the selection (-k {keyword!r}, --tag {list(tags)}, "
                f"--criterion {list(criteria)}) among {len(contracts.criteria)} criteria"
            )
        listeners: list[Any] = [TerminalReporter(verbose=verbose)]
        listeners += make_writers(outputs)
        evidence_root = None
        signer = None
        key_path = resolve_sign_key(sign_key, cfg.sign_key)
        if require_signature and (key_path is None or no_evidence):
            raise UsageError(
                "--require-signature: no signing key (use --sign-key, "
                "$HARNESS_SIGN_KEY or [tool.harness] sign-key; `harness keygen` makes one)"
            )
        if not no_evidence:
            evidence_root = Path(evidence_dir) if evidence_dir else cfg.evidence_dir
            if key_path is not None:
                # fails now on a wrong passphrase or PIN; the key is used after the checks
                signer = _deferred_key(key_path, passphrase, pin)
        selection: dict[str, object] = {
            "paths": list(paths),
            "keyword": keyword,
            "tags": list(tags),
            "criteria": list(criteria),
        }
        request = RunRequest(
            contracts,
            tuple(chosen),
            profile=Profile(profile),
            fail_on=FailOn(fail_on),
            seed=seed,
            jobs=cfg.effective_jobs(jobs),
            executor_name=executor_name,
            scheduler=scheduler,
            evidence_root=evidence_root,
            history_root=Path(evidence_dir) if evidence_dir else cfg.evidence_dir,
            selection=selection,
            signer=signer,
            outputs=tuple(listeners),
            env_probe=probe,
            **_project_settings(cfg),
        )
        return int(run_exit_code(run_request(request)))
    finally:
        if probe is not None:
            probe.close()  # a run that never started; after a run it is already done


@cli.command()
@click.argument("run")
@click.option(
    "--criterion",
    "criteria",
    multiple=True,
    metavar="AC-ID",
    help="Rerun only this criterion (repeatable).",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes [cores].")
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    help="Where the checks run, as for `harness run` [[tool.harness] executor, else local].",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The Dask scheduler to rerun on (implies --executor dask) [[tool.harness] scheduler].",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="Sign the rerun's evidence (a PEM file or a pkcs11: URI) "
    "[$HARNESS_SIGN_KEY or [tool.harness] sign-key].",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key(s) (PEM) the bundle must verify under before its stored contracts "
    "run, as for `harness verify` [[tool.harness] allowed-keys].",
)
@click.option(
    "--unverified",
    is_flag=True,
    help="Run the bundle's stored contracts without verifying it "
    "(only for an unsigned bundle you made yourself).",
)
@click.option(
    "--here",
    is_flag=True,
    help="Rerun with this checkout's code instead of the run's commit (a run made from a "
    "dirty tree can only rerun --here).",
)
@click.option(
    "--evidence-dir",
    type=click.Path(file_okay=False),
    help="Where the rerun's bundle goes, and where RUN is looked up by run id, 'latest' "
    "or 'previous' (the newest complete runs) [[tool.harness] evidence-dir].",
)
def rerun(
    run: str,
    criteria: tuple[str, ...],
    jobs: int | None,
    executor: str | None,
    scheduler: str | None,
    sign_key: str | None,
    keys: tuple[str, ...],
    unverified: bool,
    here: bool,
    evidence_dir: str | None,
) -> int:
    """Verify a run's bundle (RUN: its folder, run id, 'latest' or 'previous': the
    newest complete runs), run it again with the recorded seed, selection and contract
    text at the run's commit (in a temporary git worktree), and compare."""
    from harness.replay import compare_runs, environment_diff, load_recorded, require_verified
    from harness.reporters.terminal import TerminalReporter
    from harness.runner import RunRequest
    from harness.runner import run as run_request
    from harness.selection import select
    from harness.signing import resolve_sign_key, take_passphrase, take_pin

    passphrase = take_passphrase()
    pin = take_pin()
    _coordinator_setup()
    cfg = config()
    executor_name, chosen_scheduler = _executor_choice(executor, scheduler, cfg)
    old_dir = find_run(run, evidence_dir)
    run_dir = str(old_dir)
    if unverified:
        if keys:
            raise UsageError("--unverified and --key exclude each other")
        click.echo(
            f"warning: --unverified: {run_dir} was not verified; "
            "its stored contracts run as they are",
            err=True,
        )
    else:
        key_paths = [Path(k) for k in keys] or list(cfg.allowed_keys)
        require_verified(old_dir, key_paths)
        click.echo(f"{run_dir} verifies under {len(key_paths)} key(s)")
    meta, contracts, old = load_recorded(old_dir)
    if not here:
        from harness.replay import rerun_at_commit

        argv = [*(f"--criterion={c}" for c in criteria)]
        argv += [f"--jobs={jobs}"] if jobs else []
        argv += [f"--executor={executor}"] if executor else []  # only when asked: an older
        argv += [f"--scheduler={scheduler}"] if scheduler else []  # commit may not know them
        # the keys this checkout verified with, not the old commit's configuration
        argv += [f"--key={Path(k).resolve()}" for k in ([] if unverified else key_paths)]
        argv += ["--unverified"] if unverified else []
        if sign_key:
            from harness.signing import PIN_VALUE, is_pkcs11_uri

            if is_pkcs11_uri(sign_key) and PIN_VALUE.search(sign_key):
                raise UsageError(
                    "--sign-key: keep the PIN out of the URI for a rerun at a commit (it would "
                    "reach a command line); set $HARNESS_PKCS11_PIN"
                )
            argv.append(f"--sign-key={sign_key if ':' in sign_key else Path(sign_key).resolve()}")
        secrets = {"passphrase": passphrase, "pin": pin}
        evidence = Path(evidence_dir).resolve() if evidence_dir else cfg.evidence_dir.resolve()
        code = rerun_at_commit(
            cfg.root, old_dir.resolve(), meta, evidence, argv, secrets, click.echo
        )
        if code is not None:
            return code
    sel = meta.get("selection", {})
    chosen = select(
        contracts,
        sel.get("keyword"),
        sel.get("tags", ()),
        list(criteria) or sel.get("criteria", ()),
    )
    chosen = [c for c in chosen if c.id in {r.criterion_id for r in old.criteria}]
    if not chosen:
        raise NothingSelected(f"nothing to rerun in {run_dir} with --criterion {list(criteria)}")
    click.echo(
        f"rerunning {len(chosen)} criteria of {meta['run_id']} with seed {meta['seed']}, "
        f"profile {meta['profile']}"
    )
    key_path = resolve_sign_key(sign_key, cfg.sign_key)
    signer = None
    if key_path is not None:
        signer = _deferred_key(key_path, passphrase, pin)
    request = RunRequest(
        contracts,
        tuple(chosen),
        profile=Profile(meta.get("profile", "full")),
        seed=int(meta["seed"]),
        jobs=cfg.effective_jobs(jobs),
        evidence_root=Path(evidence_dir) if evidence_dir else cfg.evidence_dir,
        selection={**sel, "rerun_of": meta["run_id"]},
        signer=signer,
        outputs=(TerminalReporter(),),
        executor_name=executor_name,
        scheduler=chosen_scheduler,
        **_project_settings(cfg),
    )
    new = run_request(request)
    diffs = compare_runs(contracts, old, new)
    env = environment_diff(old_dir, Path(new.evidence_dir))
    click.echo()
    for line in env:
        click.echo(f"note: {line}")
    for line in diffs:
        click.echo(f"DIFFERS {line}")
    n_obs = sum(len(r.observations) for c in new.criteria for r in c.invariants)
    if diffs:
        click.echo(
            f"rerun differs: {len(diffs)} differences over {len(new.criteria)} criteria "
            f"and {n_obs} observations"
        )
        return int(ExitCode.NOT_GO)
    click.echo(
        f"rerun matches: {len(new.criteria)} criteria, {n_obs} observations identical "
        "(bitwise, or within the declared tolerance)"
    )
    return 0
