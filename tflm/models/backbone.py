"""TransformerBackbone: token ids in, hidden states and a pooled vector out (functional).

One path embeds tokens and runs the blocks (:meth:`TransformerBackbone._forward`): the
functional graph built in ``__init__`` and the KV-cache decode path
(:meth:`TransformerBackbone.call_with_cache`) both go through it.
"""

from collections.abc import Mapping

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.layers import TokenAndPositionEmbedding, TransformerBlock
from tflm.layers.dropout import Dropout

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary")
POOLINGS = ("auto", "first", "mean", "max", "last")


def pool(hidden, padding_mask, mode: str):
    """One vector per sequence from hidden states.

    Args:
        hidden: (B, T, hidden) hidden states.
        padding_mask: (B, T) int/bool, 1 = real token (left or right padding).
        mode: "first" (the first position: BERT's [CLS]), "mean" (over real tokens),
            "max" (per feature, over real tokens) or "last" (the last real token: what a
            causal model has read everything at).

    Returns:
        (B, hidden) in the dtype of `hidden`.
    """
    if mode == "first":
        return hidden[:, 0, :]
    mask = ops.cast(padding_mask, hidden.dtype)  # (B, T)
    if mode == "mean":
        total = ops.sum(hidden * mask[:, :, None], axis=1)  # (B, hidden)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1)  # (B, 1)
        return total / count
    if mode == "max":
        # Pads read as the batch's minimum, which no real token's maximum is below.
        floor = ops.min(hidden)
        return ops.max(ops.where(mask[:, :, None] > 0, hidden, floor), axis=1)
    # "last": the highest position whose mask is 1 (position 0 for an all-pad row).
    real = ops.cast(padding_mask, "int32")
    weights = real * ops.cumsum(ops.ones_like(real), axis=1)  # position + 1 where real
    last = ops.argmax(weights, axis=1)  # (B,)
    return ops.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0, :]


