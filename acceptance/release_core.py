"""Release checks that train and serve the real core: metadata completeness,
the offline canary (no regression), backup and restore, and performance."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.context import CheckContext

IDENTITY_STAMPS = ("architecture", "hf_model_type", "hf_architecture")


def train_tiny(out: Path, data_fault: str = "", **overrides: Any) -> Any:
    """A real training run of a tiny model (seconds on one thread); with ``data_fault``
    (``falsifiers.data_faults``) it trains on a corrupted copy of its training split."""
    from falsifiers.data_faults import trained_on
    from kernels.train import TrainConfig, train

    fields: dict[str, Any] = {
        "family": "gpt2",
        "steps": 8,
        "eval_every": 4,
        "ckpt_every": 8,
        "eval_windows": 16,
        "batch_size": 8,
        "threads": 1,
    }
    fields.update(overrides)
    cfg = TrainConfig(**fields)
    if not data_fault:
        return train(cfg, out)
    with trained_on(data_fault, seed=cfg.seed):
        return train(cfg, out)


def metadata_release(ctx: CheckContext) -> dict[str, Any]:
    """For every family (``params.families``): a trained checkpoint's inspect score and
    breakdown, whether it carries its full identity (architecture slug, hf model_type and
    hf class, each earning its points), and whether the model file alone (copied away
    from its run, datasets and tokenizer files) generates text (a classifier: evaluates)."""
    from kernels.checkpoint import inspect_checkpoint, resolve_model_file
    from kernels.serving import evaluate_checkpoint, generate_from_checkpoint

    families = list(ctx.params.get("families", [ctx.params.get("family", "gpt2")]))
    scores, identity, generated, usable, missing, errors = {}, 0, 0, 0, {}, {}
    for family in families:
        run = train_tiny(ctx.scratch / f"run-{family}", family=family, seed=ctx.seed % 1000)
        alone = ctx.scratch / f"alone-{family}" / "model.safetensors"
        alone.parent.mkdir()
        shutil.copyfile(resolve_model_file(run.checkpoint), alone)
        report = inspect_checkpoint(alone)
        ctx.attach_json(f"inspect-{family}.json", report)
        breakdown = report.get("breakdown", {})
        scores[family] = report["completeness"]
        missing[family] = [k for k, v in breakdown.items() if not v.get("points")]
        identity += report["stamps"].get("architecture") == family and all(
            breakdown.get(k, {}).get("points") for k in IDENTITY_STAMPS
        )
        try:
            if family == "mlp":
                evaluate_checkpoint(alone)
            else:
                text = generate_from_checkpoint(
                    alone, ctx.params.get("prompt", "def "), max_new_tokens=16
                )
                generated += len(text) > 0
            usable += 1
        except Exception as exc:  # observed: the invariant says it must work
            errors[family] = f"{type(exc).__name__}: {exc}"[:300]
    return {
        "families": len(families),
        "scores": scores,
        "min_score": min(scores.values()),
        "identity_complete": identity,
        "generated_from_embedded_tokenizer": generated,
        "usable_alone": usable,
        "missing_stamps": missing,
        "errors": errors,
    }


def tokenizer_required(ctx: CheckContext) -> dict[str, Any]:
    """Generation from a checkpoint whose embedded tokenizer was removed fails loudly,
    naming the tokenizer, rather than falling back to another tokenizer. Under a fault
    (e.g. flip_bytes on the model file), loading must fail loudly too."""
    from kernels.checkpoint import patch_stamps, resolve_model_file
    from kernels.serving import generate_from_checkpoint

    run = train_tiny(ctx.scratch / "run", seed=ctx.seed % 1000)
    model_file = resolve_model_file(run.checkpoint)
    stripped = ctx.scratch / "stripped.safetensors"
    patch_stamps(model_file, {"tokenizer": None, "tokenizer_sha256": None}, out=stripped)
    target = stripped
    if ctx.fault is not None:
        target = ctx.scratch / "faulted.safetensors"
        shutil.copyfile(model_file, target)
        ctx.fault.inject(path=target)
    try:
        generate_from_checkpoint(target, "def ", max_new_tokens=4)
        return {"refused": False, "names_the_problem": False, "error": ""}
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        expected_words = (
            ctx.params.get("must_mention", ["tokenizer"])
            if ctx.fault is None
            else [str(target.name)]
        )
        return {
            "refused": True,
            "error": message,
            "names_the_problem": all(w.lower() in message.lower() for w in expected_words),
        }


def no_regression(ctx: CheckContext) -> dict[str, Any]:
    """The offline canary: candidates within ``margin`` of the current checkpoint are
    accepted; candidates trained on shuffled labels or corrupted text are rejected; on
    real checkpoint pairs the gate accepts at margin d + delta and refuses at d - delta
    (d: the measured gap); a moderate regression (the current run stopped early, worse
    by a few margins) is refused."""
    from kernels.release import accept_candidate

    margin = float(ctx.params["margin"])
    mlp = {
        "family": "mlp",
        "steps": int(ctx.params.get("mlp_steps", 150)),
        "eval_every": 50,
        "ckpt_every": 150,
    }
    lm = {"steps": int(ctx.params.get("lm_steps", 24)), "eval_every": 8, "ckpt_every": 24}
    s = ctx.scratch
    current_mlp = train_tiny(s / "mlp-current", seed=1, **mlp).checkpoint
    good_mlp = train_tiny(s / "mlp-good", seed=2, **mlp).checkpoint
    bad_mlp = train_tiny(s / "mlp-shuffled", seed=2, data_fault="shuffle_labels", **mlp).checkpoint
    current_lm = train_tiny(s / "lm-current", seed=1, **lm).checkpoint
    good_lm = train_tiny(s / "lm-good", seed=2, **lm).checkpoint
    bad_lm = train_tiny(s / "lm-corrupted", seed=2, data_fault="corrupt_text", **lm).checkpoint
    decisions = {
        "mlp_good": accept_candidate(current_mlp, good_mlp, margin),
        "mlp_shuffled_labels": accept_candidate(current_mlp, bad_mlp, margin),
        "lm_good": accept_candidate(current_lm, good_lm, margin),
        "lm_corrupted_text": accept_candidate(current_lm, bad_lm, margin),
    }
    # the gate's boundary, on real checkpoint pairs: each pair, oriented so the candidate
    # is the worse one by d nats, is accepted at margin d + delta and refused at d - delta
    delta = float(ctx.params.get("boundary_delta", 0.01))
    at_margin, below_margin, pairs = 0, 0, []
    for a, b in ((current_mlp, good_mlp), (current_lm, good_lm), (current_lm, bad_lm)):
        first = accept_candidate(a, b, margin)
        if first.candidate_loss < first.current_loss:
            a, b = b, a
        d = abs(first.candidate_loss - first.current_loss)
        at_margin += accept_candidate(a, b, d + delta).accepted
        if d > 2 * delta:
            pairs.append(round(d, 4))
            below_margin += not accept_candidate(a, b, d - delta).accepted
    # a moderate regression: the current model's own run stopped early, worse by a few
    # margins, not by the collapse of a broken candidate
    early_lm = train_tiny(
        s / "lm-early",
        seed=1,
        **{
            **lm,
            "steps": int(ctx.params.get("early_steps", 8)),
            "ckpt_every": int(ctx.params.get("early_steps", 8)),
        },
    ).checkpoint
    moderate = accept_candidate(current_lm, early_lm, margin)
    decisions["lm_moderate_regression"] = moderate
    served = rollouts(
        s / "deploy",
        margin,
        {
            "mlp": (current_mlp, [good_mlp, bad_mlp]),
            "lm": (current_lm, [good_lm, bad_lm, early_lm]),
        },
    )
    ctx.attach_json("decisions.json", {k: d.to_dict() for k, d in decisions.items()})
    return {
        "boundary_pairs": 3,
        "accepted_at_margin": at_margin,
        "boundary_gaps": pairs,
        "below_margin_tested": len(pairs),  # the pairs whose gap exceeds 2 * delta
        "accepted_below_margin": len(pairs) - below_margin,
        "moderate_regression_nats": moderate.candidate_loss - moderate.current_loss,
        "moderate_regression_refused": not moderate.accepted,
        "good_candidates_accepted": sum(decisions[k].accepted for k in ("mlp_good", "lm_good")),
        "broken_candidates_rejected": sum(
            not decisions[k].accepted for k in ("mlp_shuffled_labels", "lm_corrupted_text")
        ),
        **{f"{k}_loss": d.candidate_loss for k, d in decisions.items()},
        "mlp_current_loss": decisions["mlp_good"].current_loss,
        "lm_current_loss": decisions["lm_good"].current_loss,
        **served,
    }


def rollouts(
    deploy_root: Path, margin: float, plans: dict[str, tuple[Path, list[Path]]]
) -> dict[str, Any]:
    """Roll each family's candidates out in order through ``canary_rollout`` and observe
    what is served after each step, by the weights' digest and by evaluating it: an
    accepted candidate is served, a rejected one never is and the model served before it
    stays served (the rollback)."""
    from kernels.checkpoint import weights_digest
    from kernels.release import canary_rollout, serve, served_checkpoint
    from kernels.serving import evaluate_checkpoint

    steps, as_expected, kept, moved = [], 0, 0, 0
    for family, (first, candidates) in plans.items():
        deploy = deploy_root / family
        serve(deploy, first)
        expected = first
        for cand in candidates:
            decision = canary_rollout(deploy, cand, margin)
            expected = cand if decision.accepted else expected
            now = served_checkpoint(deploy)
            same = weights_digest(now) == weights_digest(expected) and (
                evaluate_checkpoint(now)["loss"] == evaluate_checkpoint(expected)["loss"]
            )
            as_expected += same
            kept += same and not decision.accepted
            moved += same and decision.accepted
            steps.append(
                {"family": family, "candidate": cand.name, "accepted": decision.accepted,
                 "served": str(now), "served_as_expected": same}
            )  # fmt: skip
    return {
        "rollout_steps": len(steps),
        "served_as_expected": as_expected,
        "rejected_and_previous_kept_serving": kept,
        "accepted_and_served": moved,
        "rollouts": steps,
    }


def _tampered_copy(archive: Path, out: Path) -> None:
    """A well-formed archive whose manifest is intact but one file's bytes changed."""
    import io
    import tarfile

    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        members = [m for m in src.getmembers() if m.isfile()]
        victim = members[-1].name
        for m in members:
            fh = src.extractfile(m)
            data = fh.read() if fh else b""
            if m.name == victim:
                data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def _copy_with_unlisted_member(archive: Path, out: Path) -> None:
    """A copy of the archive, every member intact, plus one file its manifest does not
    list (inside a restored folder, where it would be picked up)."""
    import io
    import tarfile

    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            fh = src.extractfile(m)
            dst.addfile(m, io.BytesIO(fh.read() if fh else b""))
        data = b"added behind the manifest\n"
        info = tarfile.TarInfo("checkpoint/UNLISTED.txt")
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))


