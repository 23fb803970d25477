"""``TrainingModel``: the task model as ``Model.fit`` trains it, with the gradient norm.

Keras' train step computes the gradients and drops them; the global gradient norm is
the first thing to look at when a run diverges, so this train step is Keras' (loss,
loss scaling, ``optimizer.apply``, compiled metrics) plus one ``global_norm`` of the
gradients it already has, returned in the step logs as ``grad_norm``. The task model
(``GPT``) stays a plain model: it is what the model directory saves and loads.

Perplexity comes from the loss: for a language model the compiled loss *is* the
weighted-mean token cross-entropy, so ``exp`` of its token-weighted running mean is the
perplexity, exactly. Keras would compute it as a metric from the (B, T, V) logits, a
second cross-entropy pass that costs ~15% of a float32 CPU train step without XLA.

A task with a ``fused_loss(x, y, sample_weight, chunk_size, training)`` method (``GPT``:
its LM head and cross-entropy computed chunk by chunk, ``tflm.models.lm_head_loss``)
is trained and evaluated through it when ``fused_chunk`` > 0: it returns the compiled
loss's value without materializing the logits, and the ``y_pred`` its default metrics
take (``TokenAccuracy``'s flags). Keras' ``compute_loss`` is then not called; the loss is
scaled for the replicas and the model's added losses are summed as it would.

A compiled loss or metric with a ``gather`` attribute (a contrastive loss: its in-batch
negatives) gets ``tflm.training.replicas.gather``, so its batch is the global batch
under any strategy, with exact gradients (see that module).

Under a distribution strategy Keras builds the model, loss and metrics before the first
step from ``strategy.reduce("MEAN", first batch)`` (keras 3.15.1), which turns int token
ids into float32 under ``MirroredStrategy``, and the task's backbone refuses them:
``TrainingModel`` builds from this replica's own first batch instead (the
MultiWorkerMirrored form of the same bug is ``tflm.training.multi_worker``'s workaround
1).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflm.models.metrics import Perplexity
from tflm.training.replicas import install_gather


class TrainingModel(keras.Model):
    """Wraps a built task model; ``fit`` logs also hold ``grad_norm``.

    ``grad_norm`` is the L2 norm over all gradients of the last step, before clipping
    and without loss scaling. On several replicas it is the norm of each replica's own
    batch gradient (a noisier estimate; the exact global norm would cost one more
    all-reduce per step), averaged over the replicas as Keras reduces the logs.

    With ``perplexity_from_loss``, the logs hold ``perplexity`` = exp(token-weighted
    mean of the loss), and a ``Perplexity`` given to ``compile`` is left out
    (it would be the same number computed again from the logits). That is exact only when
    the compiled loss is the task's weighted-mean token cross-entropy (``GPT.default_loss``)
    and the model adds no other losses, so the default is the task class' own
    ``perplexity_from_loss`` (True for ``GPT``; absent = False, e.g. summed losses).

    ``compile`` gives every loss and metric with a ``gather`` attribute the
    cross-replica gather (``tflm.training.replicas``).

    Args:
        task: the built task model (e.g. ``GPT``), created under the strategy's scope.
        perplexity_from_loss: log the perplexity derived from the loss (see above);
            None = the task's ``perplexity_from_loss`` attribute.
        fused_chunk: tokens per chunk of the task's ``fused_loss`` (0, or a task
            without one: the compiled loss on the task's outputs). Use it only with the
            task's ``default_loss`` and ``default_metrics``, whose values it computes.
    """

    def __init__(self, task: keras.Model, perplexity_from_loss: bool | None = None,
                 fused_chunk: int = 0, **kwargs):
        super().__init__(name=f"{task.name}_training", **kwargs)
        self.task = task
        self.fused_chunk = int(fused_chunk) if hasattr(task, "fused_loss") else 0
        if perplexity_from_loss is None:
            perplexity_from_loss = getattr(task, "perplexity_from_loss", False)
        self.perplexity = Perplexity(name="perplexity") if perplexity_from_loss else None
        self.built = task.built

    def compile(self, optimizer="rmsprop", loss=None, *args, metrics=None,
                weighted_metrics=None, **kwargs):
        install_gather([loss, metrics, weighted_metrics])
        if self.perplexity is not None:
            metrics, weighted_metrics = (
                None if given is None else [m for m in given if not isinstance(m, Perplexity)]
                for given in (metrics, weighted_metrics)
            )
        super().compile(optimizer, loss, *args, metrics=metrics,
                        weighted_metrics=weighted_metrics, **kwargs)

    def call(self, inputs, training=None):
        return self.task(inputs, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Build from the first replica's batch, not a MEAN over replicas (module doc).
        if iterator is None or self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = next(batches)
            break
        strategy = self._distribute_strategy
        data_batch = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v,
            data_batch,
        )
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def compute_output_spec(self, inputs, training=None):
        return self.task.compute_output_spec(inputs, training=training)

    def _loss(self, x, y, sample_weight, training):
        """``(loss divided by the replicas in sync, y_pred for the metrics)``."""
        if not self.fused_chunk:
            y_pred = self(x, training=training)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
            )
            return loss, y_pred
        loss, y_pred = self.task.fused_loss(
            x, y, sample_weight, chunk_size=self.fused_chunk, training=training
        )
        loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        if self.losses:  # as compute_loss: the model's added losses
            loss = loss + tf.add_n([tf.cast(extra, loss.dtype) for extra in self.losses])
        return loss, y_pred

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            # Divided by the replicas in sync: replicas' gradients are summed.
            loss, y_pred = self._loss(x, y, sample_weight, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grad_norm = tf.linalg.global_norm(gradients) * replicas
        scale = getattr(self.optimizer, "dynamic_scale", None)  # LossScaleOptimizer
        if scale is not None:
            grad_norm = grad_norm / tf.cast(scale, grad_norm.dtype)
        self.optimizer.apply(gradients, variables)
        logs = self._update_metrics(x, y, y_pred, sample_weight, loss * replicas)
        return {**logs, "grad_norm": grad_norm}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, y_pred = self._loss(x, y, sample_weight, training=False)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self._update_metrics(x, y, y_pred, sample_weight, loss * replicas)

    def _update_metrics(self, x, y, y_pred, sample_weight, loss):
        """Updates the loss tracker, the perplexity and the compiled metrics; the logs."""
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        for metric in self.metrics:
            if metric.name == "loss":  # Keras' loss tracker
                metric.update_state(loss, sample_weight=batch)
        if self.perplexity is not None:
            if sample_weight is None:
                weight = tf.cast(tf.size(y), "float32")
            else:
                weight = tf.reduce_sum(tf.cast(sample_weight, "float32"))
            self.perplexity.update_from_mean(loss, weight)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
