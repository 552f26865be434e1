"""Generation for ``POST /api/generate``: each checkpoint loaded and verified once, then kept.

Building a model from a checkpoint (read the weights, verify them against
``digests.json``, decode the tensors, parse the embedded tokenizer) costs more than
generating a few dozen tokens from a micro model, so ``ModelCache`` keeps the last few
loaded checkpoints. An entry is keyed by the identity of every file of the checkpoint
folder (name, inode, size, modification time): a checkpoint the service serves is never
rewritten in place (``checkpoints/ckpt-NNNNNN`` is renamed into place whole), and a file
that is replaced or modified anyway gives a new key, so it is loaded and verified again.
A checkpoint that fails to load is never cached: every request for it fails the same way.

``generate_text`` is what the route calls (looked up per request, so a contract can
mutate it): the cached model, the prompt served as ``kernels.serving`` serves it, and
generation with the KV cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_SIZE = 8  # checkpoints kept loaded (a micro model is ~200 KB, a tiny one a few MB)


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to generate: the model, its float32 weights, its tokenizer."""

    path: Path
    model: Any
    params: dict[str, Any]
    tokenizer: Any


def checkpoint_key(ckpt: Path) -> tuple[Any, ...]:
    """The identity of a checkpoint folder's files: a changed or replaced file changes it."""
    out = []
    for p in sorted(Path(ckpt).iterdir()):
        try:
            st = p.stat()
        except OSError:  # vanished while listed: a different key next time anyway
            continue
        out.append((p.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return (str(Path(ckpt).resolve()), *out)


def load_model(ckpt: Path) -> LoadedModel:
    """Load and verify a checkpoint for generation (``CheckpointError`` when it cannot:
    corrupted, a classifier, no embedded tokenizer)."""
    import numpy as np

    from kernels import checkpoint as ckpt_io
    from kernels.data.tokenizer import ByteBPE
    from kernels.serving import model_from_checkpoint

    loaded = ckpt_io.load_checkpoint(ckpt)  # verifies the weights against digests.json
    if loaded.family == "mlp":
        raise ckpt_io.CheckpointError(f"{loaded.path}: a classifier checkpoint cannot generate")
    if not loaded.tokenizer_json:
        raise ckpt_io.CheckpointError(f"{loaded.path}: no embedded tokenizer; cannot generate")
    model, _ = model_from_checkpoint(loaded)
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in loaded.params.items()}
    model.check_params(params)
    return LoadedModel(Path(ckpt), model, params, ByteBPE.from_json(loaded.tokenizer_json))


class ModelCache:
    """The last ``size`` loaded checkpoints, least recently used out first. Thread-safe:
    requests run on the server's worker threads; two first requests for one checkpoint
    may both load it (the second result is kept), never a half-loaded entry."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[Any, ...], LoadedModel] = OrderedDict()
        self.lock = threading.Lock()
        self.loads = 0  # how many times a checkpoint was loaded (a miss)

    def get(self, ckpt: Path) -> LoadedModel:
        key = checkpoint_key(ckpt)
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None:
                self.entries.move_to_end(key)
                return hit
        loaded = load_model(ckpt)
        with self.lock:
            self.loads += 1
            self.entries[key] = loaded
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return loaded


MODELS = ModelCache()


def generate_text(
    ckpt: Path,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Text generated from ``prompt`` by the checkpoint (cached) with the KV cache: the
    same text as ``kernels.serving.generate_from_checkpoint``."""
    import numpy as np

    from kernels.infer import generate
    from kernels.serving import prompt_ids

    m = MODELS.get(ckpt)
    n_ctx = m.model.config.n_ctx
    ids = prompt_ids(m.tokenizer, prompt, n_ctx)
    max_new = max(0, min(max_new_tokens, n_ctx - len(ids)))
    out = generate(m.model, m.params, ids, max_new, temperature=temperature, top_k=top_k,
                   seed=seed, use_cache=True)  # fmt: skip
    return str(m.tokenizer.decode(np.asarray(out)).decode("utf-8", errors="replace"))