def backup_restore(ctx: CheckContext) -> dict[str, Any]:
    """Snapshot a signed evidence bundle and a checkpoint, restore them into a new
    directory: the bundle verifies there and the checkpoint predicts identically; a
    snapshot whose contents were altered behind its manifest (a file's bytes changed, or
    a file added that the manifest does not list) is refused."""
    from acceptance.release_gates import probe_run
    from harness.signing import generate_keypair, load_public_key, load_signer
    from harness.verify import verify_run
    from kernels.backup import RestoreError, restore, snapshot
    from kernels.checkpoint import load_checkpoint
    from kernels.data.digits import digits_splits
    from kernels.infer import predict
    from kernels.serving import model_from_checkpoint

    priv, pub = generate_keypair(ctx.scratch / "keys" / "release.key")
    run_dir = probe_run(ctx.scratch, "bundle", signer=load_signer(priv))
    ckpt = train_tiny(
        ctx.scratch / "mlp", family="mlp", steps=60, eval_every=30, ckpt_every=60
    ).checkpoint
    archive = ctx.scratch / "backup" / "snapshot.tar.gz"
    snapshot({"evidence": run_dir, "checkpoint": ckpt}, archive)
    tampered = ctx.scratch / "backup" / "tampered.tar.gz"
    _tampered_copy(archive, tampered)
    try:
        restore(tampered, ctx.scratch / "restored-tampered")
        tamper_refused = False
    except RestoreError:
        tamper_refused = True
    unlisted = ctx.scratch / "backup" / "unlisted.tar.gz"
    _copy_with_unlisted_member(archive, unlisted)
    try:
        restore(unlisted, ctx.scratch / "restored-unlisted")
        unlisted_refused = False
    except RestoreError:
        unlisted_refused = True
    try:
        restored = restore(archive, ctx.scratch / "restored")
    except RestoreError as exc:
        return {
            "restored": False,
            "error": str(exc),
            "bundle_verifies": False,
            "same_predictions": False,
            "tamper_refused": tamper_refused,
            "unlisted_member_refused": unlisted_refused,
        }
    problems = verify_run(restored["evidence"], [load_public_key(pub)])
    X, _ = digits_splits()["test"]

    def predictions(path: Path) -> np.ndarray:
        loaded = load_checkpoint(path)
        model, _ = model_from_checkpoint(loaded)
        return predict(model, loaded.params, X)

    try:
        same = bool(np.array_equal(predictions(ckpt), predictions(restored["checkpoint"])))
        error = ""
    except Exception as exc:  # a restored checkpoint that does not load predicts nothing
        same, error = False, f"{type(exc).__name__}: {exc}"
    return {
        "restored": True,
        "error": error,
        "bundle_verifies": problems == [],
        "bundle_problems": problems[:3],
        "same_predictions": same,
        "tamper_refused": tamper_refused,
        "unlisted_member_refused": unlisted_refused,
    }


