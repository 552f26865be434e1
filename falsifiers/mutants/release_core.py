"""Mutants of the core's release path (for contracts/release.yaml).

Mutants that wrap the real function capture it here, when this module is
imported: the worker imports a mutant before patching it in, so these names
hold the unpatched originals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernels.backup import snapshot as _snapshot
from kernels.infer import generate as _generate
from kernels.models.gpt2 import GPT2
from kernels.train import build_stamps as _build_stamps

_gpt2_loss_and_grads = GPT2.loss_and_grads


def stamps_without_tokenizer(*args: Any, **kwargs: Any) -> Any:
    """build_stamps that forgets to embed the tokenizer and the model config."""
    stamps = dict(_build_stamps(*args, **kwargs))
    for key in ("tokenizer", "tokenizer_sha256", "config"):
        stamps.pop(key, None)
    return stamps


def generate_with_fallback_tokenizer(
    path: Any,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """A server that silently falls back to the shipped tokenizer when the checkpoint
    carries none: the silent-fallback bug of seeds/001, on the serving side."""
    from kernels import checkpoint as ckpt_io
    from kernels.data.pipeline import shipped_tokenizer
    from kernels.infer import generate
    from kernels.serving import model_from_checkpoint

    loaded = ckpt_io.load_checkpoint(path)
    model, _ = model_from_checkpoint(loaded)
    tok = shipped_tokenizer(verify=False)
    ids = generate(model, loaded.params, tok.encode(prompt), max_new_tokens)
    return tok.decode(ids).decode("utf-8", "replace")


def regresses_by_relative_margin(current_loss: float, candidate_loss: float, margin: float) -> bool:
    """The margin read as a fraction of the current loss, not nats: at a loss of 6 nats a
    0.15 margin lets a 0.9-nat regression through (kernels.release:candidate_regresses)."""
    return not candidate_loss <= current_loss * (1.0 + margin)


def restore_verifying_listed_members(archive: Path, dest: Path) -> dict[str, Path]:
    """A restore that walks the archive's members and checks each one its manifest lists,
    path and sha256 and size, but unpacks a member the manifest does not list unchecked
    (``manifest.get(name)`` is None: nothing to compare), so a file added to the archive
    behind its manifest is restored (kernels.backup:_restore)."""
    import json
    import tarfile

    from kernels.backup import MANIFEST, RestoreError, _digest, _read

    if dest.exists():
        raise RestoreError(f"{dest} exists; restore into a new directory")
    payload = {}
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        if MANIFEST not in members:
            raise RestoreError(f"{archive}: no {MANIFEST}; not a snapshot")
        manifest = json.loads(_read(tar, members[MANIFEST]))
        for path, member in members.items():
            if path == MANIFEST:
                continue
            if path.startswith("/") or ".." in Path(path).parts:
                raise RestoreError(f"{archive}: unsafe path {path}")
            data = _read(tar, member)
            entry = manifest.get(path)
            if entry is not None and (
                _digest(data) != entry["sha256"] or len(data) != entry["size"]
            ):
                raise RestoreError(f"{archive}: {path} does not match its sha256")
            payload[path] = data
    for path, data in payload.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return {name: dest / name for name in {p.split("/", 1)[0] for p in payload}}


def snapshot_dropping_a_file(sources: dict[str, Path], archive: Path) -> Any:
    """A snapshot that silently leaves out the last file of the first folder."""
    import tempfile

    first = sorted(sources)[0]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / first
        shutil_copytree(sources[first], copy)
        files = sorted(p for p in copy.rglob("*") if p.is_file())
        files[-1].unlink()
        return _snapshot({**sources, first: copy}, archive)


def shutil_copytree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def generate_without_cache(
    model: Any,
    params: dict,
    prompt_ids: Any,
    max_new: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    use_cache: bool = True,
) -> Any:
    """Generation that ignores the KV cache: a latency regression."""
    return _generate(model, params, prompt_ids, max_new, temperature, top_k, seed, use_cache=False)


def loss_and_grads_twice(self: Any, params: dict, tokens: Any) -> Any:
    """A training step that computes its gradients twice (a debug check left on)."""
    _gpt2_loss_and_grads(self, params, tokens)
    return _gpt2_loss_and_grads(self, params, tokens)


def stamps_hf_identity_lm_only(*args: Any, **kwargs: Any) -> Any:
    """build_stamps that stamps the Hugging Face identity (hf_model_type, hf_architecture)
    only for the language-model families ("the classifier has no HF class"): an mlp
    checkpoint carries its slug alone."""
    stamps = dict(_build_stamps(*args, **kwargs))
    if stamps.get("architecture") == "mlp":
        stamps.pop("hf_model_type", None)
        stamps.pop("hf_architecture", None)
    return stamps


def canary_rollout_rollback_to_previous(
    deploy: Any, candidate: Any, margin: float, split: str = "val"
) -> Any:
    """Deploy first, let the canary decide, roll back on a rejection: but the rollback
    restores the ``previous`` pointer kept from the last successful rollout, which is
    one model too far back once a candidate has been accepted (kernels.release:
    canary_rollout). Every decision is right; the wrong model is served."""
    from kernels.release import accept_candidate, serve, served_checkpoint

    deploy = Path(deploy)
    current = served_checkpoint(deploy)
    serve(deploy, candidate)
    decision = accept_candidate(current, candidate, margin, split)
    previous = deploy / "previous"
    if decision.accepted:
        previous.write_text(f"{current}\n")
    else:
        serve(deploy, previous.read_text().strip() if previous.exists() else current)
    return decision
