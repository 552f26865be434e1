"""Release check of the sharded weights layout (seeds/000: "model.safetensors.index.json +
*.safetensors"): a trained checkpoint saved in shards is the same model as its single
file, its index is honest, and a shard set that disagrees with its index is refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from acceptance.release_core import train_tiny
from harness.context import CheckContext


def _same_tensors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """The names whose tensors differ (name set, dtype, shape or bytes)."""
    names = sorted(set(a) | set(b))
    return [
        n
        for n in names
        if n not in a
        or n not in b
        or a[n].dtype != b[n].dtype
        or a[n].shape != b[n].shape
        or a[n].tobytes() != b[n].tobytes()
    ]


def shard_layout_problems(ckpt_dir: Path) -> list[str]:
    """What is wrong with the file names of a sharded checkpoint: the shard files on disk
    are exactly the files the index maps tensors to, each named ``model-i-of-N`` with N
    the number of shards and i running 1..N."""
    from kernels.checkpoint import INDEX_FILE, SHARD_NAME

    index = json.loads((ckpt_dir / INDEX_FILE).read_text())
    mapped = set(index["weight_map"].values())
    on_disk = {p.name for p in ckpt_dir.glob("model*.safetensors")}
    problems = [f"{n}: on disk, not in the index" for n in sorted(on_disk - mapped)]
    problems += [f"{n}: in the index, not on disk" for n in sorted(mapped - on_disk)]
    numbers = []
    for name in sorted(mapped):
        m = SHARD_NAME.fullmatch(name)
        if not m:
            problems.append(f"{name}: not named model-NNNNN-of-NNNNN.safetensors")
            continue
        numbers.append(int(m.group(1)))
        if int(m.group(2)) != len(mapped):
            problems.append(f"{name}: says -of-{int(m.group(2))}, the index has {len(mapped)}")
    if sorted(numbers) != list(range(1, len(mapped) + 1)):
        problems.append(f"shard numbers {sorted(numbers)} are not 1..{len(mapped)}")
    return problems


def shard_fill(ckpt_dir: Path) -> dict[str, tuple[int, int]]:
    """{shard file: (tensors, bytes of tensor data)} of every ``model-*.safetensors`` file
    on disk, read from the files themselves (not from what the index says of them)."""
    from kernels.checkpoint import read_safetensors

    fill = {}
    for path in sorted(ckpt_dir.glob("model-*.safetensors")):
        tensors, _ = read_safetensors(path)
        fill[path.name] = (len(tensors), sum(int(a.nbytes) for a in tensors.values()))
    return fill


def fill_problems(fill: dict[str, tuple[int, int]], limit: int) -> list[str]:
    """The shards of ``fill`` holding more than one tensor and more than ``limit`` bytes
    of them (a tensor over the limit alone in its shard is allowed, as Hugging Face does)."""
    return [
        f"{name}: {n} tensors, {size} bytes > limit {limit}"
        for name, (n, size) in sorted(fill.items())
        if n > 1 and size > limit
    ]


def first_shard_bytes(fill: dict[str, tuple[int, int]]) -> int | None:
    """The tensor bytes of shard 1 (``model-00001-of-*``), None unless exactly one is there."""
    firsts = [size for name, (_, size) in fill.items() if name.startswith("model-00001-of-")]
    return firsts[0] if len(firsts) == 1 else None


def exact_limit(sizes: dict[str, int]) -> int:
    """A limit at which the first shard, of two tensors or more, ends exactly at a
    tensor's end: the shortest sorted prefix of at least two tensors whose bytes reach
    the largest tensor's (so no tensor exceeds the limit, and a planner that closes a
    shard one tensor early shows it in shard 1)."""
    prefix = 0
    for count, name in enumerate(sorted(sizes), 1):
        prefix += sizes[name]
        if count >= 2 and prefix >= max(sizes.values()):
            break
    return prefix


def _same_outputs(family: str, single: Any, sharded: Any, rng: Any) -> tuple[bool, bool]:
    """(identical logits, identical predictions) of the models built from two loaded
    checkpoints: an LM on random token windows (its prediction is its greedy generation,
    compared by the caller), the classifier on the digits val split (predicted classes)."""
    from kernels.serving import model_from_checkpoint

    model_a, cfg = model_from_checkpoint(single)
    model_b, _ = model_from_checkpoint(sharded)
    f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in single.params.items()}
    g32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sharded.params.items()}
    if family != "mlp":
        tokens = rng.integers(0, cfg.vocab_size, size=(2, cfg.n_ctx)).astype(np.int64)
        same_logits = np.array_equal(model_a.forward(f32, tokens), model_b.forward(g32, tokens))
        return bool(same_logits), True
    from kernels.data.digits import digits_splits

    x = digits_splits(verify=True)["val"][0]
    same_logits = np.array_equal(model_a.forward(f32, x), model_b.forward(g32, x))
    same_classes = np.array_equal(model_a.predict(f32, x), model_b.predict(g32, x))
    return bool(same_logits), bool(same_classes)


def _redigest(ckpt_dir: Path, *files: str) -> None:
    """Record the current sha256 of ``files`` in digests.json (dropping the missing), so
    that a damaged copy passes the digest check and only the index can refuse it."""
    from kernels.checkpoint import DIGESTS_FILE, sha256_file

    record = ckpt_dir / DIGESTS_FILE
    digests = json.loads(record.read_text())
    for f in files:
        if (ckpt_dir / f).is_file():
            digests[f] = sha256_file(ckpt_dir / f)
        else:
            digests.pop(f, None)
    record.write_text(json.dumps(digests, indent=1, sort_keys=True))


def _refusal_cases(sharded: Path, scratch: Path) -> list[dict[str, Any]]:
    """Damaged copies of a sharded checkpoint, each with the file and tensor a refusal
    must name: a shard missing, a shard holding a stale copy of a tensor the index maps
    to another shard, a shard lacking one of its tensors, a shard whose bytes changed."""
    from kernels.checkpoint import (
        INDEX_FILE,
        encode_safetensors,
        read_safetensors,
    )

    index = json.loads((sharded / INDEX_FILE).read_text())
    weight_map: dict[str, str] = index["weight_map"]
    files = sorted(set(weight_map.values()))
    first, last = files[0], files[-1]
    cases = []

    def copy(name: str) -> Path:
        dest = scratch / f"refuse-{name}"
        shutil.copytree(sharded, dest)
        return dest

    d = copy("missing-shard")
    (d / files[1]).unlink()
    _redigest(d, files[1])
    cases.append({"case": "missing_shard", "dir": d, "names": [files[1]]})

    d = copy("stale-extra")
    tensors, meta = read_safetensors(d / first)
    moved = min(t for t, f in weight_map.items() if f == last)
    later, _ = read_safetensors(d / last)
    tensors[moved] = (later[moved] * 0.5).astype(later[moved].dtype)  # an older value
    (d / first).write_bytes(encode_safetensors(tensors, meta))
    _redigest(d, first)
    cases.append({"case": "stale_extra_tensor", "dir": d, "names": [first, moved]})

    d = copy("absent-tensor")
    tensors, meta = read_safetensors(d / last)
    dropped = max(tensors)
    del tensors[dropped]
    (d / last).write_bytes(encode_safetensors(tensors, meta))
    _redigest(d, last)
    cases.append({"case": "absent_tensor", "dir": d, "names": [last, dropped]})

    d = copy("changed-bytes")
    data = bytearray((d / files[1]).read_bytes())
    data[-1] ^= 0xFF  # the last byte of tensor data: the header stays well-formed
    (d / files[1]).write_bytes(bytes(data))
    cases.append({"case": "changed_bytes", "dir": d, "names": [files[1]]})
    return cases


def sharded_checkpoint(ctx: CheckContext) -> dict[str, Any]:
    """For each family (``params.families``) a trained checkpoint is re-saved sharded at
    ``ceil(total / params.target_shards)`` bytes per shard and at a limit its first shard
    ends at exactly (``exact_limit``); each loads to the same tensors and stamps, its file
    names and total_size are consistent with its index, and, read from the files on disk,
    no shard of several tensors holds more than the limit and at the exact limit shard 1
    holds exactly the limit. At the first limit it gives the same logits, eval loss and
    predictions (an LM's greedy generation, the classifier's classes) as the single file.
    Damaged copies (``_refusal_cases``) must be refused with a message naming the shard
    and the tensor."""
    from kernels.checkpoint import INDEX_FILE, CheckpointError, load_checkpoint, save_checkpoint
    from kernels.serving import evaluate_checkpoint, generate_from_checkpoint

    families = list(ctx.params.get("families", ["gpt2"]))
    target = int(ctx.params.get("target_shards", 4))
    prompt = str(ctx.params.get("prompt", "def "))
    new_tokens = int(ctx.params.get("new_tokens", 16))
    rng = ctx.numpy_rng()
    shard_counts, name_problems, total_size_errors, load_errors = [], [], 0, []
    tensor_mismatches, stamp_mismatches, logits_same, eval_same, pred_same = 0, 0, 0, 0, 0
    over_limit, exact_full, fills = [], 0, {}
    first_sharded: Path | None = None
    for family in families:
        run = train_tiny(ctx.scratch / f"run-{family}", family=family, seed=ctx.seed % 1000)
        single = load_checkpoint(run.checkpoint)
        sizes = {n: int(a.nbytes) for n, a in single.params.items()}
        total = sum(sizes.values())
        limits = {"target": math.ceil(total / target), "exact": exact_limit(sizes)}
        for label, limit in limits.items():
            out = save_checkpoint(
                ctx.scratch / f"sharded-{family}-{label}",
                single.step,
                single.params,
                single.stamps,
                max_shard_bytes=limit,
            )
            index = json.loads((out / INDEX_FILE).read_text())
            n_shards = len(set(index["weight_map"].values()))
            if label == "target":
                shard_counts.append(n_shards)
            name_problems += [f"{family}/{label}: {p}" for p in shard_layout_problems(out)]
            total_size_errors += index["metadata"].get("total_size") != total
            fill = shard_fill(out)
            fills[f"{family}/{label}"] = {"limit": limit, "shards": fill}
            over_limit += [f"{family}/{label}: {p}" for p in fill_problems(fill, limit)]
            if label == "exact":
                exact_full += first_shard_bytes(fill) == limit
            try:
                sharded = load_checkpoint(out)
            except CheckpointError as exc:
                load_errors.append(f"{family}/{label}: {exc}"[:300])
                continue
            tensor_mismatches += len(_same_tensors(single.params, sharded.params))
            stamp_mismatches += sharded.stamps != single.stamps
            if label != "target":
                continue
            if first_sharded is None and n_shards >= 3:  # what the refusal cases damage
                first_sharded = out
            same_logits, same_classes = _same_outputs(family, single, sharded, rng)
            logits_same += same_logits
            ev_a, ev_b = evaluate_checkpoint(run.checkpoint), evaluate_checkpoint(out)
            eval_same += ev_a["loss"] == ev_b["loss"] and ev_b.get("matches_stamp") is True
            if family == "mlp":
                pred_same += same_classes
            else:
                text_a = generate_from_checkpoint(run.checkpoint, prompt, max_new_tokens=new_tokens)
                text_b = generate_from_checkpoint(out, prompt, max_new_tokens=new_tokens)
                pred_same += text_a == text_b and len(text_b) > len(prompt)
    ctx.attach_json("shard-fill.json", fills)
    refused, unnamed, accepted, messages = 0, [], [], {}
    if first_sharded is not None:
        for case in _refusal_cases(first_sharded, ctx.scratch):
            try:
                load_checkpoint(case["dir"])
                accepted.append(case["case"])
                continue
            except CheckpointError as exc:
                message = str(exc)
            refused += 1
            messages[case["case"]] = message[:300]
            if "\n" in message or not all(n in message for n in case["names"]):
                unnamed.append(case["case"])
    ctx.attach_json("refusals.json", messages)
    return {
        "families": len(families),
        "min_shards": min(shard_counts, default=0),
        "shard_counts": shard_counts,
        "name_problems": len(name_problems),
        "name_problem_list": name_problems[:10],
        "total_size_errors": total_size_errors,
        "load_errors": len(load_errors),
        "load_error_list": load_errors[:5],
        "tensor_mismatches": tensor_mismatches,
        "stamp_mismatches": stamp_mismatches,
        "shards_over_limit": len(over_limit),
        "shards_over_limit_list": over_limit[:10],
        "exact_first_shard_full": exact_full,
        "same_logits": logits_same,
        "same_eval_loss": eval_same,
        "same_predictions": pred_same,
        "refusal_cases": 4 if first_sharded is not None else 0,
        "refused": refused,
        "bad_accepted": len(accepted),
        "bad_accepted_cases": accepted,
        "refusals_not_naming_file_and_tensor": len(unnamed),
        "refusals_unnamed_cases": unnamed,
    }
