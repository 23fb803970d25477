"""tflm's Dense: Keras Dense's values; in training its bias gradient (a matrix product)
equals autodiff's, eagerly, under XLA, under mixed precision, on JAX."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm.layers.dense import MIN_ROWS, Dense, bias_add

ROWS = (4, MIN_ROWS // 4)  # enough rows for the matrix-product bias gradient


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
    x = tf.constant(np.random.default_rng(2).normal(size=(*ROWS, 16)), "float32")
    ours, reference = _pair(activation=activation)
    for got, want in zip(_value_and_gradients(ours, x, training),
                         _value_and_gradients(reference, x, training), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_bias_gradient_under_xla_sums_every_row():
    x = tf.constant(np.random.default_rng(3).normal(size=(*ROWS, 16)), "float32")
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
        x = tf.constant(np.random.default_rng(4).normal(size=(*ROWS, 16)), "float32")
        got = _value_and_gradients(ours, x, True)
        want = _value_and_gradients(reference, x, True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert ours.compute_dtype == "bfloat16" and ours.bias.dtype == "float32"
    for a, b in zip(got[:3], want[:3], strict=True):  # output, d x, d kernel: bf16 alike
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.1)
    # d bias sums 4096 bf16 gradients: ours in float32 (within bf16 rounding of the
    # exact sum), Keras' reduction in bf16 (off by several units here).
    upstream = np.random.default_rng(1).normal(size=(*ROWS, 8)).astype("float32")
    exact = upstream.astype("float64").sum(axis=(0, 1))
    ours_error = np.abs(got[3] - exact).max()
    assert ours_error < 0.5 and ours_error < np.abs(want[3] - exact).max()


@pytest.mark.parametrize("rows", [(2,), (MIN_ROWS,), (None,)])
def test_bias_add_values(rows):
    """The same sums in and out of training, above and below MIN_ROWS, static or not."""
    bias = tf.constant([1.0, 2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec((*rows, 3))])
    def both(x):
        return bias_add(x, bias, training=False), bias_add(x, bias, training=True)

    x = tf.reshape(tf.range((rows[0] or 5) * 3, dtype="float32"), (-1, 3))
    for y in both(x):
        np.testing.assert_array_equal(y.numpy(), (x + bias).numpy())


def test_serializes_as_tflm_dense():
    layer = Dense(4, name="dense_x")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is Dense and restored.units == 4
