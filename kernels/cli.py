"""``core``: train, resume, evaluate, generate from, inspect and stamp checkpoints; serve.

Thin click commands over ``kernels.train``, ``kernels.checkpoint`` and
``kernels.infer``; the harness mounts the group as ``harness core ...``.
User errors print one line (``Error: ...``) and exit 1, never a traceback.
``train`` and ``resume`` are stopped cleanly by SIGTERM or SIGINT (the kill switch):
the step in progress finishes, a complete checkpoint of it is written and the command
exits 75 (``kernels.train.EXIT_STOPPED``); ``resume`` continues it exactly.
Heavy modules (numpy, numba) are imported inside the commands, so building the
group costs nothing at harness start-up.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

TRAIN_OPTIONS = (
    "family", "seed", "steps", "batch_size", "grad_accum", "lr", "warmup", "min_lr",
    "weight_decay", "clip", "eval_every", "ckpt_every", "eval_windows", "purpose", "dataset",
    "threads",
)  # fmt: skip


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing errors into one ``Error:`` line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kernels.checkpoint import CheckpointError
        from kernels.train import TrainError

        known: tuple[type[BaseException], ...] = (CheckpointError, TrainError, OSError)
        try:
            from kernels.data.manifest import DatasetError

            known += (DatasetError,)
        except ImportError:
            pass
        try:
            return fn(*args, **kwargs)
        except known as exc:
            raise click.ClickException(one_line(exc)) from None
        except ValueError as exc:  # configs rejected by ModelConfig / MLPConfig
            raise click.ClickException(one_line(exc)) from None

    return wrapper


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


@click.group(name="core")
def core() -> None:
    """Train and run the numba LM / classifier core, and inspect its checkpoints."""


# ---------------------------------------------------------------- train / resume


def progress_reporter(total: int) -> tuple[Callable[..., None] | None, Callable[[], None]]:
    """A progress callback drawing a bar on stderr when it is a TTY; (None, noop) otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    bar = click.progressbar(length=total, label="training", file=sys.stderr, show_pos=True)
    bar.__enter__()
    state = {"done": 0}

    def update(step: int, steps: int, record: dict[str, Any]) -> None:
        bar.label = f"loss {record.get('loss', float('nan')):.3f}"
        bar.update(step - state["done"])
        state["done"] = step

    return update, lambda: bar.__exit__(None, None, None)


def run_training(cfg: Any, out: Path, init: str | None, resume: bool) -> None:
    from kernels.train import EXIT_STOPPED, stop_on_signals, train

    update, close = progress_reporter(cfg.steps)  # a resumed run's first update jumps ahead
    try:
        with stop_on_signals() as stop:
            result = train(cfg, out, init=init, resume=resume, progress=update, stop=stop)
    finally:
        close()
    if result.stopped:
        click.echo(
            f"stopped by {stop.signal_name} after step {result.step}: checkpoint "
            f"{result.checkpoint} (sha256 {result.weights_sha256}); continue with "
            f"`core resume {out}`",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_STOPPED)
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
    click.echo(
        f"{result.extra.get('label', result.purpose)}: {result.step} steps, val loss {val}, "
        f"{result.tokens_per_param:.2f} tokens/param"
    )
    click.echo(f"checkpoint {result.checkpoint}  sha256 {result.weights_sha256}")


def load_config_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json errors
        raise click.ClickException(f"{path}: not a valid config file ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: expected a mapping of TrainConfig fields")
    return data


