"""Training callbacks that count global steps: NaN guard, stop step, periodic checkpoints,
the best checkpoint by a validation metric.

Keras numbers batches from 0 in every epoch; the trainer makes every epoch
``steps_per_epoch`` steps long and starts a resumed ``fit`` at ``initial_epoch``, so the
global step after batch ``b`` of epoch ``e`` is ``e * steps_per_epoch + b + 1``
(:class:`StepCallback`). TensorBoard extras and text samples are in ``monitor.py``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re

import keras
from absl import logging

from tflm.errors import TrainingError

CHECKPOINT_PATTERN = "ckpt-{step:08d}.weights.h5"
_CHECKPOINT_RE = re.compile(r"ckpt-(\d+)\.weights\.h5$")


@dataclasses.dataclass
class TrainContext:
    """What an objective's ``callbacks`` hook gets from the trainer (``tflm.models.tasks``).

    Attributes:
        config: the run's validated config.
        tokenizer: the run's tokenizer.
        caches: split -> token cache of the run's corpus.
        eval_dataset: the validation batches ``fit`` evaluates on.
        log_dir: the TensorBoard directory (``<workdir>/logs``).
        steps_per_epoch: Keras epoch length in steps (for :class:`StepCallback`).
        fresh_start: True unless the run resumes from a backup (step-0 values are
            written only then).
    """

    config: object
    tokenizer: object
    caches: dict
    eval_dataset: object
    log_dir: str
    steps_per_epoch: int
    fresh_start: bool


class StepCallback(keras.callbacks.Callback):
    """Base class: ``self.step`` is the global step of the last finished batch.

    Subclasses override :meth:`on_step_end` (and call ``super()`` in the epoch hooks).
    """

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self._epoch_start = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = epoch * self.steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + batch + 1
        self.on_step_end(self.step, logs or {})

    def on_step_end(self, step: int, logs: dict) -> None:
        """Called after every global step with Keras' step logs."""


class StopAtStep(StepCallback):
    """Ends ``fit`` after global step ``last_step`` (a last epoch shorter than the others)."""

    def __init__(self, steps_per_epoch: int, last_step: int):
        super().__init__(steps_per_epoch)
        self.last_step = last_step

    def on_step_end(self, step, logs):
        if step >= self.last_step:
            self.model.stop_training = True


def checkpoint_steps(directory: str) -> list[int]:
    """Steps of the checkpoints ``ckpt-<step>.weights.h5`` in ``directory``, ascending."""
    steps = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.weights.h5")):
        match = _CHECKPOINT_RE.search(os.path.basename(path))
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def checkpoint_path(directory: str, step: int) -> str:
    """The file of the checkpoint of ``step`` in ``directory``."""
    return os.path.join(directory, CHECKPOINT_PATTERN.format(step=step))


class NanGuard(StepCallback):
    """Stops training with ``TrainingError`` when the loss or gradient norm is not finite.

    Keras' ``TerminateOnNaN`` only sets ``stop_training``: the backup and checkpoint
    callbacks still run for that step (saving the broken weights) and ``fit`` returns as
    if training had finished. This guard must come first in the callback list: raising
    in ``on_train_batch_end`` keeps every later callback from saving the step.

    Args:
        steps_per_epoch: Keras epoch length in steps.
        checkpoint_dir: where :class:`PeriodicCheckpoints` writes, named in the message.
    """

    def __init__(self, steps_per_epoch: int, checkpoint_dir: str):
        super().__init__(steps_per_epoch)
        self.checkpoint_dir = checkpoint_dir

    def on_step_end(self, step, logs):
        values = {k: float(logs[k]) for k in ("loss", "grad_norm") if k in logs}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if not bad:
            return
        steps = [s for s in checkpoint_steps(self.checkpoint_dir) if s < step]
        kept = (
            f"the last good checkpoint, step {steps[-1]}, is kept in "
            f"{checkpoint_path(self.checkpoint_dir, steps[-1])}"
            if steps else f"no checkpoint had been written yet to {self.checkpoint_dir}"
        )
        what = ", ".join(f"{k} = {v}" for k, v in bad.items())
        raise TrainingError(
            f"Training diverged at step {step}: {what}. Training stopped; {kept}. Lower "
            "config.train.learning_rate, lengthen config.train.warmup_steps or set "
            "config.train.clip_norm, then train again in a new --workdir."
        )


