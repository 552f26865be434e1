"""The injector base class and the generic fault injectors.

A check that supports faults calls ``ctx.fault.inject(...)`` at its injection
point with the target (a file path, or a running process). Every injector
verifies that its fault took effect; one that cannot inject raises
``InjectionFailed`` (the falsifier is then ERROR, never a pass).

Injectors: truncate_file, flip_bytes, remove_file, unreadable, sigkill,
fill_disk (a write limit on a child process), set_metadata (rewrite one
safetensors metadata stamp).

A project writes its own injector as a subclass of ``Injector`` named in the
contract as ``injector: "package.module:Class"`` (see ``Injector`` for the API).
"""

from __future__ import annotations

import functools
import json
import os
import random
import resource
import signal
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.bindings import resolve_allowed
from harness.errors import HarnessError


class InjectionFailed(HarnessError):
    """An injector could not inject its fault: the falsifier is ERROR, never a pass."""


class Injector:
    """The base of every fault injector: subclass it for an injector of your own.

    The API, all a contract and a check see::

        class ZeroFile(Injector):  # injector: "mypkg.faults:ZeroFile"
            name = "zero_file"  # shown in reports

            def inject(self, path):  # the check calls ctx.fault.inject(path=...)
                p = Path(path)
                keep = int(self.params.get("keep", 0))  # the fault's params: in YAML
                data = p.read_bytes()
                p.write_bytes(data[:keep] + bytes(len(data) - keep))
                if p.read_bytes()[keep:].strip(b"\\0"):
                    raise InjectionFailed(f"{p} still holds data")  # ERROR, never a pass
                self.report = {"path": str(p), "zeroed": len(data) - keep}  # in evidence
                return p

    - ``inject(**target)``: override it (or ``_inject``, the older spelling; the
      generic injectors do). The check calls it at its injection point with the
      target (``path=...``, ``process=Popen``, anything the check and injector
      agree on); what it returns goes back to the check. Return only once the
      fault took effect; raise ``InjectionFailed`` when it could not.
    - Returning from ``inject`` records that the fault was injected
      (``self.injected``); ``InjectionFailed`` records why not (``self.failure``).
      The ``inject`` a subclass resolves (its own, or one it inherits from a mixin;
      a plain method, a ``staticmethod`` or a ``classmethod``) is wrapped once when
      the class is made, so it records the same as the base does: there is nothing
      to call or set by hand. A
      falsifier whose check never called ``inject``, or whose ``inject`` raised,
      is ERROR.
    - ``self.params``: the falsifier's ``fault.params``; ``self.rng``: a
      ``random.Random`` seeded by the run, for any random choice (offsets, steps);
      ``self.report``: a dict of plain data kept in the evidence.
    - The constructor is ``(params, seed)``; an override calls
      ``super().__init__(params, seed)`` first.
    """

    name = "injector"
    injected = False
    failure = ""

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        self.params = params
        self.rng = random.Random(seed)
        self.injected = False
        self.failure = ""
        self.report: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the inject this class resolves (its own, a mixin's, a base's), whatever its kind
        resolved = next(k.__dict__["inject"] for k in cls.__mro__ if "inject" in k.__dict__)
        if not getattr(resolved, "_records_injection", False):  # wrapped once, here
            cls.inject = _recording(resolved)  # type: ignore[method-assign]

    def inject(self, **target: Any) -> Any:
        """Inject the fault into ``target``; see the class docstring."""
        return self._inject(**target)

    def _inject(self, **target: Any) -> Any:
        raise InjectionFailed(
            f"{self.name} has no injection: override inject(self, **target) in "
            f"{type(self).__qualname__}"
        )


def _recording(inject: Any) -> Callable[..., Any]:
    """``inject`` (a class attribute: a function, staticmethod, classmethod or any
    other descriptor or callable) as a method that records, on the injector, whether
    its fault was injected."""
    function = inject.__func__ if isinstance(inject, (staticmethod, classmethod)) else inject
    bind = getattr(type(inject), "__get__", None)

    @functools.wraps(function)
    def recorded(self: Injector, *args: Any, **target: Any) -> Any:
        call = bind(inject, self, type(self)) if bind is not None else inject
        try:
            out = call(*args, **target)
        except InjectionFailed as exc:
            self.failure = str(exc)
            raise
        self.injected = True
        return out

    recorded._records_injection = True  # type: ignore[attr-defined]
    return recorded


Injector.inject = _recording(Injector.inject)  # type: ignore[method-assign]


def _file(target: dict[str, Any]) -> Path:
    path = target.get("path")
    if path is None:
        raise InjectionFailed("inject(path=...) needs the file to corrupt")
    p = Path(path)
    if not p.is_file():
        raise InjectionFailed(f"{p} is not a file")
    return p


class TruncateFile(Injector):
    """Cut a file short: params keep_fraction (default 0.5) or keep_bytes."""

    name = "truncate_file"

    def _inject(self, **target: Any) -> None:
        p = _file(target)
        size = p.stat().st_size
        keep = int(
            self.params.get("keep_bytes", size * float(self.params.get("keep_fraction", 0.5)))
        )
        if not 0 <= keep < size:
            raise InjectionFailed(f"cannot truncate {p} ({size} bytes) to {keep} bytes")
        os.truncate(p, keep)
        if p.stat().st_size != keep:
            raise InjectionFailed(f"{p} is still {p.stat().st_size} bytes")
        self.report = {"path": str(p), "size_before": size, "size_after": keep}


