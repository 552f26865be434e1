"""The run store: one folder per training run under ``{evidence}/training/{run_id}/``.

Layout (the seed's names first; docs/service.md has the whole mapping)::

    config.json      written by the service: run_id, the request, the resolved TrainConfig
    provenance.json  the trainer's (datasets and their sha256, code version, init)
    metrics.jsonl    the trainer's: one line per step (step 0: the initial evaluation)
    checkpoints/     ckpt-NNNNNN/: each complete checkpoint of the trainer, hard-linked
                     (copied across file systems), never a symlink
    status.json      queued | running | succeeded | failed | cancelled, with times and pid
    events.jsonl     the event log the SSE stream replays: id, event, data; one writer
    service.log      the child's stdout and stderr
    train_config.json, resources.jsonl, result.json, ckpt-NNNNNN/, latest
                     the trainer's own run directory (``core resume`` continues it)

The child (``kernels.service.child``) is the only writer of ``events.jsonl`` and writes
the running and final statuses; the store writes ``config.json``, the ``queued`` status,
and ``failed`` for a child that died without writing its own end. Everything here is
standard library: the web framework lives in ``app``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernels.errors import KernelsError

TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", *TERMINAL)
RESUMABLE = ("failed", "cancelled")  # ended without finishing: POST .../resume continues it
PARENT_ENV = "KERNELS_SERVICE_PID"  # the service's pid, which a run's child watches
CONFIG = "config.json"
STATUS = "status.json"
EVENTS = "events.jsonl"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LOG = "service.log"


class RunNotFound(KernelsError, LookupError):
    """No run of that id in the evidence folder."""


class RunNotResumable(KernelsError, RuntimeError):
    """The run cannot resume now: it is still running, or it has succeeded."""


def atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def complete_lines(path: Path, start: int = 0) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path`` from line ``start`` (a line still being
    written, without its newline, is left for the next read)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    lines = text.split("\n")[:-1]  # the last piece has no newline yet (or is empty)
    return [json.loads(line) for line in lines[start:] if line.strip()]


def new_run_id() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunStore:
    """The runs under ``root`` (``{evidence}/training``) and the child processes of this
    service. ``env`` is added to each child's environment (audit log, policy, manifest)."""

    root: Path
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepting: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ lookup

    def run_dir(self, run_id: str) -> Path:
        path = self.root / run_id
        if "/" in run_id or run_id.startswith(".") or not (path / CONFIG).is_file():
            raise RunNotFound(f"no training run {run_id!r}")
        return path

    def run_ids(self) -> list[str]:
        """Every run in the evidence folder, oldest first (a restarted service lists them)."""
        found = [p for p in self.root.iterdir() if (p / CONFIG).is_file()]
        found.sort(key=lambda p: (read_json(p / CONFIG).get("created_at", 0), p.name))
        return [p.name for p in found]

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's status record with its step, metrics and checkpoint counts."""
        path = self.run_dir(run_id)
        st = read_json(path / STATUS) or {"status": "queued"}
        if st.get("status") in ("queued", "running") and run_id not in self.procs:
            if not pid_alive(st.get("pid")):  # a run of a previous service process
                st = self.mark_failed(run_id, "interrupted: its process is gone")
        metrics = complete_lines(path / METRICS)
        cfg = read_json(path / CONFIG)
        return {
            "run_id": run_id,
            "status": st.get("status", "queued"),
            "step": int(metrics[-1].get("step", 0)) if metrics else 0,
            "steps": cfg.get("train_config", {}).get("steps"),
            "metrics_count": len(metrics),
            "checkpoint_count": len(self.checkpoints(run_id)),
            "created_at": cfg.get("created_at"),
            "started_at": st.get("started_at"),
            "finished_at": st.get("finished_at"),
            "stopped_by": st.get("stopped_by"),
            "error": st.get("error"),
        }

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """The lines of the run's own metrics.jsonl, as the trainer wrote them."""
        return complete_lines(self.run_dir(run_id) / METRICS)

    def events(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The run's events with an id greater than ``after`` (ids are line numbers)."""
        return complete_lines(self.run_dir(run_id) / EVENTS, max(after, 0))

    def checkpoints(self, run_id: str) -> list[str]:
        folder = self.run_dir(run_id) / CHECKPOINTS
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.name.startswith("ckpt-"))

    def latest_checkpoint(self, run_id: str) -> Path | None:
        names = self.checkpoints(run_id)
        return self.run_dir(run_id) / CHECKPOINTS / names[-1] if names else None

    # ------------------------------------------------------------ lifecycle

    def create(self, request: Mapping[str, Any], train_config: Mapping[str, Any]) -> str:
        """Write the run's config and ``queued`` status, then start its child process."""
        with self.lock:
            if not self.accepting:
                raise RuntimeError("the service is shutting down")
            run_id = new_run_id()
            path = self.root / run_id
            path.mkdir()
            created = time.time()
            atomic_write_json(path / STATUS, {"status": "queued", "queued_at": created})
            atomic_write_json(
                path / CONFIG,
                {"run_id": run_id, "created_at": created, "request": dict(request),
                 "train_config": dict(train_config)},
            )  # fmt: skip
            self.start(run_id, path)
        return run_id

    def start(self, run_id: str, path: Path, resume: bool = False) -> None:
        env = {**os.environ, **self.env}
        # the child watches this process and stops at a checkpoint once it is gone
        env[PARENT_ENV] = str(os.getpid())
        with open(path / LOG, "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "kernels.service.child", str(path),
                 *(["--resume"] if resume else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # the service forwards signals; a ^C reaches it only
            )  # fmt: skip
        self.procs[run_id] = proc
        threading.Thread(target=self.reap, args=(run_id, proc), daemon=True).start()

    def resume(self, run_id: str) -> dict[str, Any]:
        """Continue a run that ended without finishing (``failed``, e.g. interrupted, or
        ``cancelled``) from its trainer's latest checkpoint, with the optimizer, RNG and
        data cursor saved there (the trainer's own resume: the same bytes as a run never
        stopped). ``RunNotResumable`` for a run that is still going or has succeeded."""
        path = self.run_dir(run_id)
        with self.lock:
            if not self.accepting:
                raise RunNotResumable("the service is shutting down; no run resumes now")
            proc = self.procs.get(run_id)
            ending = read_json(path / STATUS).get("status") in RESUMABLE
            if ending and proc is not None and proc.poll() is None:  # writing its last event
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
            before = self.status(run_id)
            if before["status"] not in RESUMABLE or (proc is not None and proc.poll() is None):
                why = "finished" if before["status"] == "succeeded" else "still running"
                raise RunNotResumable(f"run {run_id} is {why}; only a failed or cancelled run "
                                      "resumes")  # fmt: skip
            previous = read_json(path / STATUS)
            previous.pop("previous", None)  # one level of history: the attempt resumed
            atomic_write_json(path / STATUS, {"status": "queued", "queued_at": time.time(),
                                              "resume": True, "previous": previous})  # fmt: skip
            self.start(run_id, path, resume=True)
        return self.status(run_id)

    def reap(self, run_id: str, proc: subprocess.Popen[bytes]) -> None:
        """Wait for a child; one that ended without writing its final status failed."""
        code = proc.wait()
        path = self.root / run_id
        with self.lock:  # a resumed run has a process of its own by now: leave it be
            mine = self.procs.get(run_id) is proc
        if mine and read_json(path / STATUS).get("status") not in TERMINAL:
            self.mark_failed(run_id, f"the training process exited with status {code}")
        with self.lock:
            if self.procs.get(run_id) is proc:
                self.procs.pop(run_id, None)

    def writing(self, run_id: str) -> bool:
        """Whether this service's child for the run may still append to its events
        (started and not yet exited)."""
        proc = self.procs.get(run_id)
        return proc is not None and proc.poll() is None

    def mark_failed(self, run_id: str, error: str) -> dict[str, Any]:
        path = self.root / run_id
        st = {**read_json(path / STATUS), "status": "failed", "error": error,
              "finished_at": time.time()}  # fmt: skip
        atomic_write_json(path / STATUS, st)
        return st

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask the run to stop at its next step boundary (SIGTERM: the trainer's kill
        switch writes a final checkpoint of that step). Idempotent; a finished run stays
        as it is."""
        path = self.run_dir(run_id)
        proc = self.procs.get(run_id)
        if proc is not None and proc.poll() is None:
            st = read_json(path / STATUS)
            st.setdefault("cancel_requested_at", time.time())
            st.setdefault("stopped_by", "DELETE")
            if st.get("status") not in TERMINAL:
                atomic_write_json(path / STATUS, st)
            proc.send_signal(signal.SIGTERM)
        return self.status(run_id)

    def wait(self, run_id: str, timeout: float) -> bool:
        proc = self.procs.get(run_id)
        if proc is None:
            return True
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop accepting; ask every running child to stop at a checkpoint and wait for
        them (SIGKILL after ``timeout``: the latest complete checkpoint then stands)."""
        with self.lock:
            self.accepting = False
            procs = dict(self.procs)
        for run_id, proc in procs.items():
            if proc.poll() is None:
                st = read_json(self.root / run_id / STATUS)
                if st.get("status") not in TERMINAL:
                    st.setdefault("stopped_by", "shutdown")
                    atomic_write_json(self.root / run_id / STATUS, st)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
