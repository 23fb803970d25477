"""Multi-head self-attention with a fused QKV projection, causal/padding masks, rotary and
KV cache."""

import functools
import math

import keras
from keras import ops

from tflm.layers.dense import Dense
from tflm.layers.dropout import Dropout
from tflm.layers.rotary import RotaryEmbedding


def masked_softmax(scores, mask, axis=-1):
    """softmax of `scores` over the positions where `mask` is True; 0 where it is False.

    Masking by selection and multiplication, not by adding a large negative number: every
    intermediate tensor stays on the scale of the real scores, which full-integer (int8)
    TFLite quantization needs (one -1e9 in a tensor's calibrated range leaves a single
    int8 step for all real scores). Masked positions get exactly 0; a row with no True
    position gets all zeros (not NaN).

    Args:
        scores: float logits; mask: bool, broadcastable to `scores`; None = softmax.
        axis: the axis normalized over.
    """
    if mask is None:
        return ops.softmax(scores, axis=axis)
    mask = ops.broadcast_to(mask, ops.shape(scores))
    floor = ops.stop_gradient(ops.min(scores, axis=axis, keepdims=True))
    shifted = ops.where(mask, scores, floor)  # masked -> the row's minimum: bounded
    peak = ops.stop_gradient(ops.max(shifted, axis=axis, keepdims=True))
    exp = ops.exp(shifted - peak) * ops.cast(mask, scores.dtype)  # in [0, 1]
    total = ops.sum(exp, axis=axis, keepdims=True)  # >= 1 when any position is kept
    return exp / ops.maximum(total, ops.cast(1e-30, scores.dtype))


