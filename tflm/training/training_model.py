"""``TrainingModel``: the task model as ``Model.fit`` trains it, with the gradient norm.

Keras' train step computes the gradients and drops them; the global gradient norm is
the first thing to look at when a run diverges, so this train step is Keras' (loss,
loss scaling, ``optimizer.apply``, compiled metrics) plus one ``global_norm`` of the
gradients it already has, returned in the step logs as ``grad_norm``. The task model
(``GPT``) stays a plain model: it is what the model directory saves and loads.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class TrainingModel(keras.Model):
    """Wraps a built task model; ``fit`` logs also hold ``grad_norm``.

    ``grad_norm`` is the L2 norm over all gradients of the last step, before clipping
    and without loss scaling. On several replicas it is the norm of each replica's own
    batch gradient (a noisier estimate; the exact global norm would cost one more
    all-reduce per step), averaged over the replicas as Keras reduces the logs.

    Args:
        task: the built task model (e.g. ``GPT``), created under the strategy's scope.
    """

    def __init__(self, task: keras.Model, **kwargs):
        super().__init__(name=f"{task.name}_training", **kwargs)
        self.task = task
        self.built = task.built

    def call(self, inputs, training=None):
        return self.task(inputs, training=training)

    def compute_output_spec(self, inputs, training=None):
        return self.task.compute_output_spec(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            # Divided by the replicas in sync: replicas' gradients are summed.
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grad_norm = tf.linalg.global_norm(gradients) * replicas
        scale = getattr(self.optimizer, "dynamic_scale", None)  # LossScaleOptimizer
        if scale is not None:
            grad_norm = grad_norm / tf.cast(scale, grad_norm.dtype)
        self.optimizer.apply(gradients, variables)
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        for metric in self.metrics:
            if metric.name == "loss":  # Keras' loss tracker
                metric.update_state(loss * replicas, sample_weight=batch)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return {**logs, "grad_norm": grad_norm}
