"""Deterministic training with checkpoints and exact resume.

``train(cfg, out_dir)`` trains a tiny LM (gpt2 or llama family) on a shipped
text dataset, or the MLP classifier on the digits set, and writes into
``out_dir``: ``train_config.json``, ``provenance.json``, ``metrics.jsonl``,
``ckpt-NNNNNN/`` checkpoints with a ``latest`` pointer, and ``result.json``.
Before step 1 the run's datasets pass data governance (``authorize_data`` asks
``kernels.data.governance.authorize_training``).

Determinism: the only randomness is one seeded ``numpy.random.Generator``
(PCG64) whose state is saved in every checkpoint together with the data
cursor, so a resumed run draws exactly what the uninterrupted run would have.

Data order (LM): the training tokens are cut into windows of ``n_ctx + 1``
tokens; each epoch visits the windows in the order ``shuffle_order`` gives for
a seed drawn from the generator; each step also draws a phase offset
(0..n_ctx-1) that shifts all its windows, so every alignment is seen. A step
takes ``batch_size * grad_accum`` windows, split into ``grad_accum``
micro-batches, so (k, b) and (1, k*b) see the same tokens. The classifier
visits its training examples the same way (without the phase offset).

Modules: ``config`` (TrainConfig, TrainResult, file names, errors, pre-flight),
``data`` (generator, data order and cursor, windows, datasets and token cache),
``tasks`` (LM and classifier tasks, accumulation, learning rate, optimizer,
``build_task``), ``state`` (metrics, checkpoints and resume, ``--init``,
provenance, resource usage), ``loop`` (``train`` and its per-step pieces), ``stop``
(the kill switch: SIGTERM/SIGINT stop a run at a step boundary, ``EXIT_STOPPED``).

This package's namespace is the trainer's one patch surface. Every function is
bound here, and the trainer's code calls its own functions only through it
(``_t.shuffle_order(...)`` with ``import kernels.train as _t``), never by a bare
or imported name. So ``setattr(kernels.train, "shuffle_order", f)`` (a mutant
``kernels.train:shuffle_order``, a test's monkeypatch) changes what every caller
runs, exactly as when the trainer was one module. Classes, errors and constants
are imported from their module directly.
"""

from kernels.train.config import (
    CONFIG_FILE,
    DIGITS_NAME,
    EVAL_CHUNK,
    METRICS_FILE,
    MIN_TOKENS_PER_PARAM,
    PROVENANCE_FILE,
    PURPOSES,
    RESOURCES_FILE,
    RESULT_FILE,
    PreflightError,
    TrainConfig,
    TrainError,
    TrainResult,
    count_params,
    preflight,
    tokens_per_step,
)
from kernels.train.data import (
    DataCursor,
    LMData,
    cached_token_arrays,
    count_windows,
    dataset_records,
    draw_order_seed,
    draw_phase,
    gather_windows,
    len_vocab,
    load_digits_splits,
    load_lm_data,
    new_rng,
    next_indices,
    restore_rng,
    rng_state,
    shuffle_order,
    token_cache_dir,
)
from kernels.train.loop import (
    LoopState,
    ProgressFn,
    authorize_data,
    fresh_state,
    limit_threads,
    resumed_state,
    train,
    train_step,
)
from kernels.train.state import (
    append_metrics,
    build_stamps,
    check_init_val_loss,
    eval_spec,
    init_weights,
    load_resume_state,
    optimizer_arrays,
    provenance,
    read_init_checkpoint,
    read_metrics,
    record_usage,
    resource_usage,
    restore_optimizer,
    trainer_state,
    truncate_metrics,
    write_checkpoint,
)
from kernels.train.stop import (
    EXIT_STOPPED,
    STOP_SIGNALS,
    StopFlag,
    stop_handler,
    stop_on_signals,
    stop_requested,
)
from kernels.train.tasks import (
    ClassifierTask,
    LMTask,
    accumulate_gradients,
    apply_update,
    build_optimizer,
    build_task,
    classifier_loss,
    evaluate_lm,
    learning_rate,
    resolve_model_config,
)

__all__ = [
    # config
    "CONFIG_FILE",
    "DIGITS_NAME",
    "EVAL_CHUNK",
    "METRICS_FILE",
    "MIN_TOKENS_PER_PARAM",
    "PROVENANCE_FILE",
    "PURPOSES",
    "RESOURCES_FILE",
    "RESULT_FILE",
    "PreflightError",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "count_params",
    "preflight",
    "tokens_per_step",
    # data
    "DataCursor",
    "LMData",
    "cached_token_arrays",
    "count_windows",
    "dataset_records",
    "draw_order_seed",
    "draw_phase",
    "gather_windows",
    "len_vocab",
    "load_digits_splits",
    "load_lm_data",
    "new_rng",
    "next_indices",
    "restore_rng",
    "rng_state",
    "shuffle_order",
    "token_cache_dir",
    # tasks
    "ClassifierTask",
    "LMTask",
    "accumulate_gradients",
    "apply_update",
    "build_optimizer",
    "build_task",
    "classifier_loss",
    "evaluate_lm",
    "learning_rate",
    "resolve_model_config",
    # state
    "append_metrics",
    "build_stamps",
    "check_init_val_loss",
    "eval_spec",
    "init_weights",
    "load_resume_state",
    "optimizer_arrays",
    "provenance",
    "read_init_checkpoint",
    "read_metrics",
    "record_usage",
    "resource_usage",
    "restore_optimizer",
    "trainer_state",
    "truncate_metrics",
    "write_checkpoint",
    # stop
    "EXIT_STOPPED",
    "STOP_SIGNALS",
    "StopFlag",
    "stop_handler",
    "stop_on_signals",
    "stop_requested",
    # loop
    "LoopState",
    "ProgressFn",
    "authorize_data",
    "fresh_state",
    "limit_threads",
    "resumed_state",
    "train",
    "train_step",
]
