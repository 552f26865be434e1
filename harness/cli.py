"""The ``harness`` command. Commands parse arguments and call the library.

Exit codes are set in one place, ``main``, from ``harness.exitcodes.ExitCode``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from harness import __version__
from harness.errors import (
    ContractError,
    HarnessError,
    Interrupted,
    NothingSelected,
    UsageError,
)
from harness.exitcodes import ExitCode


def _config() -> Any:
    from harness.config import load_config

    return load_config()


def _paths(paths: tuple[str, ...], cfg: Any) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    return list(cfg.contracts)


class _LazyGroup(click.Group):
    """Mounts ``harness core`` (the kernels' CLI) without importing it at start-up."""

    lazy = {"core": ("kernels.cli", "core")}

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Click's usage errors exit 4 (not click's 2); Ctrl-C at a prompt exits 2."""
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.ClickException as exc:
            exc.show()
            rv = int(ExitCode.USAGE_ERROR)
        except click.exceptions.Abort:
            click.echo("harness: aborted", err=True)
            rv = int(ExitCode.INTERRUPTED)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            mod, attr = self.lazy[name]
            try:
                return getattr(importlib.import_module(mod), attr)  # type: ignore[no-any-return]
            except (ImportError, AttributeError) as exc:
                raise UsageError(f"'harness {name}' is unavailable: {exc}") from exc
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Declarative acceptance contracts for ML systems: YAML in, GO/NO-GO evidence out."""


# --------------------------------------------------------------------------- run


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
@click.option("--seed", type=click.IntRange(min=0), help="The run's seed [random, recorded].")
@click.option(
    "--profile",
    type=click.Choice(["full", "fast", "teeth"]),
    default=None,
    help="full: everything; fast: skip mutants and slow falsifiers "
    "(criteria end UNPROVEN-FAST, never GO); teeth: only the mutants.",
)
@click.option("--fast", is_flag=True, help="Same as --profile fast.")
@click.option("--teeth", is_flag=True, help="Same as --profile teeth.")
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="FORMAT[=FILE]",
    help="json=FILE, junit=FILE, markdown=FILE, html=FILE, sarif=FILE or github (repeatable).",
)
@click.option("--evidence-dir", type=click.Path(), help="Where run bundles go [config].")
@click.option("--no-evidence", is_flag=True, help="Write no evidence bundle.")
@click.option("-v", "--verbose", is_flag=True, help="Print every reason of every criterion.")
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="Ed25519 private key (PEM) to sign the evidence "
    "[$HARNESS_SIGN_KEY or [tool.harness] sign-key].",
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
    seed: int | None,
    profile: str | None,
    fast: bool,
    teeth: bool,
    outputs: tuple[str, ...],
    evidence_dir: str | None,
    no_evidence: bool,
    verbose: bool,
    sign_key: str | None,
    require_signature: bool,
) -> int:
    """Run the contracts and print a verdict per acceptance criterion."""
    from harness.loader import load_contract_set
    from harness.model import Verdict
    from harness.reporters import make_writer
    from harness.reporters.terminal import TerminalReporter
    from harness.runner import run_contracts
    from harness.selection import select
    from harness.signing import load_signer, resolve_sign_key

    if sum(bool(x) for x in (profile, fast, teeth)) > 1:
        raise UsageError("choose one of --profile, --fast, --teeth")
    profile = profile or ("fast" if fast else "teeth" if teeth else "full")
    cfg = _config()
    contracts = load_contract_set(_paths(paths, cfg))
    chosen = select(contracts, keyword, tags, criteria)
    if not chosen:
        raise NothingSelected(
            f"no criterion matches the selection (-k {keyword!r}, --tag {list(tags)}, "
            f"--criterion {list(criteria)}) among {len(contracts.criteria)} criteria"
        )
    listeners: list[Any] = [TerminalReporter(verbose=verbose)]
    listeners += [make_writer(spec) for spec in outputs]
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
            signer = load_signer(key_path)
    selection: dict[str, object] = {
        "paths": list(paths),
        "keyword": keyword,
        "tags": list(tags),
        "criteria": list(criteria),
    }
    result = run_contracts(
        contracts,
        chosen,
        listeners=listeners,
        jobs=cfg.effective_jobs(jobs),
        seed=seed,
        profile=profile,
        evidence_root=evidence_root,
        root=cfg.root,
        default_timeout=cfg.default_timeout,
        allowed=cfg.allowed_packages,
        selection=selection,
        signer=signer,
    )
    return int(ExitCode.GO if result.verdict is Verdict.GO else ExitCode.NOT_GO)


