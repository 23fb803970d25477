"""``ValidationScores``: a fine-tuning task's scores (F1, MCC, Spearman...) at each validation.

Keras' compiled metrics are running means over batches, which F1, MCC and rank
correlations are not: they need every prediction of the evaluation set at once. This
callback runs the model over the evaluation set after each epoch Keras validated, scores
the outputs with :func:`tflm.training.task_metrics.scores`, and adds ``val_<name>``
entries to that epoch's logs: later callbacks and ``History`` (hence the trainer's
``validation_<name>`` summary fields) see them like Keras' own ``val_`` metrics.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tflm.training.task_metrics import check_kind, scores


def _targets(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, sample weights or None) of every batch of ``(x, y[, w])`` ``dataset``, in order."""
    labels, weights = [], []
    for rest in dataset.map(lambda x, *rest: rest).as_numpy_iterator():
        labels.append(rest[0])
        if len(rest) > 1:
            weights.append(rest[1])
    return np.concatenate(labels), np.concatenate(weights) if weights else None


class ScoresCallback(keras.callbacks.Callback):
    """Base class: after each epoch Keras validated (its logs hold ``val_loss``), adds
    ``val_<name>`` for every entry of :meth:`scores` to the logs, logs one absl line and,
    with ``log_dir``, writes the TensorBoard scalar ``epoch_<name>`` in
    ``<log_dir>/validation`` at the optimizer's step."""

    label = "Validation scores"

    def __init__(self, log_dir: str | None = None):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def scores(self) -> dict[str, float]:
        """The scores of the model as it is now (name -> value)."""
        raise NotImplementedError

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_loss" not in logs:
            return
        values = self.scores()
        logs.update({f"val_{name}": value for name, value in values.items()})
        step = int(self.model.optimizer.iterations)
        logging.info("%s at step %d: %s", self.label, step,
                     ", ".join(f"{name} {value:.4f}" for name, value in values.items()))
        if self.log_dir is None:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "validation"))
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"epoch_{name}", value)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ValidationScores(ScoresCallback):
    """Adds the task's scores to the logs of every validated epoch (see the module doc).

    Each score ``<name>`` becomes ``logs["val_<name>"]`` (only in epochs whose logs hold
    ``val_loss``: Keras ran validation), one absl line, and, with ``log_dir``, the
    TensorBoard scalar ``epoch_<name>`` in ``<log_dir>/validation`` at the optimizer's
    step. Place it after callbacks that must not see these entries (Keras'
    ``TensorBoard`` would write them again, keyed by epoch) and before those that should.

    The dataset is read twice per evaluation (inputs for ``predict``, then the labels),
    so it must yield the same batches in the same order each time (the pipelines'
    ``training=False`` datasets do). Under ``MultiWorkerMirroredStrategy`` a DATA-sharded
    dataset gives each worker part of the predictions but all labels: not supported.

    Args:
        kind: ``classification``, ``regression`` or ``token_classification``.
        eval_dataset: finite ``tf.data.Dataset`` of ``(x, y, sample_weight)`` or
            ``(x, y)`` batches; sample weights > 0 mark what is scored.
        num_classes: C for ``classification`` (None = the logits' last dimension).
        outside_id: the "outside" label id; required for ``token_classification``.
        log_dir: the TensorBoard directory (e.g. ``<workdir>/logs``), or None.

    Raises:
        ValueError: an unknown ``kind``, or ``token_classification`` without
            ``outside_id``.
    """

    def __init__(self, kind: str, eval_dataset: tf.data.Dataset,
                 num_classes: int | None = None, outside_id: int | None = None,
                 log_dir: str | None = None):
        super().__init__(log_dir)
        check_kind(kind, outside_id)
        self.kind = kind
        self.eval_dataset = eval_dataset
        self.num_classes = num_classes
        self.outside_id = outside_id

    def evaluate(self, model: keras.Model) -> dict[str, float]:
        """The scores of ``model`` (its call returns the task's outputs) on the dataset.

        Returns:
            name -> value, without the ``val_`` prefix (e.g. ``{"accuracy", "macro_f1",
            "mcc"}`` for classification).
        """
        inputs = self.eval_dataset.map(lambda x, *rest: x)
        y_pred = model.predict(inputs, verbose=0)
        if isinstance(y_pred, dict):
            raise ValueError(f"The model returns a dict ({sorted(y_pred)}); "
                             "ValidationScores scores one output: pass a model whose "
                             "call returns the task's logits or values.")
        y_true, weights = _targets(self.eval_dataset)
        return scores(self.kind, y_true, y_pred, weights=weights,
                      num_classes=self.num_classes, outside_id=self.outside_id)

    def scores(self) -> dict[str, float]:
        return self.evaluate(self.model)