class FlipBytes(Injector):
    """Flip bits of ``count`` bytes (default 1) at seeded offsets (or ``offset``)."""

    name = "flip_bytes"

    def _inject(self, **target: Any) -> None:
        p = _file(target)
        data = bytearray(p.read_bytes())
        if not data:
            raise InjectionFailed(f"{p} is empty")
        lo = int(self.params.get("min_offset", 0))
        offsets = (
            [int(self.params["offset"])]
            if "offset" in self.params
            else [
                self.rng.randrange(min(lo, len(data) - 1), len(data))
                for _ in range(int(self.params.get("count", 1)))
            ]
        )
        for off in offsets:
            data[off] ^= 0xFF
        p.write_bytes(bytes(data))
        self.report = {"path": str(p), "offsets": offsets}


class RemoveFile(Injector):
    name = "remove_file"

    def _inject(self, **target: Any) -> None:
        p = _file(target)
        p.unlink()
        if p.exists():
            raise InjectionFailed(f"{p} still exists")
        self.report = {"path": str(p)}


class Unreadable(Injector):
    """Make a file unreadable. As root, permissions do not stop reads, so the
    file is moved aside (kept, nothing lost) and a directory takes its name."""

    name = "unreadable"

    def _inject(self, **target: Any) -> None:
        p = _file(target)
        p.chmod(0)
        try:
            with open(p, "rb"):
                readable = True
        except PermissionError:
            readable = False
        method = "chmod 000"
        if readable:  # root: fall back to a directory in its place
            p.chmod(stat.S_IRUSR | stat.S_IWUSR)
            aside = p.with_name(p.name + ".unreadable-orig")
            p.rename(aside)
            p.mkdir()
            method = f"replaced by a directory (original kept at {aside.name})"
            try:
                with open(p, "rb"):
                    raise InjectionFailed(f"{p} is still readable")
            except IsADirectoryError:
                pass
        self.report = {"path": str(p), "method": method}


class Sigkill(Injector):
    """SIGKILL a running process. params: step (int) or between [lo, hi]; the
    check asks ``ctx.fault.step`` when to kill and passes ``process=Popen``."""

    name = "sigkill"

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        super().__init__(params, seed)
        if "step" in params:
            self.step = int(params["step"])
        elif "between" in params:
            lo, hi = params["between"]
            self.step = self.rng.randint(int(lo), int(hi))
        else:
            self.step = -1

    def _inject(self, **target: Any) -> None:
        proc = target.get("process")
        if not isinstance(proc, subprocess.Popen):
            raise InjectionFailed("inject(process=Popen) needs the process to kill")
        if proc.poll() is not None:
            raise InjectionFailed(f"process {proc.pid} already exited ({proc.returncode})")
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=30)
        if code != -signal.SIGKILL:
            raise InjectionFailed(f"process {proc.pid} ended with {code}, not by SIGKILL")
        self.report = {"pid": proc.pid, "step": self.step, "at": target.get("at", "")}


class FillDisk(Injector):
    """A write limit for a child process: files it writes past ``limit_bytes``
    fail with EFBIG, as on a full disk. Use ``preexec_fn=ctx.fault.inject()``."""

    name = "fill_disk"

    def _inject(self, **target: Any) -> Any:
        limit = int(self.params.get("limit_bytes", 64 * 1024))
        self.report = {"limit_bytes": limit}

        def limit_writes() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return limit_writes


class SetMetadata(Injector):
    """Rewrite one ``__metadata__`` stamp of a safetensors file in place.
    params: key, value (e.g. key: architecture, value: llama)."""

    name = "set_metadata"

    def _inject(self, **target: Any) -> None:
        p = _file(target)
        key, value = self.params.get("key"), self.params.get("value")
        if not key:
            raise InjectionFailed("set_metadata needs params.key and params.value")
        raw = p.read_bytes()
        if len(raw) < 8:
            raise InjectionFailed(f"{p} is not a safetensors file")
        (n,) = struct.unpack("<Q", raw[:8])
        try:
            header = json.loads(raw[8 : 8 + n])
        except ValueError as exc:
            raise InjectionFailed(f"{p} has no readable safetensors header") from exc
        meta = header.setdefault("__metadata__", {})
        before = meta.get(key)
        meta[key] = str(value)
        new = json.dumps(header, separators=(",", ":")).encode()
        new += b" " * ((8 - len(new) % 8) % 8)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
        os.replace(tmp, p)
        self.report = {"path": str(p), "key": key, "before": before, "after": str(value)}


INJECTORS: dict[str, type[Injector]] = {
    cls.name: cls
    for cls in (TruncateFile, FlipBytes, RemoveFile, Unreadable, Sigkill, FillDisk, SetMetadata)
}


def injector_class(name: str, allowed: Sequence[str] = ()) -> type[Injector]:
    """The injector class ``name`` stands for: a generic one by its name, or a
    ``module:Class`` of the project's, checked against ``allowed`` (empty allows
    anything) before its module is imported. Raises KeyError for an unknown
    name, BindingError for a refused or missing class, ValueError for a class
    that is not an Injector."""
    if name in INJECTORS:
        return INJECTORS[name]
    if ":" in name:
        cls = resolve_allowed(name, allowed, "fault injector")
        if isinstance(cls, type) and issubclass(cls, Injector):
            return cls
        raise ValueError(f"'{name}' is not an Injector class")
    raise KeyError(f"'{name}' (known: {', '.join(sorted(INJECTORS))})")


def make_injector(
    name: str, params: dict[str, Any], seed: int, allowed: Sequence[str] = ()
) -> Injector:
    """An injector ready for ``ctx.fault`` (see ``injector_class`` for ``name``)."""
    return injector_class(name, allowed)(params, seed)


def wait_for(predicate: Any, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


__all__ = [
    "INJECTORS",
    "InjectionFailed",
    "Injector",
    "injector_class",
    "make_injector",
    "wait_for",
]
