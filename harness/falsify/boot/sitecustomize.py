"""Applied at interpreter start in a process ``patch_environment`` prepared: the
mutant patches of ``$HARNESS_PATCHES``.

A patch of a module this process has not imported is applied when the module is
first imported, right after its code ran: a process that never imports it (a
service's trainer, when the mutant is in the HTTP layer) does not pay for the
import. A patch that cannot be applied ends the process (exit 70) with the reason:
the system under test never runs unpatched when a mutant was asked for.
"""

import json
import os
import sys


def _fail(exc: BaseException) -> None:
    sys.stderr.write(f"harness: cannot apply mutant patches ($HARNESS_PATCHES): {exc}\n")
    sys.stderr.flush()
    os._exit(70)


def _apply_now(patches: dict, allowed: list) -> None:
    try:
        from harness.falsify.patching import apply_patches

        apply_patches(patches, allowed)
    except Exception as exc:  # noqa: BLE001 - any failure: refuse to run unpatched
        _fail(exc)


class _Deferred:
    """A meta-path finder: when a module some patches target is imported, its loader
    is wrapped so that the patches are applied once the module's code has run."""

    def __init__(self, pending: dict, allowed: list) -> None:
        self.pending = pending  # module name -> {target: replacement}
        self.allowed = allowed

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name not in self.pending:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # the real spec, from the other finders
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        # not taken off the list yet: runpy asks for the spec of the module it runs as
        # __main__ without importing it; the module's own import comes after
        spec.loader = _Loader(spec.loader, name, self)
        return spec

    def applied(self, name: str) -> dict:
        patches = self.pending.pop(name, {})
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        return patches


class _Loader:
    def __init__(self, loader, name: str, finder: _Deferred) -> None:  # noqa: ANN001
        self._loader = loader
        self._name = name
        self._finder = finder

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        patches = self._finder.applied(self._name)
        if patches:
            _apply_now(patches, self._finder.allowed)

    def __getattr__(self, name):  # noqa: ANN001, ANN201 - get_source, is_package, ...
        return getattr(self._loader, name)


def _install() -> None:
    raw = os.environ.get("HARNESS_PATCHES")
    if not raw:
        return
    try:
        spec = json.loads(raw)
        root = spec.get("root")
        if root and root not in sys.path:
            sys.path.insert(0, root)
        allowed = list(spec.get("allowed", ()))
        pending: dict = {}
        for target, replacement in dict(spec["patches"]).items():
            module = str(target).partition(":")[0]
            pending.setdefault(module, {})[target] = replacement
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    for module in [m for m in pending if m in sys.modules]:
        _apply_now(pending.pop(module), allowed)
    if pending:
        sys.meta_path.insert(0, _Deferred(pending, allowed))


_install()