@keras.saving.register_keras_serializable(package="tflm")
class TransformerBackbone(keras.Model):
    """A stack of Transformer blocks over token (+ segment) + position embeddings.

    The graph is built functionally in `__init__` from `keras.Input`s, so the model is
    built, summarisable and saveable right away. `call_with_cache` runs the same
    `_forward` with a KV cache for incremental decoding.

    Args:
        vocabulary_size, num_layers, hidden_dim, num_heads, intermediate_dim,
        max_sequence_length: the model shape.
        dropout: dropout rate in embeddings, attention and MLP.
        causal: causal self-attention (GPT) or bidirectional (BERT).
        norm_first: pre-LN (adds a final layer norm) or post-LN (adds an embedding norm).
        activation: "gelu_approximate" or "gelu".
        position_embedding: "learned", "sinusoidal" or "rotary" (no position table;
            positions rotate queries and keys in every attention layer).
        layer_norm_epsilon: epsilon of every layer norm.
        use_bias: biases in the projections.
        num_segments: size of the segment (token type) embedding, e.g. 2 for BERT's
            sentence pairs; 0 = no segment embedding and no `segment_ids` input.
        pooling: how `pooled_output` is made (see `pool`): "first", "mean", "max", "last",
            or "auto" = "last" for a causal model, "first" for a bidirectional one.
        dtype: a dtype policy name such as "mixed_bfloat16" (default: the global policy).

    Inputs: `{"token_ids": int32 (B, T), "padding_mask": int32/bool (B, T)}`, plus
        `"segment_ids": int32 (B, T)` when `num_segments > 0`. A missing `padding_mask`
        means all tokens are real, missing `segment_ids` mean segment 0.
    Outputs: `{"sequence_output": (B, T, hidden_dim), "pooled_output": (B, hidden_dim)}`
        in the compute dtype.

    Raises:
        ConfigError: hidden_dim not divisible by num_heads, an unknown
            position_embedding or pooling, a negative num_segments.
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        max_sequence_length: int,
        dropout: float = 0.0,
        causal: bool = True,
        norm_first: bool = True,
        activation: str = "gelu_approximate",
        position_embedding: str = "learned",
        layer_norm_epsilon: float = 1e-5,
        use_bias: bool = True,
        num_segments: int = 0,
        pooling: str = "auto",
        dtype=None,
        **kwargs,
    ):
        _check_arguments(hidden_dim, num_heads, position_embedding, num_segments, pooling)
        rotary = position_embedding == "rotary"
        # === Layers (attributes before the functional graph, as keras-hub's backbones) ===
        self.embedding = TokenAndPositionEmbedding(
            vocabulary_size, max_sequence_length, hidden_dim,
            position_embedding="none" if rotary else position_embedding,
            name="embedding", dtype=dtype,
        )
        self.segment_embedding = None
        if num_segments:
            self.segment_embedding = keras.layers.Embedding(
                num_segments, hidden_dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="segment_embedding", dtype=dtype,
            )
        self.embedding_dropout = Dropout(
            dropout, name="embedding_dropout", dtype=dtype
        )
        self.embedding_norm = None
        if not norm_first:
            self.embedding_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="embedding_norm", dtype=dtype
            )
        self.blocks = [
            TransformerBlock(
                num_heads, intermediate_dim, dropout=dropout, norm_first=norm_first,
                activation=activation, layer_norm_epsilon=layer_norm_epsilon,
                use_bias=use_bias, rotary=rotary, name=f"block_{i}", dtype=dtype,
            )
            for i in range(num_layers)
        ]
        self.final_norm = None
        if norm_first:
            self.final_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="final_norm", dtype=dtype
            )
        self.causal = causal
        self.pooling = pooling

        # === Functional graph ===
        inputs = {
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
        }
        if num_segments:
            inputs["segment_ids"] = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        x, _ = self._forward(
            inputs["token_ids"], padding_mask=inputs["padding_mask"],
            segment_ids=inputs.get("segment_ids"),
        )  # (B, T, hidden)
        outputs = {
            "sequence_output": x,
            "pooled_output": pool(x, inputs["padding_mask"], self.pooling_mode),
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.norm_first = norm_first
        self.activation = activation
        self.position_embedding = position_embedding
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.num_segments = num_segments

    @property
    def pooling_mode(self) -> str:
        """`pooling` with "auto" resolved: "last" if causal, else "first"."""
        if self.pooling != "auto":
            return self.pooling
        return "last" if self.causal else "first"

    def embed(self, token_ids, segment_ids=None, position_ids=None, training=None):
        """Token (+ segment) + position embeddings, dropout and (post-LN) the embedding
        norm: the input of the first block, (B, T, hidden). Missing `segment_ids` mean
        segment 0. Also the shared input of ELECTRA's generator."""
        x = self.embedding(token_ids, position_ids=position_ids)  # (B, T, hidden)
        if self.segment_embedding is not None:
            if segment_ids is None:
                segment_ids = ops.zeros_like(token_ids)
            x = x + self.segment_embedding(segment_ids)
        x = self.embedding_dropout(x, training=training)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return x

    def _forward(self, token_ids, padding_mask=None, segment_ids=None, position_ids=None,
                 cache=None, cache_index=None, cache_mask=None):
        """Embeddings, then the blocks: the one forward path (graph and decoding).

        Without `cache`: attention is masked by `padding_mask` (and causal if the model
        is). With `cache` (decoding; `cache_mask` masks slots): either the whole model's
        (B, L, 2, S, H, D) cache, updated in place, or a list of L per-layer
        (B, 2, S, H, D) caches (TFLite, whose kernels stop at 5-D).

        Returns:
            `(hidden (B, T, hidden_dim), cache or None)`.
        """
        x = self.embed(token_ids, segment_ids, position_ids)  # (B, T, hidden)
        per_layer = isinstance(cache, (list, tuple))
        new_caches = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, padding_mask=padding_mask, use_causal_mask=self.causal,
                          position_ids=position_ids)
            elif per_layer:
                x, layer_cache = block(x, cache=cache[i], cache_index=cache_index,
                                       cache_mask=cache_mask, position_ids=position_ids)
                new_caches.append(layer_cache)  # (B, 2, S, H, D)
            else:
                # Block i updates cache[:, i] in place (no per-layer slices to re-stack).
                x, cache = block(x, cache=cache, cache_index=cache_index, cache_mask=cache_mask,
                                 position_ids=position_ids, cache_layer=i)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, (new_caches if per_layer else cache)

    def __call__(self, inputs, *args, **kwargs):
        # Defaults are filled before Keras matches the dict to the graph's inputs.
        return super().__call__(self._complete_inputs(inputs), *args, **kwargs)

    def _complete_inputs(self, inputs):
        """`inputs` with a missing padding_mask (all real) and segment_ids (segment 0)
        filled in, and segment_ids dropped when the model has no segment embedding."""
        _check_inputs(inputs)
        # One kind of value (Keras refuses numpy arrays mixed with the filled-in tensors).
        inputs = {k: v if isinstance(v, keras.KerasTensor) or v is None
                  else ops.convert_to_tensor(v) for k, v in inputs.items()}
        if inputs.get("padding_mask") is None:
            inputs["padding_mask"] = ops.ones_like(inputs["token_ids"])
        if self.num_segments and inputs.get("segment_ids") is None:
            inputs["segment_ids"] = ops.zeros_like(inputs["token_ids"])
        if not self.num_segments:
            inputs.pop("segment_ids", None)
        return inputs

    def init_cache(self, batch: int, length: int):
        """Zeros (batch, num_layers, 2, length, num_heads, head_dim) in the compute dtype.

        Raises:
            ValueError: if length exceeds max_sequence_length.
        """
        if length > self.max_sequence_length:
            raise ValueError(
                f"cache length {length} exceeds the model's max_sequence_length "
                f"{self.max_sequence_length}; shorten the prompt plus new tokens or retrain "
                "with a larger config.model.backbone.max_sequence_length."
            )
        head_dim = self.hidden_dim // self.num_heads
        shape = (batch, self.num_layers, 2, length, self.num_heads, head_dim)
        return ops.zeros(shape, dtype=self.compute_dtype)

    def call_with_cache(
        self, token_ids, cache, cache_index, cache_mask=None, position_ids=None
    ):
        """Runs T new tokens against a KV cache (inference: no dropout).

        Args:
            token_ids: (B, T) int, the tokens at slots [cache_index, cache_index + T).
            cache: (B, num_layers, 2, S, H, D) from `init_cache` or a previous call, or a
                list of num_layers (B, 2, S, H, D) per-layer caches.
            cache_index: int scalar, slot of the first new token.
            cache_mask: (B, S) bool/int, 1 = slot holds a real token (left padding).
            position_ids: (B, T) int positions; default cache_index + arange(T).

        Returns:
            `(hidden, cache)`: hidden (B, T, hidden_dim) and the updated cache (of the
            form it was given in).
        """
        _check_inputs({"token_ids": token_ids})
        if position_ids is None:
            seq = ops.shape(token_ids)[1]
            start = ops.cast(cache_index, "int32")
            position_ids = start + ops.arange(seq, dtype="int32")[None, :]  # (1, T)
        return self._forward(token_ids, position_ids=position_ids, cache=cache,
                             cache_index=cache_index, cache_mask=cache_mask)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
            "causal": self.causal,
            "norm_first": self.norm_first,
            "activation": self.activation,
            "position_embedding": self.position_embedding,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "num_segments": self.num_segments,
            "pooling": self.pooling,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def build_backbone(backbone, dtype=None) -> TransformerBackbone:
    """`backbone` itself, or a `TransformerBackbone(**backbone)` built from its arguments
    (a dict / ConfigDict such as `config.model.backbone`), named "backbone"."""
    if isinstance(backbone, TransformerBackbone):
        return backbone
    if isinstance(backbone, Mapping) or hasattr(backbone, "to_dict"):
        arguments = dict(backbone.to_dict() if hasattr(backbone, "to_dict") else backbone)
        return TransformerBackbone(**arguments, name="backbone", dtype=dtype)
    raise ConfigError(
        f"backbone must be a TransformerBackbone or its constructor arguments "
        f"(config.model.backbone); got {type(backbone).__name__}."
    )


