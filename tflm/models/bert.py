"""BertPretrainer: a bidirectional backbone + masked-LM head (+ NSP / SOP pair head)."""

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.layers.masked_lm_head import MaskedLMHead
from tflm.models.backbone import BackboneTask, build_backbone
from tflm.models.flops import flops_per_token
from tflm.models.losses import TokenCrossEntropy
from tflm.models.metrics import Perplexity, TokenAccuracy

PAIR_TASKS = ("nsp", "sop", "none")


@keras.saving.register_keras_serializable(package="tflm")
class BertPretrainer(BackboneTask):
    """BERT / ALBERT-style pre-training: the task of the `masked_lm` objective.

    The masked-LM head (dense + GELU + layer norm + the tied token table + bias) runs only
    at the masked positions. With `pair_task` "nsp" (BERT: is B the next segment?) or
    "sop" (ALBERT: are A and B in order?), a pooler (dense + tanh on the backbone's
    pooled first token) and a 2-way classifier add the pair prediction.

    Args:
        backbone: a bidirectional `TransformerBackbone` or its arguments (BERT:
            `causal=False`, `num_segments=2`, `pooling="first"` or "auto").
        pair_task: "nsp", "sop" or "none" (masked LM only).

    Call args:
        inputs: `{"token_ids", "padding_mask", "segment_ids": int (B, T),
            "mask_positions": int (B, P)}` (`segment_ids` may be left out).

    Returns:
        `{"mlm": (B, P, V) float32 logits at the masked positions, "pair": (B, 2)
        float32 logits}` ("pair" only with a pair task).

    Training batches: `y = {"mlm": masked ids (B, P), "pair": labels (B,)}` with
    `sample_weight = {"mlm": mask weights (B, P), "pair": ones (B,)}`; compile with
    `default_loss()` (the summed losses) and `weighted_metrics=default_metrics()`.

    Raises:
        ConfigError: a causal backbone (masked tokens must see both sides) or an unknown
            pair_task.
    """

    # The loss sums the masked-LM and pair losses: perplexity comes from the MLM logits.
    perplexity_from_loss = False

    def __init__(self, backbone, pair_task: str = "nsp", **kwargs):
        super().__init__(**kwargs)
        if pair_task not in PAIR_TASKS:
            raise ConfigError(f"config.model.pair_task {pair_task!r} is not one of "
                              f"{PAIR_TASKS}.")
        self.backbone = build_backbone(backbone, dtype=self.dtype_policy)
        if self.backbone.causal:
            raise ConfigError(
                "BertPretrainer (objective 'masked_lm') needs a bidirectional backbone: set "
                "config.model.backbone.causal=False (a causal model cannot see the words "
                "after a mask)."
            )
        self.pair_task = pair_task
        hidden = self.backbone.hidden_dim
        self.mlm_head = MaskedLMHead(
            self.backbone.embedding, activation=self.backbone.activation,
            layer_norm_epsilon=self.backbone.layer_norm_epsilon, name="mlm_head",
            dtype=self.dtype_policy)
        self.mlm_head.build((None, None, hidden))
        self.pooler = self.pair_head = None
        if pair_task != "none":
            self.pooler = keras.layers.Dense(hidden, activation="tanh", name="pooler",
                                             dtype=self.dtype_policy)
            self.pooler.build((None, hidden))
            self.pair_head = keras.layers.Dense(2, name="pair_head", dtype=self.dtype_policy)
            self.pair_head.build((None, hidden))
        self.built = True

    def call(self, inputs, training=None):
        features = {k: v for k, v in inputs.items() if k != "mask_positions"}
        outputs = self.backbone(features, training=training)
        logits = {"mlm": self.mlm_head(outputs["sequence_output"], inputs["mask_positions"])}
        if self.pair_head is not None:
            pooled = self.pooler(outputs["pooled_output"])  # (B, hidden)
            logits["pair"] = ops.cast(self.pair_head(pooled), "float32")  # (B, 2)
        return logits

    def compute_output_spec(self, inputs, training=None):
        batch, predictions = inputs["mask_positions"].shape
        spec = {"mlm": keras.KerasTensor((batch, predictions, self.vocabulary_size), "float32")}
        if self.pair_head is not None:
            spec["pair"] = keras.KerasTensor((batch, 2), "float32")
        return spec

    def flops_per_token(self, data_config) -> int:
        """Training FLOPs per token: the encoder at every position, the MLM head at
        `data_config.max_predictions` of `data_config.seq_len` positions, the pooler
        and pair head once per sequence."""
        b, seq = self.backbone, data_config.seq_len
        encoder = flops_per_token(b.num_layers, b.hidden_dim, b.intermediate_dim, seq, 0)
        head = 6 * (b.hidden_dim * b.hidden_dim + b.hidden_dim * b.vocabulary_size)
        pair = 6 * (b.hidden_dim * b.hidden_dim + 2 * b.hidden_dim) if self.pair_head else 0
        return encoder + (head * data_config.max_predictions + pair) // seq

    def default_loss(self):
        """The masked-LM cross-entropy (mean over masks with weight 1) + the pair loss."""
        loss = {"mlm": TokenCrossEntropy()}
        if self.pair_head is not None:
            loss["pair"] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return loss

    def default_metrics(self):
        """`weighted_metrics`: masked-token accuracy and perplexity, pair accuracy."""
        metrics = {"mlm": [TokenAccuracy(name="accuracy"),
                           Perplexity(name="perplexity")]}
        if self.pair_head is not None:
            metrics["pair"] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        return metrics

    def get_config(self):
        config = super().get_config()
        config["pair_task"] = self.pair_task
        return config