def _paired_ratio(fast: Any, slow: Any, repeats: int, inner: int = 3) -> tuple[float, float, float]:
    """Median over ``repeats`` of time(slow)/time(fast), the two timed back to back in each
    repeat so that load from other processes hits both alike; also both median times."""
    fast()
    slow()
    ratios, t_fast, t_slow = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fast()
        t1 = time.perf_counter()
        for _ in range(inner):
            slow()
        t2 = time.perf_counter()
        t_fast.append((t1 - t0) / inner)
        t_slow.append((t2 - t1) / inner)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(ratios), statistics.median(t_fast), statistics.median(t_slow)


def performance(ctx: CheckContext) -> dict[str, Any]:
    """Training throughput, and the p95 latency of KV-cached generation served to
    ``clients`` concurrent clients, each judged against a baseline measured in this same
    check (so the thresholds hold on any machine, busy or not): training steps of the
    numba engine vs the plain-NumPy step (kernels.baseline); served latency vs the same
    service recomputing the whole prefix for every token under the same load, and vs a
    single request alone (``serving_latency``)."""
    from kernels import baseline
    from kernels.config import tiny_config
    from kernels.models.registry import build_model
    from kernels.optim import AdamW
    from kernels.train import limit_threads

    limit_threads(1)
    repeats = int(ctx.params.get("repeats", 7))
    cfg = tiny_config("gpt2", int(ctx.params.get("vocab", 1024)))
    model = build_model(cfg)
    params = model.init_params(ctx.seed % 1000)
    rng = ctx.numpy_rng()
    batch = int(ctx.params.get("batch", 16))
    tokens = rng.integers(0, cfg.vocab_size, size=(batch, cfg.n_ctx + 1)).astype(np.int32)
    opt = AdamW(lr=1e-3)
    p_ours = {k: v.copy() for k, v in params.items()}
    p_np = {k: v.copy() for k, v in params.items()}
    np_opt = baseline.NumpyAdamW(lr=1e-3)

    def ours() -> None:
        _, grads = model.loss_and_grads(p_ours, tokens)
        opt.step(p_ours, grads)

    def plain() -> None:
        _, grads = baseline.np_gpt2_loss_and_grads(cfg, p_np, tokens)
        np_opt.step(p_np, grads)

    units = batch * cfg.n_ctx
    speedup, t_ours, t_numpy = _paired_ratio(ours, plain, repeats)
    ours_rate, numpy_rate = units / t_ours, units / t_numpy
    ctx.metric("train_tokens_per_s", ours_rate, engine="numba")
    ctx.metric("train_tokens_per_s", numpy_rate, engine="numpy")

    lat = serving_latency(ctx, model, params, rng)
    p95 = float(np.percentile(lat["cached"], 95))
    p95_base = float(np.percentile(lat["uncached"], 95))
    single = float(np.median(lat["single_cached"]))
    ctx.metric("p95_latency_s", p95, cache="on", clients=lat["clients"])
    ctx.metric("p95_latency_s", p95_base, cache="off", clients=lat["clients"])
    ctx.attach_json(
        "performance.json",
        {"train_tokens_per_s": {"numba": ours_rate, "numpy": numpy_rate}, "latency_s": lat},
    )
    return {
        "train_speedup_vs_numpy": speedup,
        "train_tokens_per_s": ours_rate,
        "numpy_tokens_per_s": numpy_rate,
        "clients": lat["clients"],
        "p95_latency_s": p95,
        "p95_latency_uncached_s": p95_base,
        "p95_latency_ratio": p95 / p95_base,
        "single_latency_s": single,
        "p95_latency_over_single": p95 / single,
        "requests": lat["submitted"],
        "requests_unanswered": lat["submitted"] - lat["answered"],
        "latency_elapsed_s": lat["elapsed_s"],
    }


