"""tflm's hashed-mask Dropout: Keras' inverted-dropout behaviour, a rate that holds,
masks that change every call and differ between elements, and the hash itself."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm.layers.dropout import Dropout, hash_bits


def reference_hash(count, seed):
    """The hash in numpy uint32 arithmetic (wrapping multiplies, logical shifts)."""
    with np.errstate(over="ignore"):
        s0, s1 = (np.uint32(np.int64(v) & 0xFFFFFFFF) for v in seed)
        h = np.arange(count, dtype=np.uint32) * np.uint32(0x9E3779B1) + s0
        h ^= s1 * np.uint32(0x85EBCA6B)
        h = (h ^ (h >> np.uint32(16))) * np.uint32(0x85EBCA6B)
        h = (h ^ (h >> np.uint32(13))) * np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h.view(np.int32)


@pytest.mark.parametrize("seed", [(0, 0), (12345, 7), (-5, 2**31 - 1)])
def test_hash_is_murmur_finalizer_of_index_and_seed(seed):
    got = np.asarray(hash_bits((6, 50), tf.constant(seed, tf.int64)))
    np.testing.assert_array_equal(got.reshape(-1), reference_hash(300, seed))


def test_no_mask_sized_constant_under_xla():
    # arange(count) * golden folded into a constant as large as the mask (8 MiB for a
    # (32, 4, 128, 128) attention mask): compile memory and executable size.
    layer = Dropout(0.1, seed=3)
    compiled = tf.function(lambda v: layer(v, training=True), jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(tf.ones((8, 4, 16, 16)))(stage="hlo")
    sizes = [int(n) for n in re.findall(r"s32\[(\d+)\]\{0\} constant", hlo)]
    assert sizes and max(sizes) <= 8 * 4 * 16  # one row index per mask row at most


def test_rate_scaling_and_independence():
    layer = Dropout(0.1, seed=3)
    x = tf.ones((64, 4, 64, 64))
    a, b = layer(x, training=True).numpy(), layer(x, training=True).numpy()
    kept = a > 0
    assert abs(kept.mean() - 0.9) < 0.002  # 1M elements: sd 0.0003
    np.testing.assert_allclose(a[kept], 1 / 0.9, rtol=1e-6)
    assert abs(a.mean() - 1.0) < 0.003
    # a new mask every call, independent of the last: agreement p^2 + (1-p)^2 = 0.82
    assert abs((kept == (b > 0)).mean() - 0.82) < 0.003
    # neighbours are not correlated (consecutive indices hash apart)
    flat = kept.reshape(-1).astype("float64")
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01


def test_same_seed_same_masks_and_inference_is_identity():
    x = tf.random.stateless_normal((8, 16, 32), seed=(1, 2))
    a, b = Dropout(0.3, seed=11), Dropout(0.3, seed=11)
    np.testing.assert_array_equal(a(x, training=True).numpy(), b(x, training=True).numpy())
    np.testing.assert_array_equal(a(x, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(Dropout(0.0)(x, training=True).numpy(), x.numpy())
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_gradient_flows_only_through_kept_elements():
    layer = Dropout(0.5, seed=4)
    x = tf.random.stateless_normal((4, 100), seed=(3, 4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(y)
    grad = tape.gradient(total, x).numpy()
    kept = y.numpy() != 0
    np.testing.assert_allclose(grad[kept], 2.0)
    assert (grad[~kept] == 0).all()


def test_batch_unknown_when_traced_and_under_xla():
    layer = Dropout(0.2, seed=5)

    @tf.function(input_signature=[tf.TensorSpec((None, 64))])
    def dynamic(v):
        return layer(v, training=True)

    assert abs(float(tf.reduce_mean(tf.cast(dynamic(tf.ones((500, 64))) > 0, "float32")))
               - 0.8) < 0.01
    compiled = tf.function(lambda v: layer(v, training=True), jit_compile=True)
    kept = compiled(tf.ones((500, 64))).numpy() > 0
    assert abs(kept.mean() - 0.8) < 0.01


def test_serializes():
    layer = Dropout(0.25, seed=9, name="d")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, Dropout) and clone.rate == 0.25 and clone.seed == 9
