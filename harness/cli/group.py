"""The ``harness`` command group: exit codes, error reporting, project commands.

Exit codes are set in one place, ``HarnessGroup.invoke``: a ``HarnessError``
carries its own ``exit_code``; anything else is a bug in the harness (exit 3).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from harness import __version__
from harness.errors import HarnessError, UsageError
from harness.exitcodes import ExitCode


def config() -> Any:
    from harness.config import load_config

    return load_config()


def contract_paths(paths: tuple[str, ...], cfg: Any) -> list[Path]:
    """The contract files or folders a command reads: ``paths``, else the configured
    ones; a project with no contract file at all is told how to start (exit 4)."""
    if paths:
        return [Path(p) for p in paths]
    from harness.loader import discover, display_path

    configured = list(cfg.contracts)
    present = [p for p in configured if p.exists()]
    if configured and present and discover(present):
        return configured
    where = ", ".join(display_path(p) for p in configured) or "(none configured)"
    source = (
        f"[tool.harness] contracts in {display_path(cfg.pyproject)}"
        if cfg.pyproject
        else f"no pyproject.toml in {cfg.root} or above"
    )
    raise UsageError(
        f"no contracts in {where} ({source}): run `harness init` to set up contracts/ "
        "with an example, or `harness new criterion contracts/NAME.yaml` to start one"
    )


def evidence_dir_option(command: Any) -> Any:
    """``--evidence-dir``: where a command looks runs up."""
    return click.option(
        "--evidence-dir",
        type=click.Path(file_okay=False),
        help="The evidence directory where run ids, 'latest' and 'previous' (the newest "
        "complete runs; a killed run only by its id) are looked up "
        "[[tool.harness] evidence-dir].",
    )(command)


def find_run(ref: str, evidence_dir: str | None = None) -> Path:
    """The run folder a command was given: a path, a run id (or a unique prefix),
    'latest' or 'previous' (the newest complete runs: ``harness.runs.resolve_run``),
    shown relative to here."""
    from harness.runs import resolve_run

    evidence = Path(evidence_dir) if evidence_dir else config().evidence_dir
    found = resolve_run(evidence, ref)
    if found == Path(ref):
        return found
    try:
        return found.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return found


def report_error(exc: BaseException) -> ExitCode:
    """Print what went wrong and choose the exit code."""
    if isinstance(exc, HarnessError):
        for line in exc.report_lines():
            click.echo(line, err=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        click.echo("harness: interrupted", err=True)
        return ExitCode.INTERRUPTED
    traceback.print_exception(exc)
    click.echo(
        "harness: internal error (a bug in the harness; please report it with the traceback above)",
        err=True,
    )
    return ExitCode.INTERNAL_ERROR


class HarnessGroup(click.Group):
    """Click's usage errors exit 4 (not click's 2); Ctrl-C at a prompt exits 2.

    A project can mount commands of its own under ``harness`` without the tool
    importing them: ``[tool.harness] commands = {core = "kernels.cli:core"}``
    (imported from the project root, like a binding, only when invoked)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
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

    def invoke(self, ctx: click.Context) -> Any:
        try:
            rv = super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            ctx.exit(int(report_error(exc)))
        if isinstance(rv, int) and rv:
            ctx.exit(rv)
        return rv

    def _project_commands(self) -> dict[str, str]:
        try:
            return dict(config().commands)
        except HarnessError:
            return {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._project_commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        builtin = super().get_command(ctx, name)
        if builtin is not None:
            return builtin
        target = self._project_commands().get(name)
        if target is None:
            return None
        mod, _, attr = target.partition(":")
        root = str(config().root)
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            cmd = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(
                f"'harness {name}' is unavailable: {target} "
                f"([tool.harness] commands) does not import: {exc}"
            ) from exc
        if not isinstance(cmd, click.Command):
            raise UsageError(f"'harness {name}': {target} is not a click command")
        return cmd


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Declarative acceptance contracts for ML systems: YAML in, GO/NO-GO evidence out."""