def serving_latency(ctx: CheckContext, model: Any, params: dict, rng: Any) -> dict[str, Any]:
    """Request latencies (submit to result, seen by the client) of two
    ``kernels.serving.GenerationService``s over the same model, one KV-cached and one
    recomputing the prefix (the baseline), in ``rounds`` of two phases:

    - one client alone, alternating cached and uncached requests (``single_*``);
    - ``clients`` threads at once, each alternating cached and uncached requests in
      its own order (``cached``, ``uncached``): both series run under the same load,
      and a burst of load from another process lands on both, never on one block of
      them (measured in two blocks, a busy machine let the no-cache mutant pass).

    Bounded: ``rounds * (singles + clients * per_client)`` requests per service, and
    no new request after ``max_seconds``."""
    import threading

    from kernels.serving import GenerationService

    n_clients = int(ctx.params.get("clients", 4))
    rounds, singles = int(ctx.params.get("rounds", 4)), int(ctx.params.get("singles", 6))
    per_client, new = int(ctx.params.get("per_client", 6)), int(ctx.params.get("new_tokens", 24))
    workers = int(ctx.params.get("workers", 1))
    deadline = time.monotonic() + float(ctx.params.get("max_seconds", 120))
    vocab = model.config.vocab_size
    prompts = [rng.integers(0, vocab, size=8).astype(np.int32) for _ in range(16)]
    services = {
        True: GenerationService(model, params, workers=workers, use_cache=True),
        False: GenerationService(model, params, workers=workers, use_cache=False),
    }
    series: dict[str, list[float]] = {k: [] for k in ("single_cached", "single_uncached",
                                                       "cached", "uncached")}  # fmt: skip
    counts = {"submitted": 0, "answered": 0}
    lock = threading.Lock()

    def request(use_cache: bool, prompt: np.ndarray, key: str) -> None:
        t0 = time.perf_counter()
        with lock:
            counts["submitted"] += 1
        services[use_cache].submit(prompt, max_new_tokens=new).result(timeout=60)
        elapsed = time.perf_counter() - t0
        with lock:
            counts["answered"] += 1
            series[key].append(elapsed)

    def order(i: int) -> tuple[bool, bool]:
        return (True, False) if i % 2 == 0 else (False, True)

    def client(c: int, start: threading.Barrier) -> None:
        start.wait()
        for i in range(per_client):
            if time.monotonic() > deadline:
                return
            for use_cache in order(c + i):
                prompt = prompts[(c * per_client + i) % len(prompts)]
                request(use_cache, prompt, "cached" if use_cache else "uncached")

    t_start = time.perf_counter()
    try:
        for use_cache in (True, False):  # compile and warm both
            services[use_cache].submit(prompts[0], max_new_tokens=2).result(timeout=120)
        for r in range(rounds):
            for i in range(singles):
                if time.monotonic() > deadline:
                    break
                for use_cache in order(r + i):
                    key = "single_cached" if use_cache else "single_uncached"
                    request(use_cache, prompts[i % len(prompts)], key)
            barrier = threading.Barrier(n_clients)
            threads = [threading.Thread(target=client, args=(c, barrier)) for c in range(n_clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        for service in services.values():
            service.stop(timeout=60)
    return {
        "clients": n_clients,
        "workers": workers,
        "new_tokens": new,
        **counts,
        "elapsed_s": time.perf_counter() - t_start,
        **series,
    }


def describe(obs: dict[str, Any]) -> str:
    return json.dumps(obs, sort_keys=True, default=str)
