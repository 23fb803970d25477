"""TransformerBackbone: token ids and padding mask in, hidden states out (a functional model)."""

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.layers import TokenAndPositionEmbedding, TransformerBlock

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary")


@keras.saving.register_keras_serializable(package="tflm")
class TransformerBackbone(keras.Model):
    """A stack of Transformer blocks over token + position embeddings.

    The graph is built functionally in `__init__` from `keras.Input`s, so the model is
    built, summarisable and saveable right away. `call_with_cache` runs the same layers
    one by one with a KV cache for incremental decoding.

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
        dtype: a dtype policy name such as "mixed_bfloat16" (default: the global policy).

    Inputs: `{"token_ids": int32 (B, T), "padding_mask": int32/bool (B, T)}`.
    Outputs: hidden states (B, T, hidden_dim) in the compute dtype.

    Raises:
        ConfigError: hidden_dim not divisible by num_heads, unknown position_embedding.
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
        dtype=None,
        **kwargs,
    ):
        if hidden_dim % num_heads:
            raise ConfigError(
                f"config.model.hidden_dim ({hidden_dim}) must be divisible by "
                f"config.model.num_heads ({num_heads})."
            )
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ConfigError(
                f"config.model.position_embedding {position_embedding!r} is not one of "
                f"{POSITION_EMBEDDINGS}."
            )
        rotary = position_embedding == "rotary"
        embedding = TokenAndPositionEmbedding(
            vocabulary_size, max_sequence_length, hidden_dim,
            position_embedding="none" if rotary else position_embedding,
            name="embedding", dtype=dtype,
        )
        embedding_dropout = keras.layers.Dropout(dropout, name="embedding_dropout", dtype=dtype)
        embedding_norm = None
        if not norm_first:
            embedding_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="embedding_norm", dtype=dtype
            )
        blocks = [
            TransformerBlock(
                num_heads, intermediate_dim, dropout=dropout, norm_first=norm_first,
                activation=activation, layer_norm_epsilon=layer_norm_epsilon,
                use_bias=use_bias, rotary=rotary, name=f"block_{i}", dtype=dtype,
            )
            for i in range(num_layers)
        ]
        final_norm = None
        if norm_first:
            final_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="final_norm", dtype=dtype
            )

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = embedding_dropout(embedding(token_ids))  # (B, T, hidden)
        if embedding_norm is not None:
            x = embedding_norm(x)
        for block in blocks:
            x = block(x, padding_mask=padding_mask, use_causal_mask=causal)
        if final_norm is not None:
            x = final_norm(x)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=x, dtype=dtype, **kwargs,
        )

        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.causal = causal
        self.norm_first = norm_first
        self.activation = activation
        self.position_embedding = position_embedding
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.embedding = embedding
        self.embedding_dropout = embedding_dropout
        self.embedding_norm = embedding_norm
        self.blocks = blocks
        self.final_norm = final_norm

    def call(self, inputs, training=None, mask=None):
        _check_inputs(inputs)
        return super().call(inputs, training=training, mask=mask)

    def init_cache(self, batch: int, length: int):
        """Zeros (batch, num_layers, 2, length, num_heads, head_dim) in the compute dtype.

        Raises:
            ValueError: if length exceeds max_sequence_length.
        """
        if length > self.max_sequence_length:
            raise ValueError(
                f"cache length {length} exceeds the model's max_sequence_length "
                f"{self.max_sequence_length}; shorten the prompt plus new tokens or retrain "
                "with a larger config.model.max_sequence_length."
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
            cache: (B, num_layers, 2, S, H, D) from `init_cache` or a previous call.
            cache_index: int scalar, slot of the first new token.
            cache_mask: (B, S) bool/int, 1 = slot holds a real token (left padding).
            position_ids: (B, T) int positions; default cache_index + arange(T).

        Returns:
            `(hidden, cache)`: hidden (B, T, hidden_dim) and the updated cache.
        """
        _check_inputs({"token_ids": token_ids})
        if position_ids is None:
            seq = ops.shape(token_ids)[1]
            start = ops.cast(cache_index, "int32")
            position_ids = start + ops.arange(seq, dtype="int32")[None, :]  # (1, T)
        x = self.embedding(token_ids, position_ids=position_ids)  # (B, T, hidden)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        for i, block in enumerate(self.blocks):
            # Block i updates cache[:, i] in place (no per-layer slices to re-stack).
            x, cache = block(
                x, cache=cache, cache_index=cache_index, cache_mask=cache_mask,
                position_ids=position_ids, cache_layer=i,
            )  # cache (B, L, 2, S, H, D)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, cache

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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


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
    mask = inputs.get("padding_mask")
    if mask is not None and tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(
            f"padding_mask shape {tuple(mask.shape)} does not match token_ids shape "
            f"{tuple(ids.shape)}; pass one mask value per token."
        )
