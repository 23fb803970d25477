"""The optimizer: AdamW with warm-up then decay, clipping, accumulation, loss scaling.

Everything is Keras' own: ``keras.optimizers.AdamW`` (decoupled weight decay,
``global_clipnorm``, ``gradient_accumulation_steps``) and ``LossScaleOptimizer``. tflm adds
the learning-rate schedule and the choice of which variables are decayed: those whose
*path* (``"block_0/attention/query/kernel"``) contains none of ``config.train.no_decay``.
Keras' ``exclude_from_weight_decay(var_names=...)`` matches the short variable *name*
(``"gamma"``, not ``"layer_norm/gamma"``), so ``AdamW`` here resolves the paths into a
variable list when the optimizer is built, which also works for a model that is built by
its first ``fit`` step.

Clipping under ``tf.distribute``: Keras (3.15) clips each replica's share of the gradient
*before* the replicas' shares are summed, so with two replicas ``global_clipnorm`` bounds
neither the norm of the real gradient nor the update (tf.keras once disabled clipping
under strategies for this reason: tensorflow/tensorflow#33929). ``AdamW`` here clips the
summed gradient instead; ``tests/training/test_strategy.py`` checks both the fix (2
replicas == 1) and that Keras' own optimizer still differs (then delete the fix).

Steps count optimizer calls (``Model.fit`` batches): with gradient accumulation over
``k`` batches the schedule still advances every batch, as Keras' schedules do.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from tflm.errors import ConfigError

DECAYS = ("cosine", "linear", "constant")


@keras.saving.register_keras_serializable(package="tflm")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak_learning_rate``, then decay to a floor.

    ``lr(step)`` is ``peak * step / warmup_steps`` for ``step < warmup_steps``; after
    that it decays from ``peak`` at ``warmup_steps`` to ``min_lr_ratio * peak`` at
    ``total_steps`` (half a cosine, or a straight line) and stays there. ``constant``
    keeps ``peak`` after the warm-up.

    Args:
        peak_learning_rate: the learning rate at the end of the warm-up.
        warmup_steps: steps of the linear warm-up (0 = none).
        total_steps: the step at which the decay reaches the floor.
        decay: ``"cosine"``, ``"linear"`` or ``"constant"``.
        min_lr_ratio: the floor as a fraction of ``peak_learning_rate``.
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, decay="cosine",
                 min_lr_ratio=0.0):
        if decay not in DECAYS:
            raise ConfigError(f"config.train.lr_decay = {decay!r} is not one of "
                              f"{', '.join(map(repr, DECAYS))}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        warmup = ops.convert_to_tensor(peak, "float32") * step / max(self.warmup_steps, 1)
        if self.decay == "constant":
            decayed = ops.convert_to_tensor(peak, "float32")
        else:
            floor = peak * self.min_lr_ratio
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            if self.decay == "cosine":
                shape = 0.5 * (1.0 + ops.cos(math.pi * progress))
            else:
                shape = 1.0 - progress
            decayed = floor + (peak - floor) * shape
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "min_lr_ratio": self.min_lr_ratio,
        }


def learning_rate_schedule(train_config) -> WarmupDecay:
    """The schedule of ``config.train``.

    Reads ``learning_rate``, ``warmup_steps``, ``steps``, ``lr_decay``, ``min_lr_ratio``.
    """
    return WarmupDecay(
        peak_learning_rate=train_config.learning_rate,
        warmup_steps=train_config.warmup_steps,
        total_steps=train_config.steps,
        decay=train_config.lr_decay,
        min_lr_ratio=train_config.min_lr_ratio,
    )


def decays(path: str, no_decay) -> bool:
    """Whether the variable at ``path`` is weight-decayed (its path has no pattern)."""
    return not any(pattern in path for pattern in no_decay)


@keras.saving.register_keras_serializable(package="tflm")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW that skips decay for variables whose path contains a ``no_decay`` word,
    and clips the gradient summed over replicas (see the module docstring).

    Args:
        no_decay: substrings of variable paths (``"bias"``, ``"norm"``, ``"embedding"``)
            whose variables get no weight decay.
        **kwargs: ``keras.optimizers.AdamW`` arguments.
    """

    def __init__(self, no_decay=(), layer_decay=1.0, freeze_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.no_decay = tuple(no_decay)
        self.layer_decay = float(layer_decay)
        self.freeze_steps = int(freeze_steps)
        self._layers: dict[int, tuple[int, bool]] = {}  # id(variable) -> (depth, backbone)
        self._scales = None  # per variable index: (learning-rate factor, frozen)

    def set_layers(self, model: keras.Model) -> None:
        """Reads the depth of each of ``model``'s variables in its ``backbone``
        (embeddings 0, block i i + 1, the rest of the backbone and the head at the top),
        for ``layer_decay`` and ``freeze_steps``. Call before the first step."""
        backbone = model.backbone
        top = backbone.num_layers + 1
        depth = {id(v): top for v in model.trainable_variables}
        backbone_ids = {id(v) for v in backbone.trainable_variables}
        for v in backbone.trainable_variables:
            depth[id(v)] = 0 if "embedding" in v.path else top
        for i, block in enumerate(backbone.blocks):
            for v in block.trainable_variables:
                depth[id(v)] = i + 1
        self._layers = {key: (d, key in backbone_ids) for key, d in depth.items()}

    def build(self, var_list):
        if self.built:
            return
        self.exclude_from_weight_decay(
            var_list=[v for v in var_list if not decays(v.path, self.no_decay)]
        )
        super().build(var_list)
        if self._layers and (self.layer_decay != 1.0 or self.freeze_steps > 0):
            top = max(d for d, _ in self._layers.values())
            self._scales = [
                (self.layer_decay ** (top - self._layers.get(id(v), (top, False))[0]),
                 self._layers.get(id(v), (top, False))[1])
                for v in var_list
            ]

    def update_step(self, gradient, variable, learning_rate):
        if self._scales is None:
            return super().update_step(gradient, variable, learning_rate)
        # Per-variable learning rate: the decay below is applied here (with the same
        # factor) instead of in _apply_weight_decay, which knows only the global rate.
        factor, in_backbone = self._scales[self._get_variable_index(variable)]
        lr = ops.cast(learning_rate, variable.dtype) * factor
        if in_backbone and self.freeze_steps > 0:
            lr = lr * ops.cast(self.iterations >= self.freeze_steps, variable.dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            self.assign_sub(variable, variable * ops.cast(self.weight_decay, variable.dtype) * lr)
        return super().update_step(gradient, variable, lr)

    def _apply_weight_decay(self, variables):
        if self._scales is None:
            super()._apply_weight_decay(variables)

    def _replicated(self) -> bool:
        """Whether gradients are per-replica shares still to be summed."""
        context = tf.distribute.get_replica_context()
        return context is not None and context.num_replicas_in_sync > 1

    def _clip_gradients(self, grads):
        # Keras calls this before the cross-replica sum: clip after it instead.
        return grads if self._replicated() else super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # TensorFlow backend: the cross-replica sum, then the clipping skipped above.
        grads_and_vars = super()._all_reduce_sum_gradients(grads_and_vars)
        if not self._replicated():
            return grads_and_vars
        grads = super()._clip_gradients([grad for grad, _ in grads_and_vars])
        return [(grad, var) for grad, (_, var) in zip(grads, grads_and_vars)]

    def get_config(self):
        return {**super().get_config(), "no_decay": list(self.no_decay),
                "layer_decay": self.layer_decay, "freeze_steps": self.freeze_steps}


def make_optimizer(train_config, model: keras.Model) -> keras.optimizers.Optimizer:
    """AdamW with the schedule, decay exclusions, clipping and accumulation of the config.

    Call it under ``strategy.scope()``, after the dtype policy is set; the optimizer
    builds its slots on the first step.

    Args:
        train_config: ``config.train``; reads ``learning_rate``, ``warmup_steps``,
            ``steps``, ``lr_decay``, ``min_lr_ratio``, ``weight_decay``, ``no_decay``,
            ``beta_1``, ``beta_2``, ``epsilon``, ``clip_norm`` (0 = no clipping),
            ``grad_accum_steps``, ``layer_decay``, ``freeze_backbone_steps`` (in
            training steps; the optimizer counts updates).
        model: the model to train; under a ``mixed_float16`` dtype policy the optimizer
            is wrapped in ``keras.optimizers.LossScaleOptimizer``.

    Returns:
        A ``keras.optimizers.Optimizer`` to pass to ``Model.compile``.
    """
    accum = int(train_config.grad_accum_steps)
    optimizer = AdamW(
        no_decay=train_config.no_decay,
        learning_rate=learning_rate_schedule(train_config),
        weight_decay=train_config.weight_decay,
        beta_1=train_config.beta_1,
        beta_2=train_config.beta_2,
        epsilon=train_config.epsilon,
        global_clipnorm=train_config.clip_norm or None,
        gradient_accumulation_steps=accum if accum > 1 else None,
        layer_decay=train_config.layer_decay,
        freeze_steps=-(-int(train_config.freeze_backbone_steps) // accum),
    )
    if hasattr(model, "backbone"):
        optimizer.set_layers(model)
    if model.dtype_policy.name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
