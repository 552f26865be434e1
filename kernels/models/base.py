"""What the transformer families share: parameter checks, init, the KV cache."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from ..ops._check import FLOATS


@dataclass
class KVCache:
    """Keys and values of past positions, per layer: ``k[L, B, H, n_ctx, hd]``.

    ``pos`` is the number of positions already written (the next position).
    """

    k: np.ndarray
    v: np.ndarray
    pos: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, dtype=np.float32) -> KVCache:
        if batch < 1:
            raise ValueError(f"batch must be >= 1 (got {batch})")
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.n_ctx, cfg.head_dim)
        return cls(np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype), 0)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def reset(self) -> None:
        self.pos = 0


class Workspace:
    """Named activation buffers, reused while the shapes stay the same.

    Reusing memory between training steps avoids allocating (and page-faulting)
    tens of MB of activations per step. Nothing handed back to a caller lives
    here: logits, losses and gradients are always fresh arrays.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple, dtype) -> np.ndarray:
        a = self._bufs.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.empty(shape, dtype=dtype)
            self._bufs[name] = a
        return a

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._bufs.values())


class TransformerBase:
    """Checks and helpers common to :class:`GPT2` and :class:`Llama`.

    A model holds no parameters, only its config and (per thread) a
    :class:`Workspace`; calls from different threads do not share buffers.
    """

    family = ""

    def __init__(self, cfg: ModelConfig):
        if cfg.family != self.family:
            raise ValueError(
                f"{type(self).__name__} needs a {self.family!r} config (got family {cfg.family!r})"
            )
        self.config = cfg
        self._local = threading.local()

    def workspace(self) -> Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = Workspace()
        return ws

    def param_shapes(self) -> dict[str, tuple]:
        raise NotImplementedError

    def n_params(self) -> int:
        return int(sum(np.prod(s) for s in self.param_shapes().values()))

    # --- validation -----------------------------------------------------------------
    def check_params(self, params: dict) -> np.dtype:
        """Raise ValueError unless params covers the model with the right shapes.

        Returns the common float dtype. Extra entries are ignored.
        """
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict of arrays (got {type(params).__name__})")
        shapes = self.param_shapes()
        missing = [n for n in shapes if n not in params]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(
                f"params is missing {len(missing)} tensor(s) of the "
                f"{self.family} model: {', '.join(missing[:5])}{more}"
            )
        dtype = None
        for name, shape in shapes.items():
            a = params[name]
            if not isinstance(a, np.ndarray):
                raise ValueError(f"params[{name!r}] must be a numpy array (got {type(a).__name__})")
            if a.shape != shape:
                raise ValueError(f"params[{name!r}] must have shape {shape} (got {a.shape})")
            if a.dtype not in FLOATS:
                raise ValueError(f"params[{name!r}] must be float32 or float64 (got {a.dtype})")
            if dtype is None:
                dtype = a.dtype
            elif a.dtype != dtype:
                raise ValueError(f"params[{name!r}] is {a.dtype} but other tensors are {dtype}")
            if not a.flags.c_contiguous:
                raise ValueError(f"params[{name!r}] must be C-contiguous")
        return dtype

    def check_tokens(self, tokens, extra: int = 0) -> np.ndarray:
        """tokens must be int[B, T + extra] with 1 <= T <= n_ctx and ids < vocab."""
        cfg = self.config
        if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "iu":
            raise ValueError(
                f"tokens must be an integer numpy array "
                f"(got {getattr(tokens, 'dtype', type(tokens).__name__)})"
            )
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be 2-D [batch, time] (got shape {tokens.shape})")
        t_len = tokens.shape[1] - extra
        if tokens.shape[0] < 1 or t_len < 1:
            raise ValueError(
                f"tokens must have >= 1 row and >= {extra + 1} columns (got shape {tokens.shape})"
            )
        if t_len > cfg.n_ctx:
            raise ValueError(f"sequence length {t_len} exceeds the context n_ctx={cfg.n_ctx}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {cfg.vocab_size}) (got min {lo}, max {hi})"
            )
        return np.ascontiguousarray(tokens, dtype=np.int32)

    def split_batch(self, tokens):
        """int[B, T+1] -> (inputs int32[B, T], targets int32[B*T])."""
        tokens = self.check_tokens(tokens, extra=1)
        inp = np.ascontiguousarray(tokens[:, :-1])
        tgt = np.ascontiguousarray(tokens[:, 1:]).reshape(-1)
        return inp, tgt

    def new_cache(self, batch: int, dtype=np.float32) -> KVCache:
        return KVCache.empty(self.config, batch, dtype)

    def _check_cache(self, cache: KVCache) -> None:
        """A cache of this model's shape (the kernels index it by layer, head and position
        unchecked): ``k`` and ``v`` of [n_layer, B, n_head, n_ctx, head_dim]."""
        if not isinstance(cache, KVCache):
            raise ValueError(f"cache must be a KVCache from new_cache (got {type(cache).__name__})")
        c = self.config
        want = (c.n_layer, cache.k.shape[1] if cache.k.ndim == 5 else -1, c.n_head, c.n_ctx,
                c.head_dim)  # fmt: skip
        if cache.k.shape != want or cache.v.shape != want:
            raise ValueError(
                f"cache k/v must be [n_layer, B, n_head, n_ctx, head_dim] = {want} for this "
                f"model (got {cache.k.shape} and {cache.v.shape}); use model.new_cache"
            )

    def check_step(self, params, token, cache: KVCache):
        dtype = self.check_params(params)
        self._check_cache(cache)
        token = np.asarray(token)
        if token.dtype.kind not in "iu" or token.ndim != 1 or token.shape[0] != cache.batch:
            raise ValueError(
                f"token must be int[{cache.batch}] (got {token.dtype} shape {token.shape})"
            )
        if cache.pos >= cache.capacity:
            raise ValueError(f"KV cache is full: n_ctx={cache.capacity} positions used")
        if token.min() < 0 or token.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        if cache.k.dtype != dtype:
            raise ValueError(f"cache dtype {cache.k.dtype} differs from params dtype {dtype}")
        return np.ascontiguousarray(token, dtype=np.int32), dtype

    def check_greedy(self, params, out, t0: int, cache: KVCache) -> None:
        """What ``decode_greedy`` needs: ``out`` int32[B, total] C-contiguous holding valid
        token ids in its first ``t0`` columns, 1 <= t0 < total <= n_ctx, and an empty
        cache of batch B and the params' dtype (the kernel reads ids unchecked)."""
        dtype = self.check_params(params)
        self._check_cache(cache)
        if not (isinstance(out, np.ndarray) and out.dtype == np.int32 and out.ndim == 2
                and out.flags.c_contiguous and out.shape[0] == cache.batch):  # fmt: skip
            raise ValueError(
                f"out must be a C-contiguous int32[{cache.batch}, total] array (got "
                f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')})"
            )
        if not 1 <= t0 < out.shape[1] <= cache.capacity:
            raise ValueError(
                f"need 1 <= t0 < total <= n_ctx={cache.capacity} (got t0={t0}, "
                f"total={out.shape[1]})"
            )
        if cache.pos != 0:
            raise ValueError(f"decode_greedy needs an empty cache (pos {cache.pos})")
        if cache.k.dtype != dtype:
            raise ValueError(f"cache dtype {cache.k.dtype} differs from params dtype {dtype}")
        prompt = out[:, :t0]
        if prompt.min() < 0 or prompt.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")

    # --- init -------------------------------------------------------------------------
    def _init(self, seed: int, kind) -> dict[str, np.ndarray]:
        """Draw every tensor in param_shapes order from one PCG64 stream.

        ``kind(name)`` returns "zeros", "ones" or a standard deviation.
        """
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int (got {seed!r})")
        rng = np.random.default_rng(int(seed))
        out = {}
        for name, shape in self.param_shapes().items():
            k = kind(name)
            if k == "zeros":
                out[name] = np.zeros(shape, dtype=np.float32)
            elif k == "ones":
                out[name] = np.ones(shape, dtype=np.float32)
            else:
                a = rng.standard_normal(shape, dtype=np.float32)
                a *= np.float32(k)
                out[name] = a
        return out