# --------------------------------------------------------------------------- lint


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--no-resolve", is_flag=True, help="Skip importing bindings (schema and IDs only).")
def lint(paths: tuple[str, ...], no_resolve: bool) -> int:
    """Validate contracts without running them (exit 4 on any error)."""
    from harness.lint import lint_paths

    cfg = _config()
    contracts, diags = lint_paths(
        _paths(paths, cfg), cfg.root, cfg.allowed_packages, resolve=not no_resolve
    )
    for d in diags:
        click.echo(d.format(), err=d.severity == "error")
    errors = sum(d.severity == "error" for d in diags)
    warnings = len(diags) - errors
    n_items = sum(len(k.criteria) + len(k.invariants) + len(k.falsifiers) for k in contracts)
    click.echo(
        f"{len(contracts)} contract files, {n_items} items: {errors} errors, {warnings} warnings"
    )
    return int(ExitCode.USAGE_ERROR if errors else ExitCode.GO)


# --------------------------------------------------------------------------- list/schema/explain


@cli.command("list")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--markdown", is_flag=True, help="A Markdown table mapping criteria to sources.")
def list_(paths: tuple[str, ...], markdown: bool) -> int:
    """Show criteria, invariants and falsifiers as a tree."""
    from harness.listing import markdown_table, tree

    contracts = _load(paths)
    click.echo(markdown_table(contracts) if markdown else tree(contracts))
    return 0


@cli.command()
def schema() -> int:
    """Print the contract JSON Schema (draft 2020-12)."""
    import json

    from harness.loader import contract_schema

    click.echo(json.dumps(contract_schema(), indent=2))
    return 0


@cli.command()
@click.argument("item_id")
@click.argument("paths", nargs=-1, type=click.Path())
def explain(item_id: str, paths: tuple[str, ...]) -> int:
    """Show one criterion, invariant or falsifier with its source location."""
    from harness.listing import explain as explain_item

    click.echo(explain_item(_load(paths), item_id))
    return 0


def _load(paths: tuple[str, ...]) -> Any:
    from harness.loader import load_contract_set

    return load_contract_set(_paths(paths, _config()))


