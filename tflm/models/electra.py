"""ElectraPretrainer: replaced-token detection (ELECTRA), the task of the `electra` objective.

A small generator (a masked LM) fills the masked positions with tokens sampled from its
logits; the discriminator (the backbone, kept for fine-tuning) predicts for every real
token whether it was replaced. Loss = generator MLM + `discriminator_weight` x the
discriminator's sigmoid cross-entropy (Clark et al. 2020). The randomness of the sample is
an input (`sample_noise`, drawn by the pipeline from `(seed, step)`), so the model is a
pure function of its batch: a resumed run draws the same samples.
"""

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.layers import TransformerBlock
from tflm.layers.masked_lm_head import MaskedLMHead
from tflm.models.backbone import BackboneTask, build_backbone
from tflm.models.flops import flops_per_token
from tflm.models.losses import TokenCrossEntropy
from tflm.models.metrics import TokenAccuracy


def generator_shape(backbone, fraction: float) -> tuple[int, int, int]:
    """The generator's `(hidden_dim, num_heads, intermediate_dim)`: the backbone's times
    `fraction` (at least 1 head), as ELECTRA's `generator_hidden_size`.

    Raises:
        ConfigError: `fraction` outside (0, 1], or a hidden size the heads do not divide.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"config.model.generator_fraction must be in (0, 1], got {fraction}.")
    hidden = max(1, round(backbone.hidden_dim * fraction))
    heads = max(1, round(backbone.num_heads * fraction))
    if hidden % heads:
        raise ConfigError(
            f"config.model.generator_fraction {fraction} gives the generator hidden size "
            f"{hidden} and {heads} heads, which do not divide it; choose a fraction that "
            "keeps hidden_dim * fraction divisible by num_heads * fraction."
        )
    return hidden, heads, max(1, round(backbone.intermediate_dim * fraction))


def sample_from_logits(logits, noise):
    """One categorical draw per row from `softmax(logits)`, by inverting its CDF at `noise`.

    Args:
        logits: (B, P, V) float logits (no gradient flows through the draw).
        noise: (B, P) float uniform in [0, 1).

    Returns:
        (B, P) int32 ids: the first id whose cumulative probability exceeds `noise`.
    """
    logits = ops.stop_gradient(ops.cast(logits, "float32"))
    exp = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))  # (B, P, V)
    cdf = ops.cumsum(exp, axis=-1)  # (B, P, V), unnormalised
    threshold = ops.cast(noise, "float32")[..., None] * cdf[..., -1:]  # (B, P, 1)
    ids = ops.sum(ops.cast(cdf <= threshold, "int32"), axis=-1)  # (B, P)
    return ops.minimum(ids, ops.shape(logits)[-1] - 1)  # rounding can overshoot by one


def replace_at(token_ids, positions, weights, values):
    """`token_ids` with `values` written at `positions` where `weights` > 0.

    Args:
        token_ids: (B, T) int.
        positions: (B, P) int positions, distinct among the slots with weight > 0.
        weights: (B, P) float, 0 on unused slots (their position is ignored).
        values: (B, P) int ids to write.

    Returns:
        (B, T) int32.
    """
    seq = ops.shape(token_ids)[1]
    used = ops.cast(ops.cast(weights, "float32") > 0, "int32")  # (B, P)
    hits = ops.one_hot(ops.cast(positions, "int32"), seq, dtype="int32") * used[..., None]
    written = ops.sum(hits * ops.cast(values, "int32")[..., None], axis=1)  # (B, T)
    return ops.where(ops.max(hits, axis=1) > 0, written, ops.cast(token_ids, "int32"))


def replaced_token_labels(original_ids, rtd):
    """`(labels, logits)` of the discriminator, both (B, T) float32.

    Args:
        original_ids: (B, T) the uncorrupted ids (any number type; ids < 2**24).
        rtd: (B, T, 2) the task's "rtd" output: [..., 0] logits, [..., 1] the ids the
            discriminator saw.

    Returns:
        labels 1.0 exactly where the seen id differs from the original (a sample equal to
        the original counts as original), and the logits.
    """
    seen = ops.cast(rtd[..., 1], "int32")
    labels = ops.cast(ops.not_equal(seen, ops.cast(original_ids, "int32")), "float32")
    return labels, ops.cast(rtd[..., 0], "float32")


@keras.saving.register_keras_serializable(package="tflm")
class ReplacedTokenLoss(keras.losses.Loss):
    """`weight` x sigmoid cross-entropy of replaced-token detection.

    `y_true`: original ids (B, T); `y_pred`: the "rtd" output (B, T, 2) (see
    `replaced_token_labels`). Default reduction: the mean over tokens weighted by
    `sample_weight` (the padding mask: padding is never scored).
    """

    def __init__(self, weight: float = 50.0, name: str = "replaced_token_loss",
                 reduction: str = "mean_with_sample_weight", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.weight = weight

    def call(self, y_true, y_pred):
        labels, logits = replaced_token_labels(y_true, y_pred)
        return self.weight * ops.binary_crossentropy(labels, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


class _ReplacedTokenMetric:
    """Feeds a binary metric the replaced-token labels and sigmoid(logits) of "rtd"."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, logits = replaced_token_labels(y_true, y_pred)
        return super().update_state(labels, ops.sigmoid(logits), sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="tflm")
