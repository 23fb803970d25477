"""gelu: Keras' GELU values; in training the exact GELU's recomputed gradient equals
autodiff's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm.layers.gelu import gelu


def _value_and_gradient(fn, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_values_and_gradients_are_keras_gelu(approximate, training):
    x = tf.constant(np.linspace(-9.0, 9.0, 181), "float32")
    y, dy = _value_and_gradient(lambda v: gelu(v, approximate, training), x)
    y_ref, dy_ref = _value_and_gradient(
        lambda v: keras.activations.gelu(v, approximate=approximate), x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(dy, dy_ref, rtol=1e-6, atol=1e-7)


def test_recomputed_gradient_under_xla():
    x = tf.constant(np.linspace(-9.0, 9.0, 181), "float32")
    upstream = tf.constant(np.linspace(-1.0, 2.0, 181), "float32")

    def gradient(fn):
        @tf.function(jit_compile=True)
        def run(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                y = fn(v) * upstream
            return tape.gradient(y, v)
        return run(x).numpy()

    np.testing.assert_allclose(
        gradient(lambda v: gelu(v, False, True)),
        gradient(lambda v: keras.activations.gelu(v, approximate=False)),
        rtol=1e-6, atol=1e-7)
