"""What the service checks share: a small HTTP client, an SSE parser, and a way to
start a service process of a check's own (to SIGTERM or SIGKILL it, or to run two).

Checks of a shared service use ``ctx.service(name)`` (the harness started it, see
``services:`` in contracts/service.yaml). A check that starts its own service process
uses ``start_service``: it runs the same command with every mutant patch in force in
the check (``harness.falsify.patching.child_environment``), so a mutant of the service
code reaches it too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.falsify.patching import child_environment

TERMINAL = ("succeeded", "failed", "cancelled")
SEED_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-disposition": "inline",
}


def client(base_url: str, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=timeout)


def header_problems(response: httpx.Response, problem: bool | None = None) -> list[str]:
    """What is wrong with a JSON response's headers (the seed's four); [] when right.
    ``problem``: True for an error document, False for a plain JSON body, None for
    either according to the status (>= 400: a problem document)."""
    if problem is None:
        problem = response.status_code >= 400
    kind = "application/problem+json" if problem else "application/json"
    found = []
    ctype = response.headers.get("content-type")
    if ctype != f"{kind}; charset=utf-8":
        found.append(f"content-type {ctype!r}, wanted '{kind}; charset=utf-8'")
    for key, value in SEED_HEADERS.items():
        if response.headers.get(key) != value:
            found.append(f"{key} {response.headers.get(key)!r}, wanted {value!r}")
    return found


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Events (``id``, ``event``, ``data`` parsed as JSON) and comments
    (``{"comment": ...}``) of an SSE stream, as they arrive."""
    event: dict[str, Any] = {}
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if event:
                if "data" in event:
                    event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            key, _, value = line.partition(":")
            event[key] = value[1:] if value.startswith(" ") else value


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """``probe()`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def wait_status(
    http: httpx.Client, run_id: str, until: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """The run's status once ``until(status)`` holds."""

    def probe() -> dict[str, Any] | None:
        st = http.get(f"/api/training/runs/{run_id}").json()
        return st if until(st) else None

    return wait_for(probe, timeout, f"training run {run_id}")  # type: ignore[no-any-return]


def start_run(http: httpx.Client, body: Mapping[str, Any]) -> str:
    """POST a training run; its ``run_id`` (an AssertionError with the body otherwise)."""
    r = http.post("/api/training/runs", json=dict(body))
    if r.status_code != 201:
        raise AssertionError(f"POST /api/training/runs: {r.status_code} {r.text[:500]}")
    return str(r.json()["run_id"])


@dataclass
class ServiceProcess:
    """A service process a check started (``start_service``)."""

    proc: subprocess.Popen[bytes]
    url: str
    evidence: Path
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait; SIGKILL after ``timeout``. The exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start_service(
    evidence: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    ready: bool = True,
    args: tuple[str, ...] = (),
) -> ServiceProcess:
    """``harness core serve`` on an ephemeral loopback port over ``evidence``, with the
    mutant patches in force here; waits for the URL it announces and, with ``ready``,
    for ``/readyz`` to answer 200. Its stdout and stderr go to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = child_environment({**os.environ, **(env or {})})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kernels.cli", "serve", "--port", "0",
             "--evidence", str(evidence), *args],
            stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, env=full_env,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()  # the URL, announced first
    if not line.startswith("http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the service did not start: {line!r}; log: {log.read_text()[-2000:]}")
    svc = ServiceProcess(proc, line, evidence, log)
    if ready:

        def probe() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited ({proc.returncode}): {svc.log_tail()}")
            try:
                return httpx.get(f"{line}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(probe, timeout, f"{line}/readyz")
    return svc