@core.command("train")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run dir.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON/YAML config.")
@click.option("--family", type=click.Choice(["gpt2", "llama", "mlp"]))
@click.option("--model", "model_json", help="Model config JSON, e.g. '{\"n_layer\": 1}'.")
@click.option("--seed", type=int)
@click.option("--steps", type=int)
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int)
@click.option("--lr", type=float)
@click.option("--warmup", type=int)
@click.option("--min-lr", type=float)
@click.option("--weight-decay", type=float)
@click.option("--clip", type=float)
@click.option("--eval-every", type=int)
@click.option("--ckpt-every", type=int)
@click.option("--eval-windows", type=int)
@click.option("--purpose", type=click.Choice(["ship", "ablation"]))
@click.option("--dataset")
@click.option("--threads", type=int)
@click.option("--init", "init", type=click.Path(), help="Start from this checkpoint's weights.")
@user_errors
def train_cmd(out: str, config_file: str | None, model_json: str | None, init: str | None,
              **options: Any) -> None:  # fmt: skip
    """Train a model into OUT (refuses a directory that already holds a run).

    SIGTERM or SIGINT stops the run once the step in progress has finished, with a
    complete checkpoint of that step; `core resume OUT` continues it to the bytes of
    a run that was never stopped.

    \b
    Exit status:
      0      the run finished
      75     stopped by SIGTERM or SIGINT at a complete checkpoint (resume it)
      other  an error (printed as one line, no traceback)
    """
    from kernels.train import TrainConfig

    fields = load_config_file(config_file) if config_file else {}
    fields.update({k: v for k, v in options.items() if v is not None})
    if model_json:
        try:
            fields["model"] = json.loads(model_json)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"--model: not JSON ({exc})") from None
    cfg = TrainConfig.from_dict(fields)
    run_training(cfg, Path(out), init, resume=False)


@core.command("resume")
@click.argument("run_dir", type=click.Path(file_okay=False))
@user_errors
def resume_cmd(run_dir: str) -> None:
    """Continue the run in RUN_DIR from its latest checkpoint, exactly.

    SIGTERM or SIGINT stops it as they stop `core train`.

    \b
    Exit status:
      0      the run finished
      75     stopped by SIGTERM or SIGINT at a complete checkpoint (resume it)
      other  an error (printed as one line, no traceback)
    """
    from kernels.train import CONFIG_FILE, TrainConfig

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise click.ClickException(f"{path}: missing; is {run_dir} a run directory?")
    cfg = TrainConfig.from_dict(load_config_file(str(path)))
    run_training(cfg, Path(run_dir), None, resume=True)


# ---------------------------------------------------------------- eval / generate


