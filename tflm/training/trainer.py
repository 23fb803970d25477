"""The one trainer: ``train(config, workdir)`` for every objective.

An objective is an entry of the registry ``tflm.models.tasks`` (task model class,
pipeline adapter, hooks); nothing here knows which one it trains. ``train``:

1. checks ``workdir`` (a run with another config there is an error; a finished run
   returns its summary), makes the strategy, writes ``config.json``;
2. prepares corpus, tokenizer and token caches (``prepare.py``);
3. builds model and optimizer under ``strategy.scope()`` with the dtype policy of
   ``config.train.precision``, compiles with the task's loss and weighted metrics;
4. restores the backup if the run was interrupted (``backup.py``: exact to the step) and
   starts the (seed, step) data stream at that step;
5. evaluates once at step 0, then ``Model.fit`` with validation every
   ``config.train.eval_every`` steps, backups and checkpoints every
   ``config.train.checkpoint_every`` steps, TensorBoard logs in ``<workdir>/logs``, and
   the objective's own callbacks (e.g. the causal LM's text samples and unigram
   baseline);
6. writes ``<workdir>/model`` (a model directory) and ``<workdir>/summary.json``.

Run directory: ``config.json``, ``checkpoints/`` (``backup/`` for resume and
``ckpt-<step>.weights.h5``), ``logs/``, ``model/``, ``summary.json``. Under
MultiWorkerMirroredStrategy only the chief writes there; other workers write to a
temporary directory, deleted when ``train`` returns or fails (and to their own backup
directory, kept for resuming).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

import keras
import ml_collections
from absl import logging

from tflm import config as config_lib
from tflm.data.pipelines import distributed_dataset
from tflm.errors import ConfigError, TrainingError
from tflm.model_dir import build_model, initial_backbone, save_model_dir
from tflm.models.tasks import get_objective
from tflm.training import multi_worker
from tflm.training.backup import ExactBackupAndRestore
from tflm.training.callbacks import (
    KeepBest,
    NanGuard,
    PeriodicCheckpoints,
    StopAtStep,
    TrainContext,
)
from tflm.training.mfu import peak_flops
from tflm.training.monitor import TrainingMonitor, write_model_graph
from tflm.training.optim import make_optimizer
from tflm.training.prepare import prepare, resolve_config
from tflm.training.strategy import (
    is_chief,
    make_strategy,
    resolve_jit_compile,
    resolve_precision,
)
from tflm.training.training_model import TrainingModel

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
INITIAL_EVAL_FILE = "initial_evaluation.json"
# A difference here changes the run's result.
RUN_SECTIONS = ("model", "data", "train")
RUN_KEYS = tuple(config_lib.TOP_LEVEL)


def _write_json(path: str, values: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _check_train_config(t) -> None:
    for key in ("checkpoint_every", "eval_every"):
        if t[key] % t.grad_accum_steps:
            raise ConfigError(
                f"config.train.{key} ({t[key]}) must be a multiple of "
                f"config.train.grad_accum_steps ({t.grad_accum_steps}): backups and "
                "evaluations fall between optimizer updates otherwise."
            )


def _check_workdir(config, workdir: str) -> bool:
    """True if ``workdir`` holds a run of the same config; raises if of another one."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return False
    try:
        old = config_lib.config_to_dict(config_lib.read_config(path))
    except ConfigError as e:
        raise TrainingError(f"--workdir {workdir} holds an unreadable {CONFIG_FILE} ({e}); "
                            "use a new --workdir.") from e
    new = config_lib.config_to_dict(config)
    diffs = [
        f"{section}.{key} ({old[section].get(key)!r} there, {new[section].get(key)!r} now)"
        for section in RUN_SECTIONS
        for key in sorted(set(old[section]) | set(new[section]))
        if old[section].get(key) != new[section].get(key)
    ] + [f"{key} ({old.get(key)!r} there, {new.get(key)!r} now)"
         for key in RUN_KEYS if old.get(key) != new.get(key)]
    if diffs:
        raise TrainingError(
            f"--workdir {workdir} holds a run with a different config: {'; '.join(diffs)}. "
            f"Use a new --workdir, or resume that run with its own config ({path})."
        )
    return True


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` (resuming it if interrupted); returns the summary.

    Returns:
        The summary written to ``<workdir>/summary.json``: ``final_step``,
        ``train_<log>`` (the last step's logs: ``train_loss``, ...), ``validation_<metric>``
        (``validation_loss`` and each of the task's metrics, e.g. ``_perplexity``,
        ``_accuracy``), their ``initial_validation_`` (step 0) values, the objective's
        callbacks' fields (the causal LM's ``unigram_validation_perplexity``),
        ``tokens_per_second``, ``examples_per_second``, ``mfu``, ``wall_seconds``,
        ``parameters``, ``precision``, ``strategy``, ``replicas``, ...

    Raises:
        ConfigError: invalid config.
        TrainingError: ``workdir`` holds another config's run; the loss became NaN/inf.
        DataError, TokenizerError: corpus or tokenizer problems.
    """
    config = resolve_config(config_lib.validate(config))
    _check_train_config(config.train)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    same_run = _check_workdir(config, workdir)
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    if same_run and os.path.isfile(summary_path):
        logging.info("%s already holds a finished run; returning its summary.", workdir)
        with open(summary_path, encoding="utf-8") as f:
            return json.load(f)
    strategy = make_strategy(config.train)  # first TF op (MultiWorkerMirrored needs it)
    chief = is_chief(strategy)
    if chief:  # renamed into place: other workers check the same file (shared workdir)
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, CONFIG_FILE)
        config_lib.save_config(config, f"{config_path}.tmp")
        os.replace(f"{config_path}.tmp", config_path)
    data = prepare(config)
    precision = resolve_precision(config.train, strategy)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    out = workdir if chief else tempfile.mkdtemp(prefix="tflm-worker-")
    try:
        summary = _train(config, workdir, out, strategy, data, precision)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:  # its copies of the chief's outputs (saves are collective)
            shutil.rmtree(out, ignore_errors=True)
    if chief:
        _write_json(summary_path, summary)
    return summary


def _datasets(config, data, strategy, start_step):
    """(distributed training stream from ``start_step``, validation batches)."""
    d, t = config.data, config.train
    pipeline = get_objective(t.objective).resolve("pipeline")
    common = dict(caches=data.caches, tokenizer=data.tokenizer, config=config,
                  batch_size=t.batch_size, seed=d.seed)
    train_ds = distributed_dataset(strategy, lambda ctx: pipeline(
        **common, split="train", training=True, start_step=start_step, input_context=ctx))
    eval_ds = pipeline(**common, split="validation", training=False)
    if t.eval_steps > 0:  # 0 = the whole validation split (a fine-tuning dev file)
        eval_ds = eval_ds.take(t.eval_steps)
    return train_ds, eval_ds


def _validation_epochs(steps: int, per_epoch: int, eval_every: int) -> list[int]:
    """1-based epochs after which ``fit`` validates: every ``eval_every`` steps and last."""
    epochs = -(-steps // per_epoch)
    return [e for e in range(1, epochs + 1)
            if min(e * per_epoch, steps) % eval_every == 0 or e == epochs]


def _callbacks(config, per_epoch, out, task, backup, monitor, extra, keep_best) -> list:
    """The callbacks of ``fit``, in order: the NaN guard must come first, ``keep_best``
    after the objective's (which may add validation scores to the logs)."""
    t = config.train
    checkpoint_dir = os.path.join(out, "checkpoints")
    callbacks = [NanGuard(per_epoch, checkpoint_dir)]
    if t.steps % per_epoch:
        callbacks.append(StopAtStep(per_epoch, t.steps))
    return callbacks + [
        backup,
        PeriodicCheckpoints(per_epoch, task, checkpoint_dir, t.checkpoint_every,
                            t.keep_checkpoints),
        monitor,
        # Its write_graph finds no graph on TF 2.21's tf.function: write_model_graph.
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        *extra,
    ] + ([keep_best] if keep_best else [])


def compile_training_model(config, strategy) -> tuple[keras.Model, keras.Model]:
    """(task model, compiled ``TrainingModel``) of ``config``, as ``train`` fits them.

    Call under ``strategy.scope()`` with the run's dtype policy set
    (``resolve_precision``); ``benchmarks/train_throughput.py`` times exactly this.
    """
    task = build_model(config, backbone=initial_backbone(config))
    model = multi_worker.apply_workarounds(
        TrainingModel(task, fused_chunk=config.train.fused_head_chunk), strategy)
    model.compile(optimizer=make_optimizer(config.train, task), loss=task.default_loss(),
                  weighted_metrics=task.default_metrics(),
                  jit_compile=resolve_jit_compile(config.train, strategy))
    return task, model


def _train(config, workdir, out, strategy, data, precision) -> dict:
    t = config.train
    started = time.time()
    keras.utils.set_random_seed(t.seed)
    per_epoch = math.gcd(t.eval_every, t.checkpoint_every)  # every backup ends an epoch
    with strategy.scope():
        task, model = compile_training_model(config, strategy)
        backup = ExactBackupAndRestore(
            multi_worker.backup_dir_for_worker(
                os.path.join(workdir, "checkpoints", "backup"), strategy),
            save_freq=t.checkpoint_every, grad_accum_steps=t.grad_accum_steps)
        start_step = backup.restore(model)
    if start_step:
        logging.info("Resuming %s from its backup at step %d.", workdir, start_step)
    train_ds, eval_ds = _datasets(config, data, strategy, start_step)
    input_spec = eval_ds.element_spec[0]
    eval_ds = multi_worker.shard_eval_dataset(eval_ds, strategy)
    initial_path = os.path.join(workdir, INITIAL_EVAL_FILE)
    initial = None
    if start_step == 0:
        initial = model.evaluate(eval_ds, verbose=0, return_dict=True)
        if out == workdir:
            _write_json(initial_path, initial)
    elif os.path.isfile(initial_path):
        with open(initial_path, encoding="utf-8") as f:
            initial = json.load(f)
    log_dir = os.path.join(out, "logs")
    context = TrainContext(config=config, tokenizer=data.tokenizer, caches=data.caches,
                           eval_dataset=eval_ds, log_dir=log_dir, steps_per_epoch=per_epoch,
                           fresh_start=start_step == 0)
    hook = get_objective(t.objective).resolve("callbacks")
    extra = list(hook(task, context)) if hook else []
    peak, device = peak_flops(strategy, precision)
    monitor = TrainingMonitor(
        per_epoch, log_dir, t.log_every, t.batch_size * config.data.seq_len, t.batch_size,
        task.flops_per_token(config.data), peak,
        initial_validation=initial if start_step == 0 else None)
    keep_best = (KeepBest(per_epoch, task, t.keep_best, os.path.join(out, "checkpoints"))
                 if t.keep_best else None)
    callbacks = _callbacks(config, per_epoch, out, task, backup, monitor, extra, keep_best)
    history = {}
    if start_step < t.steps:
        write_model_graph(os.path.join(log_dir, "train"), task, input_spec)
        history = model.fit(
            train_ds, epochs=-(-t.steps // per_epoch), initial_epoch=start_step // per_epoch,
            steps_per_epoch=per_epoch, shuffle=False, validation_data=eval_ds,
            validation_freq=_validation_epochs(t.steps, per_epoch, t.eval_every),
            callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2,
        ).history
    final = {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_")}
    if keep_best and keep_best.restore():  # the model directory gets the best weights
        final = keep_best.best_logs
    if not final:
        final = model.evaluate(eval_ds, verbose=0, return_dict=True)
    save_model_dir(os.path.join(out, "model"), task, data.tokenizer, config)
    summary = {
        "final_step": int(model.optimizer.iterations.numpy()) * t.grad_accum_steps,
        "steps": t.steps,
        "resumed_from_step": start_step,
        "objective": t.objective,
        **{f"train_{k}": v[-1] for k, v in history.items() if not k.startswith("val_")},
        **{f"validation_{k}": v for k, v in final.items()},
        **{f"initial_validation_{k}": v for k, v in (initial or {}).items()},
        **{k: v for callback in extra + [keep_best]
           if hasattr(callback, "summary_fields")
           for k, v in callback.summary_fields().items()},
        **monitor.throughput(),
        "device": device,
        "wall_seconds": time.time() - started,
        "parameters": task.count_params(),
        "precision": precision,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "model_dir": os.path.join(workdir, "model"),
    }
    summary.setdefault("train_loss", None)
    summary = {k: float(v) if hasattr(v, "dtype") else v for k, v in summary.items()}
    logging.info("Training summary: %s", json.dumps(summary, sort_keys=True))
    return summary
