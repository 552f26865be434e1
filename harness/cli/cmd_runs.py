"""``harness gc``: prune old runs from the evidence directory."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.group import cli, config


@cli.command()
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    required=True,
    metavar="N",
    help="Keep the N newest complete runs.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option(
    "--evidence-dir",
    type=click.Path(file_okay=False),
    help="The evidence directory to prune [[tool.harness] evidence-dir].",
)
def gc(keep: int, dry_run: bool, evidence_dir: str | None) -> int:
    """Delete old runs from the evidence directory, keeping the N newest complete runs.
    Never deleted: a run the promotion registry names ([tool.harness] promotions), a run
    with a sign-off, a run still being written. Every other run goes, killed and
    interrupted ones included."""
    from harness.runs import delete_runs, human_size, plan_gc

    cfg = config()
    evidence = Path(evidence_dir) if evidence_dir else cfg.evidence_dir
    ledger = cfg.promotions or cfg.root / "release" / "promotions.jsonl"
    plan = plan_gc(evidence, keep, ledger)
    for run, why in plan.kept:
        if not why.startswith("one of the"):
            click.echo(f"kept    {run.name}  ({why})")
    if dry_run:
        from harness.runs import folder_size

        sizes = [(run, folder_size(run)) for run in plan.delete]
        for run, size in sizes:
            click.echo(f"would delete {run.name}  ({human_size(size)})")
        total = sum(size for _, size in sizes)
        click.echo(
            f"dry run: would delete {len(sizes)} run(s), {human_size(total)}; "
            f"{len(plan.kept)} kept in {evidence}"
        )
        return 0
    deleted = delete_runs(plan.delete)
    for run, size in deleted:
        click.echo(f"deleted {run.name}  ({human_size(size)})")
    total = sum(size for _, size in deleted)
    skipped = len(plan.delete) - len(deleted)
    click.echo(
        f"deleted {len(deleted)} run(s), freed {human_size(total)}; "
        f"{len(plan.kept) + skipped} kept in {evidence}"
    )
    return 0
