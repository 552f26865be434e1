"""The training child process of the training checks (acceptance/training_reruns.py).

Some checks run training in a child interpreter (a fresh process is what a rerun or
a preemption is). The child is this module run as a script
(``python -m acceptance.training_child --out DIR --config JSON ...``). So that a
mutant patched into the worker (``falsifiers.mutants.*``) is the code the child runs
too, the check asks the falsifier engine which patches are active in the worker
(``harness.falsify.active_patches``), hands them to the child, and the child applies
them before training. The child can also pause at a chosen point
(after a step, or half-way through writing a checkpoint file) so that the parent
kills it there with SIGKILL, or inside a step's gradient computation until the
parent, having sent a stop signal, acknowledges (``ack``). With ``cli`` the child
trains through the real ``core train`` / ``core resume`` command (its signal
handling and exit status included) instead of calling ``train``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.context import CheckContext
from harness.falsify import active_patches, apply_patches

PATCH_ENV = "ACCEPTANCE_TRAINING_PATCHES"  # JSON {target: replacement} applied by the child
CHILD_EXIT_NOT_KILLED = 17  # the child paused but nobody killed it


# ---------------------------------------------------------------- the child process


class Child:
    """A training process: ``python -m acceptance.training_child``, with the worker's patches."""

    def __init__(
        self,
        ctx: CheckContext,
        run: Path,
        cfg: Any,
        name: str,
        pause: dict[str, Any] | None = None,
        init: Path | None = None,
        cli: str | None = None,
    ) -> None:
        self.marker = ctx.scratch / f"{name}.paused.json"
        self.log = ctx.scratch / f"{name}.log"
        argv = [
            sys.executable,
            "-m",
            "acceptance.training_child",
            "--out",
            str(run),
            "--config",
            json.dumps(cfg.to_dict()),
        ]
        if init is not None:
            argv += ["--init", str(init)]
        if pause:
            argv += ["--pause", json.dumps(pause), "--marker", str(self.marker)]
        if cli:
            argv += ["--cli", cli]
        env = dict(os.environ)
        env[PATCH_ENV] = json.dumps(active_patches())
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ctx.root), env.get("PYTHONPATH", "")) if p
        )
        self.before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ctx.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.wall = 0.0
        self.cpu = 0.0
        self.maxrss_mb = 0.0

    def wait_paused(self, timeout: float) -> bool:
        """Wait until the child reports it paused at its kill point; False if it exited."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.marker.is_file():
                return True
            if self.proc.poll() is not None:
                return self.marker.is_file()
            time.sleep(0.005)
        return self.marker.is_file()

    def ack(self) -> None:
        """Let a child paused ``in_step`` continue (after the parent signalled it)."""
        ack_path(self.marker).write_text("ack")

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.account()
        return code

    def account(self) -> None:
        """What the OS measured for this child (it has been waited for)."""
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall = time.perf_counter() - self.t0
        self.cpu = (after.ru_utime + after.ru_stime) - (self.before.ru_utime + self.before.ru_stime)
        self.maxrss_mb = after.ru_maxrss / 1024.0

    def tail(self, n: int = 400) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def pause_here(marker: Path, info: Mapping[str, Any], limit: float = 300.0) -> None:
    """Tell the parent where we are, then wait to be killed (exit if nobody does)."""
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(dict(info)))
    os.replace(tmp, marker)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.01)
    os._exit(CHILD_EXIT_NOT_KILLED)


def ack_path(marker: Path) -> Path:
    return marker.with_name(marker.name + ".ack")


def install_step_pause(step: int, marker: Path, limit: float = 300.0) -> None:
    """Pause inside step ``step``, in its gradient computation (the batch drawn, the
    update not applied), until the parent acknowledges; then finish the step as usual.

    The parent sends its signal during the pause: it lands where a real one mostly
    does, in the middle of a step. Wraps ``kernels.train:train_step`` (to know which
    step runs) and ``kernels.train:accumulate_gradients`` (to pause), after the
    worker's patches, so a mutant of either runs inside the wrappers.
    """
    import kernels.train as t

    real_step, real_accumulate = t.train_step, t.accumulate_gradients
    running = {"step": 0}

    def counting_step(cfg: Any, task: Any, opt: Any, st: Any) -> Any:
        running["step"] = st.step + 1
        return real_step(cfg, task, opt, st)

    def pausing_accumulate(task: Any, params: Any, micro_batches: Any) -> Any:
        if running["step"] == step and not marker.is_file():
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(json.dumps({"at": "in_step", "step": step}))
            os.replace(tmp, marker)
            end = time.monotonic() + limit
            while not ack_path(marker).is_file() and time.monotonic() < end:
                time.sleep(0.005)
        return real_accumulate(task, params, micro_batches)

    t.train_step, t.accumulate_gradients = counting_step, pausing_accumulate


def run_cli(command: str, out: str, config: str) -> int:
    """``core train --out OUT --config FILE`` or ``core resume OUT``, as a user runs it;
    returns its exit status."""
    from kernels.cli import core

    if command == "train":
        path = Path(out).parent / f".{Path(out).name}-train-config.json"
        path.write_text(config)
        args = ["train", "--out", out, "--config", str(path)]
    else:
        args = ["resume", out]
    try:
        core.main(args=args, prog_name="core", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def install_write_pause(step: int, filename: str, marker: Path) -> None:
    """Pause half-way through writing ``filename`` of checkpoint ``step``.

    The state left is that of a process killed inside ``atomic_write_bytes``:
    a temp file beside the target holding half the bytes, nothing renamed.
    (``latest`` is matched by its content: the name of that checkpoint.)
    """
    from kernels import checkpoint as ckpt_io

    real = ckpt_io.atomic_write_bytes
    name = ckpt_io.checkpoint_name(step)

    def paused_write(path: Path | str, data: bytes) -> None:
        p = Path(path)
        if filename == ckpt_io.LATEST_FILE:
            hit = p.name == filename and data.decode(errors="replace").strip() == name
        else:
            hit = p.name == filename and name in p.parent.name
        if hit:
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
            os.write(fd, data[: len(data) // 2])
            os.fsync(fd)
            os.close(fd)
            pause_here(marker, {"at": "checkpoint_write", "step": step, "file": filename})
        real(path, data)

    ckpt_io.atomic_write_bytes = paused_write


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acceptance.training_child")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--init")
    parser.add_argument(
        "--pause", help='{"at": "step"|"checkpoint_write"|"in_step", "step": N, "file": F}'
    )
    parser.add_argument("--marker")
    parser.add_argument("--cli", choices=["train", "resume"], help="run the core command")
    args = parser.parse_args(argv)
    apply_patches(json.loads(os.environ.get(PATCH_ENV, "{}")))
    from kernels.train import TrainConfig, train

    cfg = TrainConfig.from_dict(json.loads(args.config))
    pause = json.loads(args.pause) if args.pause else None
    progress = None
    if pause and args.marker:
        marker = Path(args.marker)
        if pause["at"] == "checkpoint_write":
            install_write_pause(int(pause["step"]), str(pause["file"]), marker)
        elif pause["at"] == "in_step":
            install_step_pause(int(pause["step"]), marker)
        else:
            at = int(pause["step"])

            def progress(step: int, total: int, record: Mapping[str, Any]) -> None:
                if step == at:
                    pause_here(marker, {"at": "step", "step": step})

    if args.cli:
        return run_cli(args.cli, args.out, args.config)
    train(cfg, args.out, init=args.init, resume=args.init is None, progress=progress)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(child_main())