@keras.saving.register_keras_serializable(package="tflm")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention.

    One fused projection to queries, keys and values (kernel (hidden, 3 * heads *
    head_dim)). Softmax runs in float32 under mixed precision.

    Args:
        num_heads: number of heads H.
        head_dim: size D of each head; default hidden // num_heads.
        dropout: dropout rate on the attention probabilities and on the output.
        use_bias: whether the projections have biases.
        rotary: apply rotary position embedding to queries and keys.
        rotary_max_wavelength: the rotary base wavelength.

    Call args:
        query: (B, T, hidden) float; the keys and values come from it too.
        padding_mask: (B, T) bool/int, 1 = real token; keys where it is 0 are never
            attended. Not used in cache mode (use `cache_mask`).
        use_causal_mask: query i attends keys j <= i.
        cache: (B, 2, S, H, D) keys (index 0) and values (index 1) of earlier tokens (one
            layer's cache: the TFLite export passes one such tensor per layer, as TFLite
            kernels stop at 5-D).
        cache_index: int scalar, the cache slot of the first query token; the T new keys
            and values are written to slots [cache_index, cache_index + T) and query i
            attends slots <= cache_index + i where `cache_mask` allows.
        cache_mask: (B, S) bool/int, 1 = the slot holds a real token.
        position_ids: (B, T) int positions for rotary; default cache_index + arange(T).
        training: enables dropout.
        cache_layer: int; `cache` is then a whole model's (B, L, 2, S, H, D) cache, this
            layer updates `cache[:, cache_layer]` in place and returns the whole cache.

    Returns:
        output (B, T, hidden) in the compute dtype, or `(output, cache)` in cache mode.

    Raises:
        ValueError: on a wrong rank, a hidden size not divisible by num_heads, or mask /
            cache shapes that do not match the inputs.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        rotary: bool = False,
        rotary_max_wavelength: int = 10000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.rotary = rotary
        self.rotary_max_wavelength = rotary_max_wavelength

    def build(self, query_shape):
        _check_rank("query", query_shape, 3)
        hidden = query_shape[-1]
        if self.head_dim is None and hidden % self.num_heads:
            raise ValueError(
                f"hidden size {hidden} is not divisible by num_heads {self.num_heads}; "
                "choose a hidden_dim that is a multiple of num_heads."
            )
        heads, dim = self.num_heads, self.head_dim or hidden // self.num_heads
        self._dim = dim
        # Each projection is a Dense layer whose kernel is the 2-D matrix its matmul reads;
        # heads are split and merged by reshaping activations. A kernel stored as
        # (hidden, 3, H, D) is reshaped inside every decode step, and XLA:CPU fuses that
        # reshape (with the layer norm before it) into a naive matrix-vector loop:
        # batch-1 generation ran 1.4-1.5x slower (same-process A/B of the two layouts).
        self.qkv_dense = self._dense(
            3 * heads * dim, "qkv", query_shape
        )  # (hidden, 3*H*D): queries, keys, values
        self.output_dense = self._dense(
            hidden, "output", (*query_shape[:-1], heads * dim)
        )  # (H*D, hidden)
        self.attention_dropout = Dropout(
            self.dropout, name="attention_dropout", dtype=self.dtype_policy
        )
        self.output_dropout = Dropout(
            self.dropout, name="output_dropout", dtype=self.dtype_policy
        )
        if self.rotary:
            self.rotary_embedding = RotaryEmbedding(
                self.rotary_max_wavelength, name="rotary", dtype=self.dtype_policy
            )
        self.built = True

    def _dense(self, units, name, input_shape):
        """A built Dense projection to `units` features."""
        layer = Dense(
            units, use_bias=self.use_bias, name=name, dtype=self.dtype_policy
        )
        layer.build(input_shape)
        return layer

    def call(
        self,
        query,
        padding_mask=None,
        use_causal_mask=False,
        cache=None,
        cache_index=None,
        cache_mask=None,
        position_ids=None,
        training=None,
        cache_layer=None,
    ):
        self._check_call(query, padding_mask, cache, cache_index, cache_mask, cache_layer)
        seq = ops.shape(query)[1]
        start = 0 if cache_index is None else ops.cast(cache_index, "int32")
        qkv = self._split(self.qkv_dense(query), 3)  # (B, T, 3, H, D)
        # unstack, not three slices: its gradient is one stack, where a slice's gradient
        # pads a zero tensor of the full (B, T, 3, H, D) size each.
        q, k, v = ops.unstack(qkv, axis=2)  # (B, T, H, D)
        if self.rotary:
            if position_ids is None:
                position_ids = start + ops.arange(seq, dtype="int32")[None, :]  # (1, T)
            q = self.rotary_embedding(q, position_ids)
            k = self.rotary_embedding(k, position_ids)
        if cache is not None:
            # One dynamic-update-slice of the (loop-carried) cache: XLA writes it in place.
            new = ops.cast(ops.stack([k, v], axis=1), cache.dtype)  # (B, 2, T, H, D)
            if cache_layer is None:
                cache = ops.slice_update(cache, [0, 0, start, 0, 0], new)  # (B, 2, S, H, D)
                # unstack, not two slices: the same under XLA, but TFLite's UNPACK copies
                # the halves ~13x faster than its STRIDED_SLICE (per decode step, layer).
                k, v = ops.unstack(cache, axis=1)  # (B, S, H, D)
            else:
                cache = ops.slice_update(cache, [0, cache_layer, 0, start, 0, 0], new[:, None])
                k, v = cache[:, cache_layer, 0], cache[:, cache_layer, 1]  # (B, S, H, D)
        mask = _attention_mask(
            seq, ops.shape(k)[1], start,
            cache_mask if cache is not None else padding_mask,
            use_causal_mask or cache is not None,
        )  # (B or 1, T, S) bool, or None
        dropout = functools.partial(self.attention_dropout, training=training)
        if cache is not None and query.shape[1] == 1:  # a decode step
            output = single_query_attention(q, k, v, mask, dropout)  # (B, 1, H, D)
        else:
            k, v = ops.cast(k, q.dtype), ops.cast(v, q.dtype)
            output = explicit_attention(q, k, v, mask, dropout)  # (B, T, H, D)
        output = ops.reshape(output, (*ops.shape(output)[:-2], self.num_heads * self._dim))
        output = self.output_dropout(self.output_dense(output), training=training)
        return output if cache is None else (output, cache)

    def _split(self, x, *groups):
        """(..., groups * H * D) projections -> (..., *groups, H, D)."""
        return ops.reshape(x, (*ops.shape(x)[:-1], *groups, self.num_heads, self._dim))

    def _check_call(self, query, padding_mask, cache, cache_index, cache_mask, cache_layer):
        """Raises ValueError when arguments contradict each other or the built layer."""
        _check_rank("query", query.shape, 3)
        if padding_mask is not None:
            if cache is not None:
                raise ValueError("in cache mode pass cache_mask (B, S), not padding_mask.")
            _check_mask("padding_mask", padding_mask.shape, query.shape[:2])
        if cache is None:
            if cache_index is not None or cache_mask is not None:
                raise ValueError("cache_index and cache_mask need a cache.")
            return
        if cache_index is None:
            raise ValueError("a cache needs cache_index, the slot of the first query token.")
        shape = tuple(cache.shape)
        layer_shape = shape if cache_layer is None else shape[:1] + shape[2:]
        _check_rank("cache", shape, 5 if cache_layer is None else 6)
        in_range = cache_layer is None or shape[1] is None or 0 <= cache_layer < shape[1]
        if (layer_shape[1], *layer_shape[3:]) != (2, self.num_heads, self._dim) or not in_range:
            layers = "" if cache_layer is None else f"layers > {cache_layer}, "
            raise ValueError(
                f"cache shape {shape} does not match (batch, {layers}2, length, "
                f"{self.num_heads}, {self._dim}); build it with init_cache()."
            )
        if cache_mask is not None:
            _check_mask("cache_mask", cache_mask.shape, (layer_shape[0], layer_shape[2]))

    def compute_output_shape(self, query_shape, cache_shape=None):
        if cache_shape is None:
            return tuple(query_shape)
        return tuple(query_shape), tuple(cache_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "head_dim": self.head_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "rotary": self.rotary,
                "rotary_max_wavelength": self.rotary_max_wavelength,
            }
        )
        return config