# --------------------------------------------------------------------------- authoring


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--owner", default=None, help="Owner written into the example [the folder's name].")
def init(directory: str, owner: str | None) -> int:
    """Set up contracts/ and [tool.harness] in a project."""
    from harness.scaffold import init_project

    owner = owner or Path(directory).resolve().name
    for line in init_project(Path(directory), owner):
        click.echo(line)
    click.echo("next: `harness lint`, then `harness run`")
    return 0


@cli.command()
@click.argument("kind", type=click.Choice(["criterion", "invariant", "falsifier"]))
@click.argument("file", type=click.Path(dir_okay=False))
def new(kind: str, file: str) -> int:
    """Append a skeleton with the next free ID to a contract file."""
    from harness.scaffold import new_item

    new_id = new_item(kind, Path(file))
    click.echo(f"added {new_id} to {file}; fill in its TODO fields, then `harness lint {file}`")
    return 0


# --------------------------------------------------------------------------- evidence


@cli.command()
@click.option(
    "-o",
    "--out",
    default="harness-signing.key",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Private key path; the public key is OUT.pub.",
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Protect the private key with the passphrase in this environment variable.",
)
def keygen(out: str, passphrase_env: str | None) -> int:
    """Write an Ed25519 key pair for signing evidence (private key mode 0600)."""
    import os

    from harness.signing import generate_keypair, keyid_of, load_public_key

    passphrase = None
    if passphrase_env:
        if not os.environ.get(passphrase_env):
            raise UsageError(f"--passphrase-env {passphrase_env}: the variable is not set")
        passphrase = os.environ[passphrase_env].encode()
    private, public = generate_keypair(Path(out), passphrase)
    click.echo(f"private key: {private} (mode 0600; keep it out of the repository)")
    click.echo(f"public key:  {public}")
    click.echo(f"keyid:       {keyid_of(load_public_key(public))}")
    return 0


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Public key(s) (PEM) a valid signature must come from.",
)
def verify(run_dir: str, keys: tuple[str, ...]) -> int:
    """Verify a run's bundle: digests, signatures, statements, audit chain, verdict."""
    from harness.signing import load_public_key
    from harness.verify import verify_run

    problems = verify_run(Path(run_dir), [load_public_key(Path(k)) for k in keys])
    for p in problems:
        click.echo(p)
    if problems:
        click.echo(
            f"FAILED: {len(problems)} problem{'s' if len(problems) != 1 else ''} in {run_dir}"
        )
        return int(ExitCode.NOT_GO)
    click.echo(f"OK: {run_dir} verifies (digests, signatures, statements, audit chain, verdict)")
    return 0


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--criterion",
    "criteria",
    multiple=True,
    metavar="AC-ID",
    help="Rerun only this criterion (repeatable).",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes [cores].")
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="Sign the rerun's evidence [$HARNESS_SIGN_KEY or [tool.harness] sign-key].",
)
def rerun(run_dir: str, criteria: tuple[str, ...], jobs: int | None, sign_key: str | None) -> int:
    """Run again with the recorded seed, selection and contract text; compare."""
    from harness.replay import compare_runs, environment_diff, load_recorded
    from harness.reporters.terminal import TerminalReporter
    from harness.runner import run_contracts
    from harness.selection import select
    from harness.signing import load_signer, resolve_sign_key

    cfg = _config()
    old_dir = Path(run_dir)
    meta, contracts, old = load_recorded(old_dir)
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
    new = run_contracts(
        contracts,
        chosen,
        listeners=[TerminalReporter()],
        jobs=cfg.effective_jobs(jobs),
        seed=int(meta["seed"]),
        profile=meta.get("profile", "full"),
        evidence_root=cfg.evidence_dir,
        root=cfg.root,
        default_timeout=cfg.default_timeout,
        allowed=cfg.allowed_packages,
        selection={**sel, "rerun_of": meta["run_id"]},
        signer=load_signer(key_path) if key_path else None,
    )
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


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--to", "name", required=True, help="What the run is promoted to (e.g. production).")
@click.option(
    "--allowed-key",
    "allowed",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key allowed to have signed the run [[tool.harness] allowed-keys].",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="The promoter's private key [$HARNESS_SIGN_KEY or [tool.harness] sign-key].",
)
@click.option("--as", "signer_name", default="", help="The promoter's name, recorded and signed.")
def promote(
    run_dir: str, name: str, allowed: tuple[str, ...], sign_key: str | None, signer_name: str
) -> int:
    """Sign off a run: refused unless it verifies, is GO and was signed by an allowed key."""
    from harness.replay import PromotionRefused
    from harness.replay import promote as do_promote
    from harness.signing import load_signer, resolve_sign_key

    cfg = _config()
    keys = [Path(a) for a in allowed] or list(cfg.allowed_keys)
    key_path = resolve_sign_key(sign_key, cfg.sign_key)
    signer = load_signer(key_path) if key_path else None
    ledger = Path(run_dir).resolve().parent / "promotions.jsonl"
    try:
        record = do_promote(Path(run_dir), name, keys, signer, ledger, signer_name)
    except PromotionRefused as exc:
        click.echo("promotion REFUSED:", err=True)
        for reason in exc.reasons:
            click.echo(f"  {reason}", err=True)
        return int(ExitCode.NOT_GO)
    click.echo(
        f"promoted {record['run_id']} to {name}, signed by {record['promoted_by'][:16]}; "
        f"recorded in {ledger}"
    )
    return 0


# --------------------------------------------------------------------------- reports


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write the HTML report.")
@click.option(
    "--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the Markdown summary."
)
@click.option("--sarif", "sarif_out", type=click.Path(dir_okay=False), help="Write SARIF 2.1.0.")
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key(s) to verify the run's signatures in the report.",
)
def report(
    run_dir: str,
    html_out: str | None,
    md_out: str | None,
    sarif_out: str | None,
    keys: tuple[str, ...],
) -> int:
    """Render a finished run's evidence as HTML, Markdown or SARIF."""
    import json

    from harness.fsutil import atomic_write_json, atomic_write_text
    from harness.model import RunResult
    from harness.reporters.html import render_html, signature_status
    from harness.reporters.markdown import markdown_summary

    rd = Path(run_dir)
    try:
        result = RunResult.from_dict(json.loads((rd / "results.json").read_text()))
    except FileNotFoundError as exc:
        raise UsageError(f"{rd}: no results.json (an interrupted or foreign folder?)") from exc
    if not (html_out or md_out or sarif_out):
        raise UsageError("say what to write: --html FILE, --markdown FILE or --sarif FILE")
    if html_out:
        status = signature_status(rd, [Path(k) for k in keys])
        atomic_write_text(Path(html_out), render_html(result, rd, status))
        click.echo(f"wrote {html_out} ({result.verdict.value}; signatures: {status})")
    if md_out:
        atomic_write_text(Path(md_out), markdown_summary(result))
        click.echo(f"wrote {md_out}")
    if sarif_out:
        from harness.loader import load_contract_set
        from harness.reporters.sarif import sarif_log

        contracts = load_contract_set([rd / "contracts"]) if (rd / "contracts").is_dir() else None
        atomic_write_json(Path(sarif_out), sarif_log(result, contracts))
        click.echo(f"wrote {sarif_out}")
    return 0


