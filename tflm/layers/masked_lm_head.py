"""The masked-LM head: hidden states at the masked positions -> vocabulary logits."""

import keras
from keras import ops

from tflm.layers.dense import Dense, bias_add


@keras.saving.register_keras_serializable(package="tflm")
class MaskedLMHead(keras.layers.Layer):
    """BERT's prediction head, evaluated only where tokens were masked.

    Gathers the hidden states at `mask_positions` first (no logits for unmasked tokens),
    then dense (hidden -> hidden) + activation + layer norm, then the tied token table
    (the embedding layer's `reverse=True`) plus a per-token bias.

    Args:
        token_embedding: the backbone's `TokenAndPositionEmbedding` (its table is reused;
            it is not part of this layer's config: the task passes it when it builds
            the head).
        activation: "gelu" (exact, BERT) or "gelu_approximate".
        layer_norm_epsilon: epsilon of the head's layer norm.

    Call args:
        hidden: (B, T, hidden) backbone outputs.
        mask_positions: (B, P) int positions to predict (padding positions may repeat
            position 0; their loss weight is 0).

    Returns:
        (B, P, vocabulary_size) float32 logits.
    """

    def __init__(self, token_embedding=None, activation: str = "gelu",
                 layer_norm_epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, hidden_shape, mask_positions_shape=None):
        hidden = hidden_shape[-1]
        self.dense = Dense(hidden, name="dense", dtype=self.dtype_policy)
        self.dense.build((None, None, hidden))
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="norm", dtype=self.dtype_policy)
        self.norm.build((None, None, hidden))
        self.bias = self.add_weight(
            shape=(self.token_embedding.vocabulary_size,), initializer="zeros",
            name="bias", autocast=False)  # (V,) float32
        self.built = True

    def call(self, hidden, mask_positions, training=None):
        positions = ops.cast(mask_positions, "int32")[:, :, None]  # (B, P, 1)
        x = ops.take_along_axis(hidden, positions, axis=1)  # (B, P, hidden)
        x = self.dense(x)
        x = keras.activations.gelu(x, approximate=self.activation == "gelu_approximate")
        x = self.norm(x)
        logits = self.token_embedding(x, reverse=True)  # (B, P, V) float32
        return bias_add(logits, self.bias, training)

    def compute_output_spec(self, hidden, mask_positions):
        shape = (*mask_positions.shape, self.token_embedding.vocabulary_size)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"activation": self.activation,
                       "layer_norm_epsilon": self.layer_norm_epsilon})
        return config
