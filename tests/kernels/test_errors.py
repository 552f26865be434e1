"""Every exception the core defines derives from one root, ``KernelsError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import kernels
from kernels.errors import KernelsError


def kernels_modules() -> list:
    names = [kernels.__name__]
    names += [
        info.name for info in pkgutil.walk_packages(kernels.__path__, prefix=kernels.__name__ + ".")
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def exception_classes() -> dict[str, type]:
    """``{module.Class: class}`` of every exception class defined in a kernels module."""
    found = {}
    for module in kernels_modules():
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_kernels_exception_derives_from_kernels_error():
    found = exception_classes()
    stray = sorted(name for name, cls in found.items() if not issubclass(cls, KernelsError))
    assert stray == [], f"exceptions not derived from KernelsError: {stray}"


def test_the_walk_sees_the_core_errors_with_their_builtin_bases():
    found = {cls.__name__: cls for cls in exception_classes().values()}
    expected = {
        "KernelsError", "TrainError", "PreflightError", "CheckpointError", "RestoreError",
        "TokenizerError", "GovernanceError", "PolicyError", "DatasetError", "ManifestError",
        "DatasetDigestError", "DatasetMissingError",
    }  # fmt: skip
    assert expected <= set(found), sorted(expected - set(found))
    for name in ("TokenizerError", "GovernanceError", "PolicyError", "DatasetError"):
        assert issubclass(found[name], ValueError), name
    assert issubclass(found["PreflightError"], found["TrainError"])
