"""token_cross_entropy / TokenCrossEntropy: Keras' sparse cross-entropy, faster gradient."""

import keras
import numpy as np
import tensorflow as tf

from tflm.models import GPT, Perplexity, TokenCrossEntropy, token_cross_entropy


def _batch(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(3, 5, 11)) * scale).astype("float32")
    labels = rng.integers(0, 11, size=(3, 5)).astype("int32")
    weights = (rng.random((3, 5)) > 0.3).astype("float32")
    return logits, labels, weights


def _keras_ce(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def _value_and_grad(fn, labels, logits, weights):
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = tf.reduce_sum(fn(labels, logits) * weights)
    return float(value), tape.gradient(value, logits).numpy()


def test_values_and_gradients_equal_keras_sparse_cross_entropy():
    for scale in (1.0, 30.0):  # large logits: the max is subtracted before exp
        logits, labels, weights = _batch(scale=scale)
        np.testing.assert_allclose(np.asarray(token_cross_entropy(labels, logits)),
                                   np.asarray(_keras_ce(labels, logits)), rtol=1e-5, atol=1e-5)
        ours, ours_grad = _value_and_grad(token_cross_entropy, labels, logits, weights)
        theirs, theirs_grad = _value_and_grad(_keras_ce, labels, logits, weights)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
        np.testing.assert_allclose(ours_grad, theirs_grad, atol=1e-6)
        assert np.all(ours_grad[weights == 0] == 0)  # weight 0 labels get no gradient


def test_gradient_under_xla_equals_the_eager_one():
    logits, labels, weights = _batch(1)
    _, eager = _value_and_grad(token_cross_entropy, labels, logits, weights)

    @tf.function(jit_compile=True)
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(token_cross_entropy(labels, x) * weights)
        return tape.gradient(value, x)

    np.testing.assert_allclose(grad(tf.constant(logits)).numpy(), eager, atol=1e-6)


def test_loss_is_the_weighted_mean_and_serializes():
    logits, labels, weights = _batch(2)
    loss = GPT.default_loss()
    assert isinstance(loss, TokenCrossEntropy)
    per_token = np.asarray(_keras_ce(labels, logits))
    expected = (per_token * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(loss(labels, logits, sample_weight=weights)), expected,
                               rtol=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, TokenCrossEntropy)
    np.testing.assert_allclose(float(clone(labels, logits, sample_weight=weights)), expected,
                               rtol=1e-5)


def test_perplexity_from_the_mean_loss_equals_the_one_from_logits():
    from_logits, from_mean = Perplexity(), Perplexity()
    for seed in range(3):  # batches with different numbers of real labels
        logits, labels, weights = _batch(seed)
        from_logits.update_state(labels, logits, sample_weight=weights)
        mean = float(TokenCrossEntropy()(labels, logits, sample_weight=weights))
        from_mean.update_from_mean(mean, weights.sum())
    np.testing.assert_allclose(float(from_mean.result()), float(from_logits.result()),
                               rtol=1e-5)
