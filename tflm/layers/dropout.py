"""Dropout whose mask comes from a cheap counter hash instead of TensorFlow's stateless RNG.

Keras' `Dropout` draws its mask with TensorFlow's `stateless_dropout` (on the TF backend), whose
random numbers XLA's CPU backend generates slowly: on a 2-core AMD EPYC (float32, XLA) one
(32, 4, 128, 128) mask took ~544 ms forward + backward, and bert_mini's step (dropout 0.1
on the embeddings, attention probabilities, attention output and MLP output) ran
1263 ms against 1003 ms with dropout 0. Here each element's keep bit is a hash of its
index and a per-call seed (murmur3's 32-bit finalizer: multiply / xor-shift rounds, 32-bit
integer ops that vectorize), ~0.4 ms for the same mask. The seed comes from a Keras
`SeedGenerator`, as Keras' `Dropout` draws it, so masks differ every call and resume
exactly from a checkpoint. The hash is a mixing function, not a cryptographic or
statistically certified generator: for dropout masks that is enough (kept fraction and
independence across elements and calls are tested).
"""

from __future__ import annotations

import keras
from keras import ops

_BITS = 24  # the keep test compares 24 hash bits: the rate is exact to 2**-24
_GOLDEN = -1640531535  # 0x9E3779B1 as int32: spreads consecutive indices
_MIX1 = -2048144789  # 0x85EBCA6B
_MIX2 = -1028477387  # 0xC2B2AE35


def _shift(x, bits: int):
    """Logical right shift of int32 ``x`` (the sign bit is not copied)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def hash_bits(shape, seed):
    """int32 ``shape`` hash values of (element index, ``seed`` (2,) ints); ``shape`` may
    hold sizes known only when the graph runs."""
    *outer, last = shape or (1,)
    rows = 1
    for size in outer:
        rows = rows * size
    seed = ops.cast(seed, "int32")
    # index * golden + seed[0], with index = row * last + column, as a (rows, 1) term that
    # holds the seed plus a (1, last) one (int32 products wrap: the same values). No tensor
    # of the full shape is constant: TensorFlow's constant folding turned
    # arange(count) * golden into an 8 MiB constant per call site (one (32, 4, 128, 128)
    # mask): 68 MiB of literals in the XLA compile of bert_mini's step (12 MiB kept in the
    # executable), ~150 MiB more peak RSS.
    row_step = ops.cast(last, "int32") * ops.cast(_GOLDEN, "int32")
    row_terms = ops.arange(rows, dtype="int32") * row_step + seed[0]  # (rows,)
    column_terms = ops.arange(last, dtype="int32") * ops.cast(_GOLDEN, "int32")  # (last,)
    h = row_terms[:, None] + column_terms[None, :]  # (rows, last)
    h = ops.bitwise_xor(h, seed[1] * ops.cast(_MIX1, "int32"))
    h = ops.bitwise_xor(h, _shift(h, 16)) * ops.cast(_MIX1, "int32")
    h = ops.bitwise_xor(h, _shift(h, 13)) * ops.cast(_MIX2, "int32")
    h = ops.bitwise_xor(h, _shift(h, 16))
    return ops.reshape(h, shape)


@keras.saving.register_keras_serializable(package="tflm")
class Dropout(keras.layers.Layer):
    """Inverted dropout (as `keras.layers.Dropout`) with hashed masks (module docstring).

    Args:
        rate: the fraction of elements set to 0; kept ones are scaled by 1 / (1 - rate).
        seed: seed of the layer's `SeedGenerator` (None: drawn from Keras' global seed).

    Call args:
        inputs: any float tensor.
        training: drop only when True.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.seed = seed
        if rate > 0:  # as Keras' Dropout: rate 0 draws no seed (initializers unchanged)
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        shape = tuple(ops.shape(inputs))  # python ints where static
        threshold = int(round(self.rate * (1 << _BITS)))
        low = ops.bitwise_and(hash_bits(shape, self.seed_generator.next()), (1 << _BITS) - 1)
        keep = low >= threshold
        scale = ops.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return ops.where(keep, inputs * scale, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
