"""GPT: a causal language model = TransformerBackbone + LM head (tied to the token table)."""

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.models.backbone import BackboneTask, build_backbone
from tflm.models.flops import flops_per_token
from tflm.models.lm_head_loss import DEFAULT_CHUNK, lm_head_cross_entropy
from tflm.models.losses import TokenCrossEntropy
from tflm.models.metrics import Perplexity, TokenAccuracy


@keras.saving.register_keras_serializable(package="tflm")
class GPT(BackboneTask):
    """A decoder-only language model: the task of the `causal_lm` objective.

    `GPT(backbone=TransformerBackbone(...), tie_embeddings=True)`, or `GPT(**config.model)`
    (`config.model.backbone` holds the backbone's constructor arguments, the head's sit
    beside it). The LM head is the transposed token embedding when `tie_embeddings`
    (GPT-2), else a Dense layer. Logits are float32 under mixed precision.

    Args:
        backbone: a causal `TransformerBackbone` (e.g. pre-trained, from
            `tflm.model_dir.load_backbone`) or a dict of its arguments.
        tie_embeddings: the LM head reuses the token table.

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

    Raises:
        ConfigError: a bidirectional backbone (every next-token label would be visible).
    """

    # The compiled loss is the token-weighted mean cross-entropy: exp of its running
    # mean is the perplexity (``tflm.training.TrainingModel`` logs it from the loss).
    perplexity_from_loss = True

    def __init__(self, backbone, tie_embeddings: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.backbone = build_backbone(backbone, dtype=self.dtype_policy)
        if not self.backbone.causal:
            raise ConfigError(
                "GPT (objective 'causal_lm') predicts the next token and needs a causal "
                "backbone: with config.model.backbone.causal=False every label is visible "
                "to the model. Set causal=True, or train a bidirectional model with a "
                "masked-LM objective."
            )
        self.tie_embeddings = tie_embeddings
        self.lm_head = None
        if not tie_embeddings:
            self.lm_head = keras.layers.Dense(
                self.vocabulary_size, use_bias=False, name="lm_head", dtype=self.dtype_policy
            )
            self.lm_head.build((None, None, self.backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        hidden = self.backbone(inputs, training=training)["sequence_output"]  # (B, T, hidden)
        return self.logits(hidden)

    def logits(self, hidden):
        """(B, T, hidden) hidden states -> (B, T, V) float32 logits."""
        if self.lm_head is None:
            return self.backbone.embedding(hidden, reverse=True)
        return ops.cast(self.lm_head(hidden), "float32")

    def fused_loss(self, x, y, sample_weight=None, chunk_size: int = DEFAULT_CHUNK,
                   training=None):
        """`(loss, correct)` of a batch through the fused, chunked LM head and loss.

        The same loss as `default_loss()` on `self(x)` (its weighted mean) and its exact
        gradients, without the (B, T, V) logits (`tflm.models.lm_head_loss`); `correct`
        (B, T) are the flags `TokenAccuracy` takes. `TrainingModel` trains with this when
        `config.train.fused_head_chunk` > 0.
        """
        hidden = self.backbone(x, training=training)["sequence_output"]  # (B, T, hidden)
        if self.lm_head is None:
            embedding = self.backbone.embedding
            table = ops.cast(embedding.token_embeddings, embedding.compute_dtype)  # (V, h)
        else:
            table = ops.transpose(ops.cast(self.lm_head.kernel, self.lm_head.compute_dtype))
        return lm_head_cross_entropy(
            ops.cast(hidden, table.dtype), table, y, sample_weight, chunk_size=chunk_size,
            with_gradient=bool(training),
        )

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

    def flops_per_token(self, data_config) -> int:
        """Training FLOPs per token at `data_config.seq_len` (for MFU)."""
        b = self.backbone
        return flops_per_token(b.num_layers, b.hidden_dim, b.intermediate_dim,
                               data_config.seq_len, b.vocabulary_size)

    @staticmethod
    def default_loss():
        """Token cross-entropy averaged over the labels whose sample_weight is 1."""
        return TokenCrossEntropy()

    @staticmethod
    def default_metrics():
        """`weighted_metrics` to compile with: next-token accuracy and perplexity."""
        return [TokenAccuracy(name="accuracy"), Perplexity(name="perplexity")]

    def get_config(self):
        config = super().get_config()
        config["tie_embeddings"] = self.tie_embeddings
        return config

