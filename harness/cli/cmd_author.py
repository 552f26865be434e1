"""Authoring commands: lint, list, schema, explain, init, new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from harness.cli.group import cli, config, contract_paths
from harness.exitcodes import ExitCode

# --------------------------------------------------------------------------- lint


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--no-resolve", is_flag=True, help="Skip importing bindings (schema and IDs only).")
def lint(paths: tuple[str, ...], no_resolve: bool) -> int:
    """Validate contracts without running them (exit 4 on any error)."""
    from harness.lint import lint_paths

    cfg = config()
    contracts, diags = lint_paths(
        contract_paths(paths, cfg),
        cfg.root,
        cfg.allowed_packages,
        resolve=not no_resolve,
        max_waiver_days=cfg.max_waiver_days,
    )
    for d in diags:
        click.echo(d.format(), err=d.severity == "error")
    errors = sum(d.severity == "error" for d in diags)
    errors += _lint_policy(cfg, contracts, whole_project=not paths)
    warnings = len(diags) - sum(d.severity == "error" for d in diags)
    n_items = sum(len(k.criteria) + len(k.invariants) + len(k.falsifiers) for k in contracts)
    click.echo(
        f"{len(contracts)} contract files, {n_items} items: {errors} errors, {warnings} warnings"
    )
    return int(ExitCode.USAGE_ERROR if errors else ExitCode.GO)


def _lint_policy(cfg: Any, contracts: list[Any], whole_project: bool) -> int:
    """The release policy (docs/releasing.md) is linted with the contracts: its criteria
    against the project's contracts (as promote reads them; ``contracts`` are those when
    ``whole_project``, else they are added to them). Returns its errors."""
    from harness.errors import HarnessError, UsageError
    from harness.lint import lint_policy_criteria
    from harness.loader import load_files
    from harness.policy import find_policy

    try:
        policy = find_policy(cfg.root)
    except UsageError as exc:
        click.echo(f"{exc}", err=True)
        return 1
    if policy is None:
        return 0
    if not whole_project:
        try:
            contracts = [*contracts, *load_files(contract_paths((), cfg))[0]]
        except HarnessError:  # no contracts configured: the ones given are all there are
            pass
    diags = lint_policy_criteria(policy, contracts)
    for d in diags:
        click.echo(d.format(), err=True)
    return len(diags)


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

    return load_contract_set(contract_paths(paths, config()))


# --------------------------------------------------------------------------- authoring


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--owner", default=None, help="Owner written into the example [the folder's name].")
def init(directory: str, owner: str | None) -> int:
    """Set up contracts/ (with an example), [tool.harness] in pyproject.toml (with
    allowed-packages for your package) and .gitignore (the evidence folder)."""
    from harness.scaffold import init_project

    owner = owner or Path(directory).resolve().name
    for line in init_project(Path(directory), owner):
        click.echo(line)
    click.echo("next: `harness lint`, then `harness run`")
    return 0


@cli.command()
@click.argument("kind", type=click.Choice(["criterion", "invariant", "falsifier"]))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--invariant",
    "invariants",
    multiple=True,
    metavar="INV-ID",
    help="criterion: the invariant it lists (repeatable) [this file's invariants no "
    "criterion lists, else a new invariant added with it].",
)
@click.option(
    "--target",
    metavar="INV-ID",
    help="falsifier: the invariant it attacks [this file's invariant with no falsifier].",
)
@click.option(
    "--kind",
    "falsifier_kind",
    type=click.Choice(["mutant", "property", "fault"]),
    default="mutant",
    show_default=True,
    help="falsifier: a mutant (known-bad code or params), a property search or a fault.",
)
def new(
    kind: str, file: str, invariants: tuple[str, ...], target: str | None, falsifier_kind: str
) -> int:
    """Append a skeleton with the next free ID to a contract file, wired to the
    items it needs: a criterion to its invariants, a falsifier to its target."""
    from harness.scaffold import new_item

    made = new_item(
        kind, Path(file), invariants=invariants, target=target, falsifier_kind=falsifier_kind
    )
    click.echo(f"added {' and '.join(made.added)} to {file}")
    for note in made.notes:
        click.echo(f"  {note}")
    click.echo(
        f"next: replace each TODO (`harness lint {file}` says what each one wants; "
        "`harness schema` lists every field), then `harness lint`"
    )
    return 0
