"""What a weights file says about itself, and whether to believe it.

The identity stamps of each family (slug, hf model_type, hf class) and the
family its tensor names show; the code identity stamped into every file
(``code_version``, ``source_digest``); the parameter shapes the stamped config
builds and whether a file's tensors cover them; and the metadata completeness
score. Re-exported by
``kernels.checkpoint``, which is where callers import these names from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kernels.checkpoint_format import CheckpointError, sha256_bytes

# family slug -> (hf model_type, hf architecture class)
HF_IDENTITY: dict[str, tuple[str, str]] = {
    "gpt2": ("gpt2", "GPT2LMHeadModel"),
    "llama": ("llama", "LlamaForCausalLM"),
    "mlp": ("mlp", "MLPClassifier"),
}

# Stamps of a weights file, the weight each carries in the completeness score
# and what the score calls it.
SCORED_STAMPS: dict[str, tuple[int, str]] = {
    "architecture": (15, "architecture family slug"),
    "hf_model_type": (5, "hf model_type"),
    "hf_architecture": (5, "hf architecture class"),
    "config": (15, "full model config"),
    "tokenizer": (15, "tokenizer embedded"),
    "tokenizer_sha256": (5, "tokenizer digest"),
    "datasets": (10, "dataset digests and licenses"),
    "code_version": (10, "code version"),
    "train_config": (5, "hyperparameters and seed"),
    "step": (5, "training step"),
    "val_loss": (5, "validation loss"),
    "purpose": (5, "purpose (ship|ablation)"),
}


# Scored stamps that do not apply to a family (a classifier has no tokenizer).
NOT_APPLICABLE: dict[str, tuple[str, ...]] = {"mlp": ("tokenizer", "tokenizer_sha256")}


# ---------------------------------------------------------------- stamps


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the tree holding ``kernels/`` (``+dirty`` if modified), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "kernels"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = "+dirty" if status.stdout.strip() else ""
        return commit.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over the ``kernels/`` Python sources, a code identity that needs no git."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def identity_stamps(family: str) -> dict[str, str]:
    """The three architecture stamps of a family: slug, hf model_type, hf class."""
    model_type, hf_class = HF_IDENTITY[family]
    return {"architecture": family, "hf_model_type": model_type, "hf_architecture": hf_class}


def family_of_stamps(stamps: Mapping[str, str]) -> str | None:
    """The family a checkpoint's stamps claim (slug first, then hf class, then model_type)."""
    slug = stamps.get("architecture")
    if slug:
        return slug
    for family, (model_type, hf_class) in HF_IDENTITY.items():
        if stamps.get("hf_architecture") == hf_class or stamps.get("hf_model_type") == model_type:
            return family
    return None


def detect_tensor_family(names: Iterable[str]) -> str | None:
    """The family the tensor names show (``registry.detect_family``), ``mlp``, or None."""
    try:
        return tensor_family_or_reason(names)[0]
    except CheckpointError:
        return None


def tensor_family_or_reason(names: Iterable[str]) -> tuple[str, str]:
    """(family, "") from tensor names; raise CheckpointError with the registry's reason."""
    from kernels.models.registry import detect_family

    names = list(names)
    try:
        return detect_family(names), ""
    except ValueError as exc:
        if names and all(is_mlp_tensor(n) for n in names):
            return "mlp", ""
        raise CheckpointError(str(exc)) from None


def is_mlp_tensor(name: str) -> bool:
    return name.startswith(("layers.", "mlp.", "fc", "linear"))


def check_architecture_stamp(stamps: Mapping[str, str], names: Iterable[str], where: str) -> str:
    """Return the family; raise if the stamps contradict the tensor names or each other."""
    claims = {
        key: stamps[key]
        for key in ("architecture", "hf_model_type", "hf_architecture")
        if stamps.get(key)
    }
    try:
        detected, _ = tensor_family_or_reason(names)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc} (stamped {claims or 'nothing'})") from None
    expected = identity_stamps(detected)
    for key, value in claims.items():
        if value != expected[key]:
            also = f" ({key} {expected[key]!r})" if key != "architecture" else ""
            raise CheckpointError(
                f"{where}: stamped {key}={value!r} contradicts the tensor names, which show "
                f"architecture {detected!r}{also}; fix the stamp with `core stamp "
                f"--{key.replace('_', '-')} {expected[key]}` or use a matching checkpoint"
            )
    return detected