@cli.command()
@click.argument("run_a")
@click.argument("run_b", default="latest")
def diff(run_a: str, run_b: str) -> int:
    """What changed between two runs (paths, run ids, 'latest' or 'previous').
    Exits 1 when something regressed."""
    from harness.history import diff_runs, resolve_run

    cfg = _config()
    a, b = resolve_run(cfg.evidence_dir, run_a), resolve_run(cfg.evidence_dir, run_b)
    changes, env, regressed = diff_runs(a, b)
    click.echo(f"diff {a.name} -> {b.name}")
    for line in changes:
        click.echo(f"  {line}")
    for line in env:
        click.echo(f"  {line}")
    if not changes and not env:
        click.echo("  no change in verdicts, observations or environment")
    click.echo("REGRESSED" if regressed else "no regression")
    return int(ExitCode.NOT_GO if regressed else ExitCode.GO)


@cli.command()
@click.argument("criterion_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(criterion_id: str | None, as_json: bool) -> int:
    """Verdicts across the runs in the evidence directory, newest first."""
    import json

    from harness import history as hist

    cfg = _config()
    rows = hist.history(cfg.evidence_dir, criterion_id)
    if as_json:
        click.echo(json.dumps(hist.as_json(rows), indent=2))
        return 0
    if not rows:
        what = f"criterion {criterion_id}" if criterion_id else "any run"
        click.echo(f"no runs of {what} in {cfg.evidence_dir}")
        return 0
    for r in rows:
        dirty = "+dirty" if r.dirty else ""
        click.echo(
            f"{r.started:<26} {r.run_id:<26} {(r.commit or 'no-git')[:10]}{dirty:<6} "
            f"{r.verdict:<13} {r.profile}"
        )
    red = next((r for r in rows if r.verdict in ("NO-GO", "UNPROVEN")), None)
    subject = criterion_id or "the release"
    if red:
        click.echo(
            f"{subject} last went {red.verdict} in run {red.run_id} on commit "
            f"{(red.commit or 'unknown')[:10]} ({red.started})"
        )
    else:
        click.echo(f"{subject} has not gone red in {len(rows)} recorded runs")
    return 0


# --------------------------------------------------------------------------- entry point


def _report(exc: BaseException) -> ExitCode:
    """Print what went wrong in one place and choose the exit code."""

    def say(message: str) -> None:
        click.echo(message, err=True)

    if isinstance(exc, ContractError):
        for d in exc.diagnostics:
            say(d.format())
        n = len(exc.diagnostics)
        say(
            f"{n} contract error{'s' if n != 1 else ''}; nothing was run "
            "(`harness lint` shows the same)"
        )
        return ExitCode.USAGE_ERROR
    if isinstance(exc, NothingSelected):
        say(f"harness: {exc}")
        return ExitCode.NO_SELECTION
    if isinstance(exc, (Interrupted, KeyboardInterrupt)):
        say(f"harness: {exc or 'interrupted'}")
        return ExitCode.INTERRUPTED
    if isinstance(exc, HarnessError):
        say(f"harness: error: {exc}")
        return ExitCode.USAGE_ERROR
    import traceback

    traceback.print_exception(exc)
    say("harness: internal error (a bug in the harness; please report it with the traceback above)")
    return ExitCode.INTERNAL_ERROR


def _invoke_mapped(self: click.Group, ctx: click.Context) -> Any:
    try:
        rv = click.Group.invoke(self, ctx)
    except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
        raise
    except (HarnessError, KeyboardInterrupt, Exception) as exc:
        ctx.exit(int(_report(exc)))
    if isinstance(rv, int) and rv:
        ctx.exit(rv)
    return rv


_LazyGroup.invoke = _invoke_mapped  # type: ignore[method-assign]


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The console script: exit codes follow harness.exitcodes.ExitCode."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    cli.main(args=argv, prog_name="harness")


if __name__ == "__main__":
    main()
