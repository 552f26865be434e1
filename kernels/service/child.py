"""One training run of the service: ``python -m kernels.service.child RUN_DIR [--resume]``.

Reads ``RUN_DIR/config.json`` (written by ``RunStore.create``), trains with
``kernels.train.train`` into RUN_DIR, and as each step completes appends a ``step``
event (the metrics line the trainer has just written) to ``events.jsonl``, and after a
checkpoint a ``checkpoint`` event once the checkpoint is linked into ``checkpoints/``.
SIGTERM (the service's DELETE or its shutdown) is the trainer's kill switch: the step in
progress finishes, a complete checkpoint of it is written, and the run ends
``cancelled``. So does the death of the service (``watch_service``: ``stopped_by:
service-lost``). ``--resume`` (``POST .../resume``) continues the run from the trainer's
latest checkpoint, after a ``resume`` event naming it. The last event is ``end`` with the
final status; the status file is written before it, so a reader that sees ``end`` sees
the final status.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from kernels.service.runs import (
    CHECKPOINTS,
    CONFIG,
    EVENTS,
    METRICS,
    PARENT_ENV,
    STATUS,
    TERMINAL,
    atomic_write_json,
    complete_lines,
    read_json,
)

SERVICE_LOST = "service-lost"  # stopped_by of a run whose service died under it
_STATUS_LOCK = threading.Lock()  # the main thread and the service watcher both write it


class EventLog:
    """``events.jsonl``: one JSON line per event, ids 1, 2, ... (the line numbers); this
    process is its only writer. On a restart the ids continue after the last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.next_id = len(complete_lines(path)) + 1

    def append(self, event: str, data: dict[str, Any]) -> None:
        line = json.dumps({"id": self.next_id, "event": event, "data": data}, sort_keys=True)
        with open(self.path, "a") as fh:  # one write of a whole line, then flushed
            fh.write(line + "\n")
        self.next_id += 1


class LineTail:
    """The complete JSON lines appended to a file since the last call (a line still being
    written waits for the next): each step reads what that step wrote, not the whole
    file again, which would make a run of n steps read n * n / 2 lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].decode().splitlines() if line.strip()]


def link_checkpoint(src: Path, dest_root: Path) -> Path:
    """Hard-link (or copy, across file systems) a complete checkpoint folder into
    ``checkpoints/`` through a staging folder renamed into place: never a symlink, never
    half there. The trainer replaces files by rename, so a link keeps the bytes it saw."""
    dest = dest_root / src.name
    if dest.is_dir():
        return dest
    dest_root.mkdir(exist_ok=True)
    stage = dest_root / f".{src.name}.{os.getpid()}.partial"
    shutil.rmtree(stage, ignore_errors=True)

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, stage, copy_function=link_or_copy)
    os.replace(stage, dest)
    return dest


def set_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    with _STATUS_LOCK:
        st = {**read_json(run_dir / STATUS), **fields}
        atomic_write_json(run_dir / STATUS, st)
    return st


def watch_service(run_dir: Path, stop: Any, parent: int | None, poll_s: float = 0.05) -> None:
    """Stop the run at its next step boundary (with a checkpoint, as SIGTERM does) once
    the service that started it is gone: SIGKILLed, crashed. This process runs in a
    session of its own, so nothing else tells it; an orphan must not train on, unwatched,
    into a folder a restarted service manages. A restarted service lists the run
    ``cancelled`` (``stopped_by: service-lost``) and ``POST .../resume`` continues it."""
    if not parent:
        return

    def watch() -> None:
        while not stop.is_set():
            if os.getppid() != parent:  # re-parented: the service has died
                with _STATUS_LOCK:
                    st = read_json(run_dir / STATUS)
                    if st.get("status") not in TERMINAL:
                        atomic_write_json(run_dir / STATUS, {**st, "stopped_by": SERVICE_LOST})
                stop.request()
                return
            time.sleep(poll_s)

    threading.Thread(target=watch, name="watch-service", daemon=True).start()


def train_run(cfg: Any, run_dir: Path, resume: bool, progress: Any, stop: Any) -> Any:
    """The trainer on the run's folder: a new run, or (``resume``) the trainer's own
    resume from its latest checkpoint, with the optimizer moments, RNG state and data
    cursor saved there, so the run ends with the bytes of a run never interrupted."""
    from kernels.train import train

    return train(cfg, run_dir, resume=resume, progress=progress, stop=stop)


def run(run_dir: Path, resume: bool = False) -> int:
    from kernels.train import StopFlag, stop_on_signals

    stop = StopFlag()
    with stop_on_signals(stop):  # before the heavy imports: a DELETE at once still stops
        parent = os.environ.get(PARENT_ENV, "")
        watch_service(run_dir, stop, int(parent) if parent.isdigit() else None)
        from kernels.checkpoint import checkpoint_name, latest_checkpoint
        from kernels.train import TrainConfig

        events = EventLog(run_dir / EVENTS)
        set_status(run_dir, status="running", pid=os.getpid(), started_at=time.time())
        try:
            cfg = TrainConfig.from_dict(read_json(run_dir / CONFIG)["train_config"])
            if resume:
                latest = latest_checkpoint(run_dir)
                step = int(latest.name.rsplit("-", 1)[-1]) if latest is not None else 0
                set_status(run_dir, resumed_from_step=step)
                name = latest.name if latest is not None else None
                events.append("resume", {"step": step, "checkpoint": name})

            metrics_tail = LineTail(run_dir / METRICS)

            def progress(step: int, steps: int, record: Any) -> None:
                metrics = metrics_tail.new()  # the lines written since the last step
                if events.next_id == 1:
                    for line in metrics[:-1]:  # the step-0 evaluation, before step 1
                        events.append("step", line)
                events.append("step", metrics[-1] if metrics else dict(record))
                ckpt = run_dir / checkpoint_name(step)
                if ckpt.is_dir():
                    linked = link_checkpoint(ckpt, run_dir / CHECKPOINTS)
                    events.append(
                        "checkpoint",
                        {"step": step, "name": linked.name, "path": f"{CHECKPOINTS}/{linked.name}"},
                    )

            result = train_run(cfg, run_dir, resume, progress, stop)
        except BaseException as exc:  # recorded, then the status says failed
            traceback.print_exc()
            message = " ".join(str(exc).split()) or type(exc).__name__
            set_status(run_dir, status="failed", error=message, finished_at=time.time())
            events.append("end", {"status": "failed", "error": message})
            return 1
        status = "cancelled" if result.stopped else "succeeded"
        stopped_by = read_json(run_dir / STATUS).get("stopped_by") or (
            stop.signal_name if result.stopped else None
        )
        st = set_status(
            run_dir, status=status, finished_at=time.time(), step=result.step,
            stopped_by=stopped_by, weights_sha256=result.weights_sha256,
            val_loss=result.val_loss,
        )  # fmt: skip
        events.append(
            "end",
            {
                "status": st["status"],
                "step": result.step,
                "stopped_by": stopped_by,
                "weights_sha256": result.weights_sha256,
            },
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m kernels.service.child RUN_DIR [--resume]", file=sys.stderr)
        return 2
    return run(Path(args[0]), resume=resume)


if __name__ == "__main__":
    # run the code of the imported module, not this ``__main__`` copy of it: a name
    # replaced in ``kernels.service.child`` (a mutant's patch, applied at interpreter
    # start) then is the name the run looks up
    from kernels.service import child

    sys.exit(child.main())
