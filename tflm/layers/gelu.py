"""GELU whose gradient keeps only its input for the backward pass."""

import math

import keras
from keras import ops


def gelu(x, approximate: bool, training=None):
    """`keras.activations.gelu(x, approximate)`; in training the exact (erf) GELU's
    gradient is recomputed from `x` (`exact_gelu_for_training`)."""
    if training and not approximate:
        return exact_gelu_for_training(x)
    return keras.activations.gelu(x, approximate=approximate)


@ops.custom_gradient
def exact_gelu_for_training(x):
    """The exact GELU x * Phi(x) (the same values as `keras.activations.gelu`); its
    gradient Phi(x) + x * phi(x) is computed from `x` in the backward pass.

    Autodiff of `0.5 * x * erfc(-x / sqrt(2))` keeps erfc's value and the exp(-x^2 / 2)
    inside it (XLA shares it with the gradient's) alive from the forward to the backward
    pass: two more (B, T, intermediate) tensors per block, 32 MiB each bert_mini layer
    (batch 32 x 128, FFN 1024, float32) at the training step's peak.
    """
    y = keras.activations.gelu(x, approximate=False)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        # erfc of x * -c, not of -x * c as the forward: XLA would merge the two and keep it.
        cdf = 0.5 * ops.erfc(x * ops.cast(-1.0 / math.sqrt(2.0), x.dtype))
        pdf = ops.exp(-0.5 * ops.square(x)) * ops.cast(1.0 / math.sqrt(2.0 * math.pi), x.dtype)
        return upstream * (cdf + x * pdf)

    return y, grad
