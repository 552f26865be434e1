"""What every check receives: params, a seeded RNG, a scratch dir, evidence hooks."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, NoReturn

from harness.errors import SkipCheck
from harness.services import ServiceUnavailable, env_prefix


class CheckContext:
    """The one argument of a python check: ``def check(ctx) -> dict``.

    - ``ctx.params``: the invariant's ``params`` (possibly overridden by a falsifier);
    - ``ctx.seed`` / ``ctx.rng``: derived from the run's seed and the check's ID;
      ``ctx.numpy_rng()`` gives a seeded ``numpy.random.Generator``;
    - ``ctx.scratch``: an empty directory of the check's own;
    - ``ctx.attach(path_or_bytes, name)``: copy a file into the evidence;
    - ``ctx.metric(name, value, **labels)``: record a metric line;
    - ``ctx.skip(reason)``: a declared precondition is unmet (SKIP, never a pass);
    - ``ctx.fault``: the fault injector when a fault falsifier runs, else None;
    - ``ctx.service(name)``: the base URL of a service the invariant names in
      ``services:`` (``http://127.0.0.1:PORT``); ``ctx.service_dir(name)`` its folder.
    """

    def __init__(
        self,
        params: dict[str, Any],
        seed: int,
        scratch: Path,
        artifact_dir: Path,
        check_id: str,
        fault: Any = None,
        root: Path | None = None,
    ) -> None:
        self.params = params
        self.seed = seed
        self.rng = random.Random(seed)
        self._scratch = scratch
        self.artifact_dir = artifact_dir
        self.check_id = check_id
        self.fault = fault
        self.root = root or Path.cwd()
        self.artifacts: list[str] = []
        self.metrics: list[dict[str, Any]] = []

    @property
    def scratch(self) -> Path:
        """An empty directory of the check's own, made on first use."""
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def numpy_rng(self) -> Any:
        import numpy as np

        return np.random.default_rng(self.seed)

    def attach(self, src: str | Path | bytes, name: str | None = None) -> str:
        """Copy a file (or bytes) into this check's evidence; returns its name there."""
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(src, (bytes, bytearray)):
            if not name:
                raise ValueError("attach(bytes) needs a name")
            dest = self.artifact_dir / name
            dest.write_bytes(bytes(src))
        else:
            src = Path(src)
            dest = self.artifact_dir / (name or src.name)
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dest)
        self.artifacts.append(dest.name)
        return dest.name

    def attach_json(self, name: str, data: Any) -> str:
        return self.attach(json.dumps(data, indent=2, sort_keys=True, default=str).encode(), name)

    def metric(self, name: str, value: float | int | str, **labels: Any) -> None:
        line: dict[str, Any] = {"name": name, "value": value, "t": time.time()}
        if isinstance(value, float) and math.isfinite(value):
            line["hex"] = value.hex()
        line.update(labels)
        self.metrics.append(line)

    def service(self, name: str) -> str:
        """The base URL (no trailing slash) of the service ``name``, started by the
        harness for this check (``services:`` in the contract)."""
        return self._service_var(name, "URL")

    def service_dir(self, name: str) -> Path:
        """The folder of the service ``name`` (its ``{dir}``): its own files."""
        return Path(self._service_var(name, "DIR"))

    def _service_var(self, name: str, what: str) -> str:
        value = os.environ.get(env_prefix(name) + what)
        if not value:
            raise ServiceUnavailable(
                f"{self.check_id} has no service {name!r}: name it in the invariant's "
                f"`services: [{name}]` and declare it under `services:` in the contract"
            )
        return value

    def skip(self, reason: str) -> NoReturn:
        raise SkipCheck(reason)
