"""Rows of every replica: the cross-replica gather of in-batch negatives.

A contrastive loss (``tflm.models.simcse.ContrastiveLoss``) scores each anchor against
the candidates of the whole global batch, not only its replica's share. Its ``gather``
attribute (identity by default, keras.ops only) is replaced by :func:`gather` when
``TrainingModel`` compiles it, so the same loss object works on one device, under
``MirroredStrategy`` / ``MultiWorkerMirroredStrategy`` and on TPU.

The gradient rule (exact): replica r's loss is ``L_r = (1/R) * mean over its anchors``
(Keras divides each replica's loss by the R replicas in sync and sums their gradients),
so the single-device loss of the global batch is ``L = sum_r L_r``. Every ``L_s``
depends on replica r's candidates through the gather. ``all_gather``'s gradient
(TensorFlow's own, ``ReplicaContext.all_gather``) all-reduces the upstream gradients
and hands each replica the slice of its own rows: replica r back-propagates
``sum_s dL_s / d(its rows) = dL / d(its rows)`` into its encoder, and the optimizer's
sum over replicas of ``sum_{rows of r} dL/d(row) * d(row)/d(weights)`` is ``dL /
d(weights)``: the gradient of one device on the global batch.
``tests/training/test_simcse_replicas.py`` checks loss and weights on 2 replicas.
The cost is one all-gather forward and one all-reduce of the gathered rows backward.
"""

from __future__ import annotations

import tensorflow as tf


def gather(rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | int]:
    """The rows of every replica in replica order, and where this replica's begin.

    In a replica context of several replicas the rows are all-gathered (replicas may
    hold different numbers of rows, e.g. a last evaluation batch); anywhere else (one
    device, the default strategy, cross-replica context) ``rows`` are returned as they
    are.

    Args:
        rows: (n, ...) this replica's rows.

    Returns:
        ``(all_rows (N, ...), start)``: ``all_rows[start:start + n]`` are ``rows``;
        ``start`` is an int32 scalar tensor (0 on one device).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return rows, 0
    sizes = context.all_gather(tf.shape(rows)[:1], axis=0)  # (R,) rows per replica
    before = tf.range(tf.size(sizes)) < context.replica_id_in_sync_group  # static shapes
    start = tf.reduce_sum(tf.where(before, sizes, tf.zeros_like(sizes)))
    return context.all_gather(rows, axis=0), start


def install_gather(objects) -> int:
    """Sets :func:`gather` as the ``gather`` attribute of every object of the (nested)
    ``objects`` that has one (compiled losses and metrics); returns how many."""
    count = 0
    for obj in tf.nest.flatten(objects):
        if hasattr(obj, "gather"):
            obj.gather = gather
            count += 1
    return count