class ReplacedTokenAccuracy(_ReplacedTokenMetric, keras.metrics.BinaryAccuracy):
    """Share of (weighted) tokens the discriminator classifies right at threshold 0.5."""


@keras.saving.register_keras_serializable(package="tflm")
class ReplacedTokenPrecision(_ReplacedTokenMetric, keras.metrics.Precision):
    """Share of tokens flagged as replaced that were replaced."""


@keras.saving.register_keras_serializable(package="tflm")
class ReplacedTokenRecall(_ReplacedTokenMetric, keras.metrics.Recall):
    """Share of replaced tokens the discriminator flags."""


@keras.saving.register_keras_serializable(package="tflm")
class ElectraPretrainer(BackboneTask):
    """ELECTRA pre-training: generator MLM + discriminator replaced-token detection.

    The generator is an encoder with the backbone's number of layers and
    `generator_fraction` of its hidden size, heads and FFN size (`generator_shape`). It
    shares the discriminator's embeddings (token, position, segment tables and the
    embedding norm) through a projection to its width, and its MLM head
    (`MaskedLMHead`) predicts through the shared token table after a projection back
    to the table's width. Its samples at the masked positions (no gradient) replace the
    masks; the backbone reads that corrupted sequence and a dense + activation + dense
    head scores every token.

    Args:
        backbone: a bidirectional `TransformerBackbone` or its arguments: the
            discriminator, which the model directory keeps for fine-tuning.
        generator_fraction: the generator's size relative to the discriminator, in (0, 1].
        discriminator_weight: lambda, the weight of the discriminator's loss.

    Call args:
        inputs: `{"token_ids": (B, T) int with [MASK] at the masked positions,
            "padding_mask": (B, T), "segment_ids": (B, T) (optional),
            "mask_positions": (B, P) int, "mask_weights": (B, P) float (0 = unused slot),
            "sample_noise": (B, P) float uniform in [0, 1)}`.

    Returns:
        `{"mlm": (B, P, V) float32 generator logits at the masked positions,
        "rtd": (B, T, 2) float32: [..., 0] the discriminator's logit that a token was
        replaced, [..., 1] the token id it saw}`.

    Training batches: `y = {"mlm": masked ids (B, P), "rtd": original ids (B, T)}`,
    `sample_weight = {"mlm": mask weights (B, P), "rtd": padding mask (B, T)}`; compile
    with `default_loss()` and `weighted_metrics=default_metrics()`. The "rtd" loss
    already carries `discriminator_weight`.

    Raises:
        ConfigError: a causal backbone, or a fraction `generator_shape` refuses.
    """

    # The loss adds the discriminator's: no perplexity from it.
    perplexity_from_loss = False

    def __init__(self, backbone, generator_fraction: float = 0.25,
                 discriminator_weight: float = 50.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = build_backbone(backbone, dtype=self.dtype_policy)
        b = self.backbone
        if b.causal:
            raise ConfigError(
                "ElectraPretrainer (objective 'electra') needs a bidirectional backbone: set "
                "config.model.backbone.causal=False."
            )
        self.generator_fraction = generator_fraction
        self.discriminator_weight = discriminator_weight
        hidden, heads, intermediate = generator_shape(b, generator_fraction)
        self.generator_projection = self._dense(hidden, "generator_projection", b.hidden_dim)
        self.generator_blocks = []
        for i in range(b.num_layers):
            block = TransformerBlock(
                heads, intermediate, dropout=b.dropout, norm_first=b.norm_first,
                activation=b.activation, layer_norm_epsilon=b.layer_norm_epsilon,
                use_bias=b.use_bias, rotary=b.position_embedding == "rotary",
                name=f"generator_block_{i}", dtype=self.dtype_policy)
            block.build((None, None, hidden))
            self.generator_blocks.append(block)
        self.generator_norm = None
        if b.norm_first:
            self.generator_norm = keras.layers.LayerNormalization(
                epsilon=b.layer_norm_epsilon, name="generator_norm", dtype=self.dtype_policy)
            self.generator_norm.build((None, None, hidden))
        self.generator_output = self._dense(b.hidden_dim, "generator_output", hidden)
        self.mlm_head = MaskedLMHead(
            b.embedding, activation=b.activation, layer_norm_epsilon=b.layer_norm_epsilon,
            name="mlm_head", dtype=self.dtype_policy)
        self.mlm_head.build((None, None, b.hidden_dim))
        self.discriminator_dense = self._dense(b.hidden_dim, "discriminator_dense",
                                               b.hidden_dim)
        self.discriminator_head = self._dense(1, "discriminator_head", b.hidden_dim)
        self.built = True

    def _dense(self, units: int, name: str, input_dim: int):
        """A built `Dense(units)` on (..., input_dim) inputs."""
        layer = keras.layers.Dense(units, name=name, dtype=self.dtype_policy)
        layer.build((None, None, input_dim))
        return layer

    def generator(self, features, training=None):
        """Generator hidden states (B, T, generator hidden) of `features` (the backbone's
        input dict), on the discriminator's embeddings."""
        x = self.backbone.embed(features["token_ids"], features.get("segment_ids"),
                                training=training)  # (B, T, hidden): the shared tables
        x = self.generator_projection(x)  # (B, T, generator hidden)
        for block in self.generator_blocks:
            x = block(x, padding_mask=features.get("padding_mask"), training=training)
        return x if self.generator_norm is None else self.generator_norm(x)

    def call(self, inputs, training=None):
        features = {k: inputs[k] for k in ("token_ids", "padding_mask", "segment_ids")
                    if inputs.get(k) is not None}
        positions = inputs["mask_positions"]
        hidden = self.generator_output(self.generator(features, training))  # (B, T, hidden)
        mlm = self.mlm_head(hidden, positions)  # (B, P, V) float32
        sampled = sample_from_logits(mlm, inputs["sample_noise"])  # (B, P)
        corrupted = replace_at(features["token_ids"], positions, inputs["mask_weights"],
                               sampled)  # (B, T)
        outputs = self.backbone({**features, "token_ids": corrupted}, training=training)
        x = self.discriminator_dense(outputs["sequence_output"])  # (B, T, hidden)
        x = keras.activations.gelu(x, approximate=self.backbone.activation == "gelu_approximate")
        logits = ops.cast(self.discriminator_head(x), "float32")[..., 0]  # (B, T)
        rtd = ops.stack([logits, ops.cast(corrupted, "float32")], axis=-1)  # (B, T, 2)
        return {"mlm": mlm, "rtd": rtd}

    def compute_output_spec(self, inputs, training=None):
        batch, seq = inputs["token_ids"].shape
        predictions = inputs["mask_positions"].shape[1]
        return {"mlm": keras.KerasTensor((batch, predictions, self.vocabulary_size), "float32"),
                "rtd": keras.KerasTensor((batch, seq, 2), "float32")}

    def flops_per_token(self, data_config) -> int:
        """Training FLOPs per token: both encoders, the generator's two projections and
        the discriminator head at every position, the MLM head at
        `data_config.max_predictions` of `data_config.seq_len` positions (the sampling
        and the embeddings are left out)."""
        b, seq = self.backbone, data_config.seq_len
        hidden, _, intermediate = generator_shape(b, self.generator_fraction)
        discriminator = flops_per_token(b.num_layers, b.hidden_dim, b.intermediate_dim, seq, 0)
        generator = flops_per_token(b.num_layers, hidden, intermediate, seq, 0)
        per_token = 6 * (2 * b.hidden_dim * hidden + b.hidden_dim * b.hidden_dim + b.hidden_dim)
        head = 6 * (b.hidden_dim * b.hidden_dim + b.hidden_dim * b.vocabulary_size)
        return discriminator + generator + per_token + head * data_config.max_predictions // seq

    def default_loss(self):
        """Generator MLM cross-entropy (mean over masks) + lambda x the discriminator's
        sigmoid cross-entropy (mean over real tokens)."""
        return {"mlm": TokenCrossEntropy(),
                "rtd": ReplacedTokenLoss(weight=self.discriminator_weight)}

    def default_metrics(self):
        """`weighted_metrics`: the generator's masked-token accuracy; the discriminator's
        accuracy, precision and recall of "replaced" over real tokens."""
        return {"mlm": [TokenAccuracy(name="accuracy")],
                "rtd": [ReplacedTokenAccuracy(name="accuracy"),
                        ReplacedTokenPrecision(name="precision"),
                        ReplacedTokenRecall(name="recall")]}

    def get_config(self):
        config = super().get_config()
        config.update({"generator_fraction": self.generator_fraction,
                       "discriminator_weight": self.discriminator_weight})
        return config

