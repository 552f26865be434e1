"""Keep numba's on-disk cache honest across files.

numba (``cache=True``) re-validates a cached function against the source
file that defines it, but not against the files of the njit functions it
calls: a fused kernel in ``models/gpt2.py`` would keep running an old copy
of ``ops/activations.py`` after that file changed. ``refresh()`` hashes the
sources of every module with njit kernels in ``kernels/ops`` and
``kernels/models``; when the hash differs from the one recorded next to the
cache, it deletes those packages' cached ``.nbi``/``.nbc`` files first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent
_PACKAGES = ("ops", "models")
_STAMP = "kernels-src.sha256"


def source_digest() -> str:
    h = hashlib.sha256()
    for pkg in _PACKAGES:
        for path in sorted((_ROOT / pkg).glob("*.py")):
            h.update(f"{pkg}/{path.name}\0".encode())
            h.update(path.read_bytes())
    h.update((_ROOT / "config.py").read_bytes())
    return h.hexdigest()


def refresh() -> bool:
    """Drop stale numba cache files; return True if any were removed."""
    try:
        digest = source_digest()
        stamp = _ROOT / "__pycache__" / _STAMP
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return False
        removed = False
        for cache, prefix in [(_ROOT / pkg / "__pycache__", "") for pkg in _PACKAGES] + [
            (_ROOT / "__pycache__", "optim.")  # config.py (JIT flags) is hashed too
        ]:
            if cache.is_dir():
                for f in cache.iterdir():
                    if f.suffix in (".nbi", ".nbc") and f.name.startswith(prefix):
                        f.unlink(missing_ok=True)
                        removed = True
        stamp.parent.mkdir(exist_ok=True)
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest + "\n")
        os.replace(tmp, stamp)
        return removed
    except OSError:  # read-only install: numba then uses its own cache dir
        return False
