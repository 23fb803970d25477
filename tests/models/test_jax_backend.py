"""The models run on JAX too: forward pass, jitted KV-cache decoding, the loss's
gradient, the fused LM head's loss and gradients, Dense's bias gradient and greedy's
argmax, in a subprocess."""

import hashlib
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from tflm.layers.dropout import hash_bits

SCRIPT = textwrap.dedent(
    """
    import jax
    import keras
    import numpy as np

    from tflm.models import GPT

    assert keras.backend.backend() == "jax"
    # One rotary model: it covers the embedding, rotary, masks and the cache update.
    # Compiled with jax.jit: op-by-op eager JAX is slow on a small shared CPU.
    model = GPT(backbone=dict(vocabulary_size=30, num_layers=1, hidden_dim=16, num_heads=2,
                              intermediate_dim=32, max_sequence_length=10,
                              position_embedding="rotary"))
    ids = np.random.default_rng(0).integers(0, 30, size=(2, 7)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    full = np.asarray(jax.jit(model.__call__)(x))
    assert full.shape == (2, 7, 30) and full.dtype == np.float32

    step = jax.jit(model.call_with_cache)
    cache = model.init_cache(2, 10)
    logits, cache = step(ids[:, :3], cache, 0)
    pieces = [np.asarray(logits)]
    for t in range(3, 7):
        logits, cache = step(ids[:, t:t + 1], cache, t)
        pieces.append(np.asarray(logits))
    error = np.abs(np.concatenate(pieces, axis=1) - full).max()
    assert error < 1e-5, error

    # The loss's hand-written gradient (keras.ops.custom_gradient) under jax.grad.
    from tflm.models import token_cross_entropy
    labels = ids[:, 1:]
    weights = (np.arange(6) < 4).astype("float32")[None]
    def ours(logits):
        return (token_cross_entropy(labels, logits) * weights).sum()
    def keras_ce(logits):
        return (keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True) * weights).sum()
    logits = full[:, :-1] * 3.0
    error = np.abs(jax.jit(jax.grad(ours))(logits) - jax.grad(keras_ce)(logits)).max()
    assert error < 1e-6, error

    # The fused, chunked LM head + loss: the plain loss's value and gradients under
    # jax.grad (hidden states and the table), 10 tokens in chunks of 4 (one padded).
    from tflm.models.lm_head_loss import lm_head_cross_entropy
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((2, 5, 16)).astype("float32")
    table = rng.standard_normal((30, 16)).astype("float32") * 0.3
    labels = rng.integers(0, 30, size=(2, 5)).astype("int32")
    weights = (rng.random((2, 5)) > 0.3).astype("float32")
    def plain(hidden, table):
        ce = token_cross_entropy(labels, hidden @ table.T)
        return (ce * weights).sum() / weights.sum()
    def fused(hidden, table):
        return lm_head_cross_entropy(hidden, table, labels, weights, chunk_size=4)[0]
    assert abs(float(jax.jit(fused)(hidden, table)) - float(plain(hidden, table))) < 1e-6
    ours = jax.jit(jax.grad(fused, argnums=(0, 1)))(hidden, table)
    want = jax.grad(plain, argnums=(0, 1))(hidden, table)
    for a, b in zip(ours, want):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-6

    # tflm's Dense: the bias gradient as a matrix product equals Keras Dense's autodiff.
    from tflm.layers.dense import Dense
    ours, reference = Dense(5), keras.layers.Dense(5)
    ours.build((None, 16)), reference.build((None, 16))
    ours.bias.assign(np.linspace(-1.0, 1.0, 5)), reference.set_weights(ours.get_weights())
    xs = rng.standard_normal((4, 1024, 16)).astype("float32")  # MIN_ROWS rows
    def dense_loss(values, layer, x):
        with keras.StatelessScope(state_mapping=list(zip(layer.trainable_variables, values))):
            return (layer(x, training=True) * np.arange(5.0)).sum()
    for got, want in zip(jax.grad(dense_loss)([v.value for v in ours.trainable_variables],
                                              ours, xs),
                         jax.grad(dense_loss)([v.value for v in reference.trainable_variables],
                                              reference, xs)):
        assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-3

    # Greedy's argmax as a max and a min over indices: numpy's argmax, ties to the first.
    from tflm.generation.samplers import first_argmax
    scores = np.random.default_rng(2).normal(size=(4, 50)).astype("float32")
    scores[1, [3, 9]] = 9.0
    assert (np.asarray(jax.jit(first_argmax)(scores)) == scores.argmax(-1)).all()

    # The hashed dropout masks: the same hash values as on TensorFlow (digest checked by
    # the test), and the rate holds.
    import hashlib
    from tflm.layers.dropout import Dropout, hash_bits
    bits = np.asarray(hash_bits((6, 50), np.array([12345, 7], "int32"))).astype("<i4")
    print("HASH=" + hashlib.sha1(bits.tobytes()).hexdigest())
    kept = float((np.asarray(Dropout(0.1, seed=3)(np.ones((200, 500), "float32"),
                                                  training=True)) > 0).mean())
    assert abs(kept - 0.9) < 0.005, kept
    print("JAX_OK")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_forward_and_cache_decode_under_jax():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "JAX_OK" in result.stdout, result.stderr[-3000:]
    bits = hash_bits((6, 50), tf.constant([12345, 7], tf.int32)).numpy().astype("<i4")
    assert f"HASH={hashlib.sha1(bits.tobytes()).hexdigest()}" in result.stdout
