"""Exact resume: Keras' ``BackupAndRestore`` plus the one thing it cannot do, the step.

What ``keras.callbacks.BackupAndRestore(save_freq=N)`` does (keras 3.15): every N batches
it writes ``latest.weights.h5`` (the model's weights *and* the optimizer's variables:
moments, step counter) and ``training_metadata.json`` = ``{"epoch", "batch"}``; with
``double_checkpoint`` the previous pair is kept as ``*.bkp`` and used when the latest is
unreadable (a kill during the write). On restart it loads the weights and sets only the
*epoch*: ``batch`` is written but never read, so a run interrupted mid-epoch replays the
epoch from its first batch with weights from later on. The recorded epoch is also off by
one when the save falls on an epoch's last batch (``epoch`` counts finished epochs and is
advanced after the batch callbacks), and a resumed process records 0 until its first
epoch ends.

What tflm does instead, here and in the trainer:

- the global step is the optimizer's own counter, restored with the weights
  (``optimizer.iterations`` counts applied updates; times ``grad_accum_steps`` it is the
  number of batches trained);
- Keras epochs are ``gcd(eval_every, checkpoint_every)`` steps long, so every backup ends
  an epoch and a resumed run starts on an epoch boundary with fresh epoch metrics;
- the trainer restores *before* ``fit`` (it needs the step to start the data stream at
  that step: the pipeline is a function of (seed, step)) and passes
  ``initial_epoch = step // steps_per_epoch`` to ``fit``; the epoch Keras read from the
  metadata is discarded, and ``on_train_begin`` does not load a second time.
"""

from __future__ import annotations

import json

import keras
from absl import logging


class ExactBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose restore happens before ``fit`` and yields the step.

    Args:
        backup_dir: the directory of ``latest.weights.h5``; used by nothing else.
        save_freq: steps between backups (each a multiple of the epoch length).
        grad_accum_steps: batches per optimizer update (``config.train.grad_accum_steps``).
    """

    def __init__(self, backup_dir: str, save_freq: int, grad_accum_steps: int = 1):
        super().__init__(
            backup_dir, save_freq=save_freq, double_checkpoint=True, delete_checkpoint=False
        )
        self.grad_accum_steps = grad_accum_steps

    def restore(self, model: keras.Model) -> int:
        """Loads the latest backup into ``model`` (and its optimizer) if there is one.

        Call under the strategy's scope, after ``compile``.

        Returns:
            The global step (batches trained) of the restored state, 0 without backup.
        """
        self.set_model(model)
        try:
            super().on_train_begin()  # Keras' load, including the fallback to *.bkp.
        except json.JSONDecodeError:
            # Killed while writing training_metadata.json, after the weights: they are
            # loaded, and the metadata is not needed.
            logging.warning("Ignoring the unreadable training_metadata.json in %s.",
                            self.backup_dir)
        model._initial_epoch = None  # Keras' epoch from the metadata; see module doc.
        return int(model.optimizer.iterations.numpy()) * self.grad_accum_steps

    def on_train_begin(self, logs=None):
        """Nothing: :meth:`restore` already ran before ``fit``."""