class PeriodicCheckpoints(StepCallback):
    """Saves the task model's weights every ``every`` steps, keeping the newest ``keep``.

    Files are ``<directory>/ckpt-<step>.weights.h5`` (load them with
    ``task_model.load_weights``), written under a temporary name and renamed, so a
    listed checkpoint is always complete. These are for looking back; exact resume uses
    the optimizer state in the ``BackupAndRestore`` directory.

    Args:
        steps_per_epoch: Keras epoch length in steps.
        task: the task model whose weights are saved.
        directory: where checkpoints go.
        every: steps between checkpoints.
        keep: how many to keep (0 = all).
    """

    def __init__(self, steps_per_epoch: int, task: keras.Model, directory: str, every: int,
                 keep: int):
        super().__init__(steps_per_epoch)
        self.task = task
        self.directory = directory
        self.every = every
        self.keep = keep

    def on_step_end(self, step, logs):
        if step % self.every:
            return
        os.makedirs(self.directory, exist_ok=True)
        path = checkpoint_path(self.directory, step)
        tmp = path.replace("ckpt-", ".tmp-ckpt-")
        self.task.save_weights(tmp)
        os.replace(tmp, path)
        logging.info("Saved checkpoint %s", path)
        steps = checkpoint_steps(self.directory)
        if self.keep > 0:
            for old in steps[: -self.keep]:
                os.remove(checkpoint_path(self.directory, old))


BEST_WEIGHTS = "best.weights.h5"
BEST_INFO = "best.json"


class KeepBest(StepCallback):
    """Keeps the task's weights at the best validation value of one metric.

    After every validation, if ``val_<metric>`` improved, the task's weights go to
    ``<directory>/best.weights.h5`` and the step and validation logs to ``best.json``
    (both renamed into place, so a killed run keeps a complete pair and a resumed run
    goes on from the best so far). :meth:`restore` loads them back, so the model
    directory written at the end is the best model.

    Args:
        steps_per_epoch: Keras epoch length in steps.
        task: the task model.
        metric: a validation metric's name without ``val_`` (``"accuracy"``,
            ``"loss"``); lower is better when it contains "loss" or "perplexity".
        directory: where the files go (the run's ``checkpoints/``).
    """

    def __init__(self, steps_per_epoch: int, task: keras.Model, metric: str, directory: str):
        super().__init__(steps_per_epoch)
        self.task = task
        self.metric = metric
        self.directory = directory
        self.lower_is_better = "loss" in metric or "perplexity" in metric
        self.best_step, self.best_value, self.best_logs = None, None, {}
        info = os.path.join(directory, BEST_INFO)
        if os.path.isfile(info) and os.path.isfile(os.path.join(directory, BEST_WEIGHTS)):
            with open(info, encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("metric") == metric:
                self.best_step, self.best_value = saved["step"], saved["value"]
                self.best_logs = saved["logs"]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        logs = logs or {}
        key = f"val_{self.metric}"
        if key not in logs:
            if "val_loss" in logs:  # a validation that does not report the metric
                found = sorted(k[4:] for k in logs if k.startswith("val_"))
                raise TrainingError(
                    f"config.train.keep_best = {self.metric!r} is not a validation metric "
                    f"of this run; it reports {', '.join(found)}. Set keep_best to one of "
                    "them (or '' to keep the last weights)."
                )
            return
        value = float(logs[key])
        if self.best_value is not None and (
                value >= self.best_value if self.lower_is_better else value <= self.best_value):
            return
        self.best_step, self.best_value = self.step, value
        self.best_logs = {k[4:]: float(v) for k, v in logs.items() if k.startswith("val_")}
        os.makedirs(self.directory, exist_ok=True)
        weights = os.path.join(self.directory, BEST_WEIGHTS)
        self.task.save_weights(f"{weights}.tmp.weights.h5")
        os.replace(f"{weights}.tmp.weights.h5", weights)
        info = os.path.join(self.directory, BEST_INFO)
        with open(f"{info}.tmp", "w", encoding="utf-8") as f:
            json.dump({"metric": self.metric, "step": self.step, "value": value,
                       "logs": self.best_logs}, f, indent=2)
        os.replace(f"{info}.tmp", info)
        logging.info("Best validation %s so far: %.6g at step %d.", self.metric, value,
                     self.step)

    def restore(self) -> bool:
        """Loads the best weights into the task; False if none were kept."""
        weights = os.path.join(self.directory, BEST_WEIGHTS)
        if self.best_step is None or not os.path.isfile(weights):
            return False
        self.task.load_weights(weights)
        return True

    def summary_fields(self) -> dict:
        return {"keep_best": self.metric, "best_step": self.best_step,
                f"best_validation_{self.metric}": self.best_value}