def check_coverage(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    dtype: Any = None,
) -> None:
    """Raise unless ``tensors`` has exactly the expected names with the expected shapes
    (and, given ``dtype``, that dtype). One line: the file, the tensor, what to change."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing and extra:  # most often one tensor under another name
        raise CheckpointError(
            f"{where}: tensor {missing[0]} is missing and {extra[0]} is not in the model"
            f"{_more(missing, extra)}; rename {extra[0]} to {missing[0]} if it is the same "
            "tensor, or use a checkpoint of this model"
        )
    if missing:
        raise CheckpointError(
            f"{where}: tensors do not cover the model: missing {', '.join(missing[:3])}"
            f"{_more(missing)}; use a checkpoint that has every tensor of this model"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(
                f"{where}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                f"the model expects {tuple(shape)}; use a checkpoint of this model config"
            )
    if extra:
        raise CheckpointError(
            f"{where}: unexpected tensors not in the model: {', '.join(extra[:3])}"
            f"{_more(extra)}; remove them or use the model config they belong to"
        )
    if dtype is not None:
        want = np.dtype(dtype)
        for name in expected:
            if tensors[name].dtype != want:
                raise CheckpointError(
                    f"{where}: tensor {name} has dtype {tensors[name].dtype}, the model's "
                    f"weights are {want}; convert the checkpoint to {want} (a silent cast "
                    "would change the weights)"
                )


def _more(*lists: list[str]) -> str:
    """`` (+N more)`` for what a one-line message leaves out (it names 3 of a list, 1 of two)."""
    shown = 3 if len(lists) == 1 else 1
    hidden = sum(max(0, len(names) - shown) for names in lists)
    return f" (+{hidden} more)" if hidden else ""


def shapes_from_stamps(
    stamps: Mapping[str, str], family: str, where: Path
) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes of the model the stamped config describes (None if unstamped)."""
    text = stamps.get("config")
    if not text:
        return None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where}: stamped config is not JSON ({exc})") from None
    return model_shapes(family, cfg, where)


def model_shapes(family: str, cfg: Mapping[str, Any], where: Path) -> dict[str, tuple[int, ...]]:
    """Build the model from a config dict and return its parameter shapes."""
    try:
        if family == "mlp":
            from kernels.config import MLPConfig
            from kernels.models.mlp import MLPClassifier

            fields = dict(cfg)
            fields["hidden"] = tuple(fields.get("hidden", ()))
            return dict(MLPClassifier(MLPConfig(**fields)).param_shapes())
        from kernels.config import ModelConfig
        from kernels.models.registry import build_model

        fields = {k: v for k, v in cfg.items() if k != "family"}
        return dict(build_model(ModelConfig(family=family, **fields)).param_shapes())
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{where}: stamped config does not build a {family} model ({exc})"
        ) from None


# ---------------------------------------------------------------- completeness


def completeness(
    stamps: Mapping[str, str], tensor_family: str | None = None
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Metadata completeness score 0-100 and a breakdown per scored stamp.

    With ``tensor_family`` (what the tensor names show), if any identity stamp
    contradicts it, none of the three identity stamps earns points.
    """
    expected = identity_stamps(tensor_family) if tensor_family in HF_IDENTITY else {}
    wrong = {k for k, v in expected.items() if stamps.get(k) and stamps[k] != v}
    breakdown: dict[str, dict[str, Any]] = {}
    total = 0
    for key, (weight, what) in SCORED_STAMPS.items():
        present = stamp_present(stamps, key)
        item: dict[str, Any] = {"what": what, "max": weight, "present": present}
        if not present and key in NOT_APPLICABLE.get(family_of_stamps(stamps) or "", ()):
            present, item["not_applicable"] = True, True
        if not present and key == "code_version" and stamp_present(stamps, "source_sha256"):
            present, item["from"] = True, "source_sha256"
        if key in wrong:
            item["contradicts_tensors"] = expected[key]
        if wrong and key in expected:  # identity is all or nothing
            present = False
        got = weight if present else 0
        total += got
        item["points"] = got
        breakdown[key] = item
    return total, breakdown


def stamp_present(stamps: Mapping[str, str], key: str) -> bool:
    """A stamp counts if it is set, not a placeholder, and (for JSON stamps) parses."""
    value = stamps.get(key, "")
    if value in ("", "unknown", "null", "None", "{}", "[]"):
        return False
    if key in ("config", "tokenizer", "datasets", "train_config"):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return False
    if key == "tokenizer_sha256" and stamps.get("tokenizer"):
        return sha256_bytes(stamps["tokenizer"].encode("utf-8")) == value
    return True