def explicit_attention(q, k, v, mask=None, dropout=None):
    """masked softmax(q k^T / sqrt(D)) v with float32 logits and softmax.

    Args:
        q: (B, T, H, D); k, v: (B, S, H, D), all in the compute dtype.
        mask: bool (B or 1, T, S), True = attend; None attends everywhere.
        dropout: optional function applied to the (B, H, T, S) probabilities.

    Returns:
        (B, T, H, D) in the dtype of `v`.
    """
    q = q * ops.cast(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    scores = ops.cast(ops.einsum("bthd,bshd->bhts", q, k), "float32")  # (B, H, T, S)
    probs = masked_softmax(scores, None if mask is None else mask[:, None], axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return ops.einsum("bhts,bshd->bthd", ops.cast(probs, v.dtype), v)


def single_query_attention(q, k, v, mask=None, dropout=None):
    """`explicit_attention` for one query (a decode step) as multiply-and-reduce.

    XLA fuses this into loops that read K and V where they lie in the cache, without the
    transposed copies a batched dot needs. Logits, softmax and the sum run in float32.

    Args:
        q: (B, 1, H, D); k, v: (B, S, H, D); mask: bool (B or 1, 1, S), True = attend.
        dropout: optional function applied to the (B, S, H) probabilities.

    Returns:
        (B, 1, H, D) in the dtype of `q`.
    """
    dtype, scale = q.dtype, 1.0 / math.sqrt(q.shape[-1])
    q = ops.cast(q, "float32") * scale  # (B, 1, H, D)
    scores = ops.sum(q * ops.cast(k, "float32"), axis=-1)  # (B, S, H)
    key_mask = None if mask is None else mask[:, 0, :, None]  # (B|1, S, 1)
    probs = masked_softmax(scores, key_mask, axis=1)  # over the S keys
    if dropout is not None:
        probs = ops.cast(dropout(probs), "float32")
    output = ops.sum(probs[..., None] * ops.cast(v, "float32"), axis=1)  # (B, H, D)
    return ops.cast(output[:, None], dtype)


def _attention_mask(query_len, key_len, start, key_mask, causal):
    """Bool (B or 1, T, S) mask, True = attend; None when nothing is masked."""
    mask = None
    if causal:
        query_pos = start + ops.arange(query_len, dtype="int32")  # (T,)
        key_pos = ops.arange(key_len, dtype="int32")  # (S,)
        mask = (key_pos[None, :] <= query_pos[:, None])[None]  # (1, T, S)
    if key_mask is not None:
        key_mask = ops.cast(key_mask, "bool")[:, None, :]  # (B, 1, S)
        mask = key_mask if mask is None else ops.logical_and(mask, key_mask)
    return mask


def _check_rank(name, shape, rank):
    if len(shape) != rank:
        raise ValueError(f"{name} must have rank {rank}; got shape {tuple(shape)}.")


def _check_mask(name, shape, expected):
    """Checks a (B, S) mask against the (B, S) it masks where both sizes are static."""
    if len(shape) != 2 or any(
        a is not None and b is not None and a != b for a, b in zip(shape, expected)
    ):
        raise ValueError(
            f"{name} shape {tuple(shape)} does not match the (batch, length) "
            f"{tuple(expected)} of the keys it masks."
        )
