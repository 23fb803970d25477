"""tflm's Dense: Keras Dense's values; in training its bias gradient (a matrix product)
equals autodiff's, eagerly, under XLA, under mixed precision, on JAX."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm.layers.dense import Dense, bias_add


def _pair(units=8, features=16, activation=None):
    ours = Dense(units, activation=activation, name="d")
    ours.build((None, None, features))
    ours.kernel.assign(np.random.default_rng(0).normal(size=(features, units)))
    ours.bias.assign(np.linspace(-1.0, 1.0, units))
    reference = keras.layers.Dense(units, activation=activation)
    reference.build((None, None, features))
    reference.set_weights(ours.get_weights())
    return ours, reference


def _value_and_gradients(layer, x, training):
    return [np.asarray(v, "float32") for v in _tensors(layer, x, training)]


def _tensors(layer, x, training):
    """(output, d x, d kernel, d bias) of sum(output * a fixed upstream gradient)."""
    upstream = tf.constant(np.random.default_rng(1).normal(size=(*x.shape[:-1], 8)),
                           "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    return [y, *tape.gradient(loss, [x, *layer.trainable_variables])]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_values_and_gradients_are_keras_dense(training, activation):
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 5, 16)), "float32")
    ours, reference = _pair(activation=activation)
    for got, want in zip(_value_and_gradients(ours, x, training),
                         _value_and_gradients(reference, x, training), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bias_gradient_under_xla_sums_every_row():
    x = tf.constant(np.random.default_rng(3).normal(size=(4, 33, 16)), "float32")
    ours, reference = _pair()

    def gradients(layer):
        @tf.function(jit_compile=True)
        def run():
            return _tensors(layer, x, True)[1:]

        return [v.numpy() for v in run()]

    for got, want in zip(gradients(ours), gradients(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_mixed_precision_matches_keras():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ours, reference = _pair()
        x = tf.constant(np.random.default_rng(4).normal(size=(2, 6, 16)), "float32")
        got = _value_and_gradients(ours, x, True)
        want = _value_and_gradients(reference, x, True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert ours.compute_dtype == "bfloat16" and ours.bias.dtype == "float32"
    for a, b in zip(got, want, strict=True):
        # bf16 products; our bias gradient sums in float32, Keras' in bf16.
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.1)


def test_bias_add_outside_training_is_a_plain_add():
    x, bias = tf.ones((2, 3)), tf.constant([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(bias_add(x, bias, training=False), x + bias)
    np.testing.assert_array_equal(bias_add(x, bias, training=True), x + bias)


def test_serializes_as_tflm_dense():
    layer = Dense(4, name="dense_x")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is Dense and restored.units == 4
