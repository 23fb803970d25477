"""Workarounds for ``Model.fit`` under ``MultiWorkerMirroredStrategy`` (all of them here).

Checked with keras 3.15.1 / TensorFlow 2.21 (keras-team/keras#20585,
tensorflow/tensorflow#72388). ``tests/training/test_multi_worker.py`` holds a sentinel
that runs the unpatched path and fails once upstream fixes a bug: then delete the
matching workaround.

1. **First batch reduced across workers.** Before the first step, Keras'
   ``TensorFlowTrainer._maybe_symbolic_build`` takes a batch of the distributed dataset
   and calls ``strategy.reduce("MEAN", batch, axis=None)`` on it, only to read its shapes.
   Under MultiWorkerMirrored that fails with ``ValueError: Attempt to convert a value
   (PerReplica:{...}) with an unsupported type (<class '...PerReplica'>) to a Tensor.``
   Fix: build from this worker's *local* batch (``experimental_local_results``).
2. **Scalar logs reduced along axis 0.** ``reduce_per_replica`` reduces every step log
   with ``strategy.reduce("MEAN", value, axis=0)`` under MultiWorkerMirrored, and the logs
   (loss, metrics) are scalars: ``ValueError: Invalid reduction dimension 0 for input with
   0 dimensions.`` Fix: ``train_step`` / ``test_step`` return logs of shape ``(1,)``; the
   reduction averages them over the replicas back into scalars.
3. **One backup directory for every worker.** ``keras.callbacks.BackupAndRestore``
   writes ``latest.weights.h5`` into its directory on every worker, so workers sharing a
   file system overwrite each other's files and all of them ``rmtree`` it at the end.
   Fix: :func:`backup_dir_for_worker` gives the chief the real directory and every other
   worker its own fixed sibling, which it restores from after a restart (a throwaway
   temp dir would make a restarted worker resume from scratch while the chief resumes
   from its checkpoint: their weights and epochs would no longer agree).

4. **Only part of the validation set evaluated.** tflm's pipelines turn tf.data
   auto-sharding off (the training stream is sliced per worker by its ``input_context``).
   A plain dataset given to ``evaluate`` / ``fit(validation_data=...)`` is distributed by
   Keras with ``experimental_distribute_dataset``, which with sharding off gives *every*
   worker the whole set cut into per-replica batches (twice as many batches with 2
   workers), while Keras stops after the dataset's cardinality in steps: each worker
   evaluates the first ``1/num_workers`` of the set. Fix: :func:`shard_eval_dataset`
   turns DATA sharding back on for that dataset, so worker ``i`` gets its rows of every
   batch. (Found by ``tests/training/test_multi_worker_train.py``, which compares the
   validation loss with a single-process run.)

Use: ``model = apply_workarounds(model, strategy)`` after building the model under
``strategy.scope()`` and before ``fit``, and ``shard_eval_dataset`` on the validation
dataset; they change nothing under other strategies.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from keras import ops

from tflm.training.strategy import is_chief, worker_index


def _is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class MultiWorkerFit:
    """Mixin for a ``keras.Model`` subclass: fixes 1 and 2 of the module docstring.

    Put it first in the bases (``class M(MultiWorkerFit, GPT)``). It only acts when the
    model's ``distribute_strategy`` is a ``MultiWorkerMirroredStrategy``.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is None or not _is_multi_worker(strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = next(batches)
            break
        data_batch = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v,
            data_batch,
        )
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _vector_logs(self, logs):
        if not _is_multi_worker(self.distribute_strategy):
            return logs
        return tf.nest.map_structure(
            lambda v: ops.reshape(v, (1,)) if len(ops.shape(v)) == 0 else v, logs
        )

    def train_step(self, data):
        return self._vector_logs(super().train_step(data))

    def test_step(self, data):
        return self._vector_logs(super().test_step(data))


_PATCHED_CLASSES: dict[type, type] = {}


def _with_mixin(cls: type) -> type:
    """``cls`` with :class:`MultiWorkerFit` first in its bases (one class per ``cls``)."""
    if issubclass(cls, MultiWorkerFit):
        return cls
    if cls not in _PATCHED_CLASSES:
        # Same name and module: saving still records (and loading gives) ``cls``.
        _PATCHED_CLASSES[cls] = type(
            cls.__name__, (MultiWorkerFit, cls),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
    return _PATCHED_CLASSES[cls]


def apply_workarounds(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """Gives ``model`` the :class:`MultiWorkerFit` fixes under MultiWorkerMirrored.

    Only this model object changes (its class becomes a subclass of its class with the
    mixin); Keras itself is not patched. Other strategies get ``model`` back unchanged.

    Args:
        model: a built or unbuilt ``keras.Model``, created under ``strategy.scope()``.
        strategy: the run's strategy.

    Returns:
        ``model`` itself.
    """
    if _is_multi_worker(strategy):
        model.__class__ = _with_mixin(type(model))
    return model


def backup_dir_for_worker(backup_dir: str, strategy: tf.distribute.Strategy) -> str:
    """The ``BackupAndRestore`` directory of this worker (fix 3 of the module docstring).

    Args:
        backup_dir: the run's backup directory, e.g. ``<run>/checkpoints/backup``.
        strategy: the run's strategy.

    Returns:
        ``backup_dir`` on the chief (and for single-machine strategies); on worker ``i``
        the sibling ``<backup_dir>.worker<i>``, which only that worker writes and reads.
    """
    if is_chief(strategy):
        return backup_dir
    return f"{os.path.normpath(backup_dir)}.worker{worker_index(strategy)}"


def shard_eval_dataset(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy):
    """``dataset`` with DATA auto-sharding under MultiWorkerMirrored (fix 4 above).

    Args:
        dataset: finite batches for ``evaluate`` / ``fit(validation_data=...)``.
        strategy: the run's strategy.

    Returns:
        ``dataset`` itself under other strategies.
    """
    if not _is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