class BackboneTask(keras.Model):
    """What every task model shares: a `backbone` attribute (a `TransformerBackbone`), its
    shape, and a config that holds the serialized backbone next to the head arguments.

    Subclasses build `self.backbone = build_backbone(backbone, dtype=self.dtype_policy)`
    and their head in `__init__`, and add their head arguments to `get_config()`.
    """

    @property
    def vocabulary_size(self) -> int:
        return self.backbone.vocabulary_size

    @property
    def max_sequence_length(self) -> int:
        return self.backbone.max_sequence_length

    def get_config(self):
        config = super().get_config()
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict) and "class_name" in config["backbone"]:
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _check_arguments(hidden_dim, num_heads, position_embedding, num_segments, pooling):
    """Raises ConfigError naming the config.model.backbone key that is wrong."""
    if hidden_dim % num_heads:
        raise ConfigError(
            f"config.model.backbone.hidden_dim ({hidden_dim}) must be divisible by "
            f"config.model.backbone.num_heads ({num_heads})."
        )
    if position_embedding not in POSITION_EMBEDDINGS:
        raise ConfigError(
            f"config.model.backbone.position_embedding {position_embedding!r} is not one of "
            f"{POSITION_EMBEDDINGS}."
        )
    if pooling not in POOLINGS:
        raise ConfigError(
            f"config.model.backbone.pooling {pooling!r} is not one of {POOLINGS}."
        )
    if num_segments < 0:
        raise ConfigError(
            f"config.model.backbone.num_segments must be >= 0 (0 = none), got {num_segments}."
        )


def _check_inputs(inputs):
    """Raises ValueError on float token ids or a padding mask shaped unlike the ids."""
    if not isinstance(inputs, dict) or "token_ids" not in inputs:
        raise ValueError(
            "the backbone takes a dict {'token_ids': (batch, seq) int, 'padding_mask': "
            f"(batch, seq)}}; got {type(inputs).__name__}."
        )
    ids = inputs["token_ids"]
    dtype = keras.backend.standardize_dtype(ids.dtype)
    if "int" not in dtype:
        raise ValueError(f"token ids must be an integer tensor; got dtype {dtype}. Pass int32 ids.")
    for name in ("padding_mask", "segment_ids"):
        value = inputs.get(name)
        if value is not None and tuple(value.shape) != tuple(ids.shape):
            raise ValueError(
                f"{name} shape {tuple(value.shape)} does not match token_ids shape "
                f"{tuple(ids.shape)}; pass one value per token."
            )