@core.command("eval")
@click.argument("ckpt", type=click.Path())
@click.option("--split", default="val", type=click.Choice(["val", "train", "test"]))
@click.option("--windows", type=int, help="LM: number of windows (default: the stamped eval).")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def eval_cmd(ckpt: str, split: str, windows: int | None, as_json: bool) -> None:
    """Evaluate CKPT: val loss and perplexity (LM) or loss and accuracy (MLP)."""
    from kernels.serving import evaluate_checkpoint

    result = evaluate_checkpoint(ckpt, split=split, windows=windows)
    if as_json:
        click.echo(json.dumps(result, indent=1, sort_keys=True))
        return
    for key, value in result.items():
        click.echo(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")


@core.command("generate")
@click.argument("ckpt", type=click.Path())
@click.option("--prompt", default="", help="Prompt text (default: empty, starts from a newline).")
@click.option("--max-new-tokens", default=64, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-k", default=0, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@user_errors
def generate_cmd(ckpt: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int,
                 seed: int) -> None:  # fmt: skip
    """Generate text from CKPT with the tokenizer embedded in it."""
    from kernels.serving import generate_from_checkpoint

    text = generate_from_checkpoint(ckpt, prompt, max_new_tokens, temperature, top_k, seed)
    click.echo(text)


# ---------------------------------------------------------------- inspect / stamp


def summarize_stamp(key: str, value: str) -> str:
    if key == "tokenizer":
        return f"<embedded, {len(value)} chars>"
    return value if len(value) <= 200 else value[:197] + "..."


@core.command("inspect")
@click.argument("ckpt", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def inspect_cmd(ckpt: str, as_json: bool) -> None:
    """Print CKPT's stamps and its metadata-completeness score with a breakdown."""
    from kernels.checkpoint import inspect_checkpoint

    report = inspect_checkpoint(ckpt)
    if as_json:
        click.echo(json.dumps(report, indent=1, sort_keys=True))
        return
    click.echo(f"file: {report['file']}")
    click.echo(f"sha256: {report['sha256']}")
    click.echo(f"tensors: {report['n_tensors']} ({report['n_params']} parameters)")
    click.echo(f"tensor family: {report['tensor_family']} (identity: {report['identity']})")
    click.echo("stamps:")
    for key, value in sorted(report["stamps"].items()):
        click.echo(f"  {key}: {summarize_stamp(key, value)}")
    click.echo(f"completeness: {report['completeness']}/100")
    for key, item in report["breakdown"].items():
        mark = "ok" if item["points"] else ("!!" if item.get("contradicts_tensors") else "--")
        click.echo(f"  [{mark}] {item['points']:>2}/{item['max']:<2} {key}: {item['what']}")


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.ClickException(f"--set {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


@core.command("stamp")
@click.argument("ckpt", type=click.Path())
@click.option("--architecture", help="Family slug the loader dispatches on (gpt2, llama, mlp).")
@click.option("--hf-architecture", help="HF architecture class, e.g. GPT2LMHeadModel.")
@click.option("--hf-model-type", help="HF config model_type, e.g. gpt2.")
@click.option("--purpose", type=click.Choice(["ship", "ablation"]))
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Any stamp.")
@click.option("--unset", "removals", multiple=True, metavar="KEY", help="Remove a stamp.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not in place.")
@user_errors
def stamp_cmd(ckpt: str, architecture: str | None, hf_architecture: str | None,
              hf_model_type: str | None, purpose: str | None, assignments: tuple[str, ...],
              removals: tuple[str, ...], output: str | None) -> None:  # fmt: skip
    """Patch CKPT's stamps in place (atomically) and print the new sha256."""
    from kernels.checkpoint import patch_stamps

    updates: dict[str, str | None] = dict(parse_assignments(assignments))
    named = {
        "architecture": architecture,
        "hf_architecture": hf_architecture,
        "hf_model_type": hf_model_type,
        "purpose": purpose,
    }
    updates.update({k: v for k, v in named.items() if v is not None})
    updates.update({k: None for k in removals})
    if not updates:
        raise click.ClickException("nothing to stamp: give --architecture, --set KEY=VALUE, ...")
    path, digest = patch_stamps(ckpt, updates, out=output)
    click.echo(f"{path}: sha256 {digest}")


# ---------------------------------------------------------------- serve


@core.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="A loopback address.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0: an ephemeral port (the bound URL is printed).")  # fmt: skip
@click.option("--evidence", "evidence", default="evidence", show_default=True,
              type=click.Path(file_okay=False), help="Runs go to EVIDENCE/training/.")  # fmt: skip
@click.option(
    "--shutdown-timeout",
    default=60.0,
    show_default=True,
    type=float,
    help="Seconds a running training run gets to reach a checkpoint on SIGTERM.",
)
@click.option(
    "--sse-ping",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between the keep-alive comments of an idle event stream.",
)
@click.option(
    "--mock",
    "mocks",
    multiple=True,
    hidden=True,
    help="Name a mock code path (there is none; MOCKS_DISABLED=1 refuses any).",
)
def serve_cmd(host: str, port: int, evidence: str, shutdown_timeout: float, sse_ping: float,
              mocks: tuple[str, ...]) -> None:  # fmt: skip
    """Serve the training API on HOST:PORT until SIGTERM (docs/service.md).

    Prints the bound URL on its first line. SIGTERM or SIGINT: stop accepting, let
    each running training run finish its step and write a checkpoint, exit 0.
    """
    from kernels.service.app import MocksRefused
    from kernels.service.server import NotLoopback, serve

    def announce(url: str) -> None:
        click.echo(url)
        sys.stdout.flush()

    try:
        code = serve(evidence, host, port, announce=announce, mocks=mocks,
                     shutdown_timeout_s=shutdown_timeout, sse_ping_s=sse_ping)  # fmt: skip
    except (MocksRefused, NotLoopback, OSError) as exc:
        raise click.ClickException(one_line(exc)) from None
    raise click.exceptions.Exit(code)


main = core


if __name__ == "__main__":
    core()
