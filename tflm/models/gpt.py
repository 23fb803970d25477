"""GPT: a causal language model = TransformerBackbone + LM head (tied to the token table)."""

import keras
from keras import ops

from tflm.models.backbone import TransformerBackbone
from tflm.models.losses import TokenCrossEntropy
from tflm.models.metrics import Perplexity


@keras.saving.register_keras_serializable(package="tflm")
class GPT(keras.Model):
    """A decoder-only language model; the constructor takes exactly `config.model`.

    `GPT(**config.model)` builds the backbone (`self.backbone`) and an LM head: the
    transposed token embedding when `tie_embeddings` (GPT-2), else a Dense layer.
    Logits are float32 under mixed precision.

    Args: those of `TransformerBackbone`, plus `tie_embeddings`.

    Call args:
        inputs: `{"token_ids": int (B, T), "padding_mask": int/bool (B, T)}`
            (`padding_mask` may be left out: all tokens real).
        training: enables dropout.

    Returns:
        logits (B, T, vocabulary_size) float32.

    Training batches are `(x, y, sample_weight)`: `x` as above, `y` next-token ids (B, T),
    `sample_weight` 1 on real labels; compile with `loss=default_loss()` and
    `weighted_metrics=default_metrics()` (as `weighted_metrics`: Keras gives plain
    `metrics` no sample weights, so padded labels would count).
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
        tie_embeddings: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        self.tie_embeddings = tie_embeddings
        self.backbone = TransformerBackbone(
            vocabulary_size, num_layers, hidden_dim, num_heads, intermediate_dim,
            max_sequence_length, dropout=dropout, causal=causal, norm_first=norm_first,
            activation=activation, position_embedding=position_embedding,
            layer_norm_epsilon=layer_norm_epsilon, use_bias=use_bias,
            name="backbone", dtype=self.dtype_policy,
        )
        self.lm_head = None
        if not tie_embeddings:
            self.lm_head = keras.layers.Dense(
                vocabulary_size, use_bias=False, name="lm_head", dtype=self.dtype_policy
            )
            self.lm_head.build((None, None, hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        if "padding_mask" not in inputs:
            inputs = dict(inputs, padding_mask=ops.ones_like(inputs["token_ids"]))
        hidden = self.backbone(inputs, training=training)  # (B, T, hidden)
        return self.logits(hidden)

    def logits(self, hidden):
        """(B, T, hidden) hidden states -> (B, T, V) float32 logits."""
        if self.lm_head is None:
            return self.backbone.embedding(hidden, reverse=True)
        return ops.cast(self.lm_head(hidden), "float32")

    def init_cache(self, batch: int, length: int):
        """Zeros (batch, num_layers, 2, length, num_heads, head_dim); see the backbone."""
        return self.backbone.init_cache(batch, length)

    def call_with_cache(
        self, token_ids, cache, cache_index, cache_mask=None, position_ids=None
    ):
        """`(logits (B, T, V) float32, cache)`; arguments as `TransformerBackbone`'s."""
        hidden, cache = self.backbone.call_with_cache(
            token_ids, cache, cache_index, cache_mask=cache_mask, position_ids=position_ids
        )
        return self.logits(hidden), cache

    def compute_output_spec(self, inputs, training=None):
        shape = tuple(inputs["token_ids"].shape) + (self.vocabulary_size,)
        return keras.KerasTensor(shape, dtype="float32")

    @staticmethod
    def default_loss():
        """Token cross-entropy averaged over the labels whose sample_weight is 1."""
        return TokenCrossEntropy()

    @staticmethod
    def default_metrics():
        """`weighted_metrics` to compile with: next-token accuracy and perplexity."""
        return [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            Perplexity(name="perplexity"),
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
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
                "tie_embeddings": self.tie_embeddings,
            }
        )
        return config
