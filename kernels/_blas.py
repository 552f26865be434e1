"""Give numba SciPy's BLAS without importing all of ``scipy.linalg`` first.

numba's compiled ``np.dot`` calls the BLAS that ``scipy.linalg.cython_blas``
exports. The first compilation or cache load in a process runs numba's
``ensure_blas``: ``import scipy.linalg.cython_blas``, which executes the whole
``scipy.linalg`` package (0.15-0.2 s: its array-API layer, decompositions,
sparse helpers) to reach one extension module. Every fresh interpreter of the
core pays it before its first step: a training child, a resumed run, a service.

:func:`load_cython_blas` loads that extension module alone, under its own
name, so numba's import finds it in ``sys.modules``. ``scipy.linalg`` itself is
imported later as always (by whoever needs it), and is then given its
``cython_blas`` attribute, as a normal import of the submodule would have set.
Anything unexpected (no SciPy, another layout, ``scipy.linalg`` already
imported) leaves the import to numba, as before.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

NAME = "scipy.linalg.cython_blas"


class _AttachOnImport(importlib.abc.MetaPathFinder):
    """When ``scipy.linalg`` is imported, set its ``cython_blas`` attribute to the module
    loaded early (an import of a submodule sets it on its package; ours could not).

    It stays in ``sys.meta_path`` and goes quiet once the package has run: removing a
    finder while another thread walks that list would make that thread skip the next."""

    def __init__(self, blas: ModuleType) -> None:
        self.blas: ModuleType | None = blas

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "scipy.linalg" or self.blas is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, finder = spec.loader, self

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                module.__loader__ = loader  # the package's own loader, as if not wrapped
                if module.__spec__ is not None:
                    module.__spec__.loader = loader
                if finder.blas is not None:
                    module.cython_blas = finder.blas  # type: ignore[attr-defined]
                loader.exec_module(module)
                finder.blas = None  # imported: nothing more to attach

            def __getattr__(self, attr: str) -> Any:  # get_data, get_resource_reader, ...
                return getattr(loader, attr)

        spec.loader = _Loader()
        return spec


def load_cython_blas() -> bool:
    """Load ``scipy.linalg.cython_blas`` without its package; True if this did it."""
    if NAME in sys.modules or "scipy.linalg" in sys.modules:
        return False
    try:
        import scipy

        folder = Path(scipy.__file__).parent / "linalg"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"cython_blas{suffix}"
            if path.is_file():
                break
        else:
            return False
        spec = importlib.util.spec_from_file_location(NAME, path)
        if spec is None or spec.loader is None:
            return False
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[NAME]
            raise
    except Exception:  # noqa: BLE001 - an optimisation only: numba imports it itself
        return False
    sys.meta_path.insert(0, _AttachOnImport(module))
    return True
