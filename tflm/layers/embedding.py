"""Token embedding plus position embedding; reversed, it turns hidden states into logits."""

import keras
from keras import ops

from tflm.errors import ConfigError

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "none")


@keras.saving.register_keras_serializable(package="tflm")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Sums a token embedding and a learned or sinusoidal position embedding.

    With `reverse=True` the layer maps hidden states to logits through the same token
    table (tied weights). The product runs in the compute dtype, as the rest of the
    model's matmuls (under `mixed_bfloat16` that halves the largest matmul's cost on
    CPUs with bf16 units); the logits come out as float32, so softmax and loss are
    float32 under mixed precision too.

    Args:
        vocabulary_size: number of token ids V.
        max_sequence_length: longest input (and largest position + 1) accepted.
        hidden_dim: embedding size.
        position_embedding: "learned", "sinusoidal", or "none" (rotary models add
            positions inside attention).

    Call args:
        inputs: (B, T) int token ids, or with `reverse=True` (B, T, hidden) floats.
        position_ids: (B, T) int positions; default arange(T).
        reverse: return logits (B, T, V) float32 instead of embeddings.

    Returns:
        (B, T, hidden) in the compute dtype, or (B, T, V) float32 logits when reversed.

    Raises:
        ValueError: float token ids, a rank other than 2, or T > max_sequence_length.
        ConfigError: an unknown position_embedding.
    """

    def __init__(
        self,
        vocabulary_size: int,
        max_sequence_length: int,
        hidden_dim: int,
        position_embedding: str = "learned",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ConfigError(
                f"position_embedding {position_embedding!r} is not one of "
                f"{POSITION_EMBEDDINGS}."
            )
        self.vocabulary_size = vocabulary_size
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.position_embedding = position_embedding

    def build(self, inputs_shape=None):
        initializer = keras.initializers.RandomNormal(stddev=0.02)
        # autocast=False: the tied logits read the table in float32 under mixed precision.
        self.token_embeddings = self.add_weight(
            shape=(self.vocabulary_size, self.hidden_dim), initializer=initializer,
            name="token_embeddings", autocast=False,
        )  # (V, hidden)
        if self.position_embedding == "learned":
            self.learned_positions = keras.layers.Embedding(
                self.max_sequence_length, self.hidden_dim, embeddings_initializer=initializer,
                name="position_embedding", dtype=self.dtype_policy,
            )
            self.learned_positions.build((None, None))
        self.built = True

    def call(self, inputs, position_ids=None, reverse=False):
        if reverse:
            self._check_hidden(inputs.shape)
            table = ops.cast(self.token_embeddings, self.compute_dtype)  # (V, hidden)
            logits = ops.matmul(ops.cast(inputs, self.compute_dtype), ops.transpose(table))
            return ops.cast(logits, "float32")  # (B, T, V)
        self._check_token_ids(inputs.shape, inputs.dtype)
        table = ops.convert_to_tensor(self.token_embeddings)
        x = ops.cast(ops.take(table, inputs, axis=0), self.compute_dtype)  # (B, T, hidden)
        if self.position_embedding == "none":
            return x
        if position_ids is None:
            position_ids = ops.arange(ops.shape(inputs)[1], dtype="int32")[None, :]  # (1, T)
        if self.position_embedding == "learned":
            positions = self.learned_positions(position_ids)  # (B or 1, T, hidden)
        else:
            positions = sinusoidal_positions(position_ids, self.hidden_dim)
        return x + ops.cast(positions, x.dtype)

    def _check_token_ids(self, shape, dtype):
        """Raises ValueError on float ids, a wrong rank or a too long sequence."""
        if "int" not in str(dtype):
            raise ValueError(
                f"token ids must be an integer tensor; got dtype {dtype}. Pass int32 ids."
            )
        if len(shape) != 2:
            raise ValueError(f"token ids must have shape (batch, seq); got {tuple(shape)}.")
        if shape[1] is not None and shape[1] > self.max_sequence_length:
            raise ValueError(
                f"sequence length {shape[1]} exceeds the model's max_sequence_length "
                f"{self.max_sequence_length}; shorten the input or retrain with a larger "
                "config.model.backbone.max_sequence_length."
            )

    def _check_hidden(self, shape):
        if len(shape) != 3 or shape[-1] != self.hidden_dim:
            raise ValueError(
                f"reverse=True expects hidden states (batch, seq, {self.hidden_dim}); "
                f"got shape {tuple(shape)}."
            )

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape) + (self.hidden_dim,)

    def compute_output_spec(self, inputs, position_ids=None, reverse=False):
        if reverse:
            self._check_hidden(inputs.shape)
            shape = tuple(inputs.shape[:-1]) + (self.vocabulary_size,)
            return keras.KerasTensor(shape, dtype="float32")
        self._check_token_ids(inputs.shape, inputs.dtype)
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_sequence_length": self.max_sequence_length,
                "hidden_dim": self.hidden_dim,
                "position_embedding": self.position_embedding,
            }
        )
        return config


def sinusoidal_positions(position_ids, hidden_dim: int):
    """The fixed sin/cos embedding of "Attention is all you need": (..., hidden) float32."""
    half = hidden_dim // 2
    inverse_freq = 1.0 / ops.power(
        10000.0, ops.arange(half, dtype="float32") * (2.0 / hidden_dim)
    )  # (hidden/2,)
    angles = ops.cast(position_ids, "float32")[..., None] * inverse_freq  # (..., hidden/2)
    table = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
    if hidden_dim % 2:
        table = ops.pad(table, [(0, 0)] * (len(table.shape) - 1) + [(0, 1)])
    return table
