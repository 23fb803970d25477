"""Fine-tuning heads on a (pre-trained) backbone: sequence classification, regression and
token classification.

Each is a small head on the backbone's outputs: dropout + one Dense, on the pooled output
(`pooling` of the backbone: first token for an encoder, last real token for a decoder,
or mean) for a whole sequence, on every position's hidden state for tokens. Labels are
the class names in index order (`config.model.labels`, read from the training file by
the objective's `configure` hook), so a model directory knows what its classes mean.
"""

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.layers.dropout import Dropout
from tflm.models.backbone import BackboneTask, build_backbone
from tflm.models.flops import flops_per_token


class _Head(BackboneTask):
    """Backbone + dropout + Dense(`units`); subclasses pick the input and the loss."""

    perplexity_from_loss = False

    def __init__(self, backbone, units: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.backbone = build_backbone(backbone, dtype=self.dtype_policy)
        self.dropout = float(dropout)
        self.head_dropout = Dropout(self.dropout, name="head_dropout",
                                                 dtype=self.dtype_policy)
        self.head = keras.layers.Dense(units, name="head", dtype=self.dtype_policy)
        self.head.build((None, self.backbone.hidden_dim))
        self.built = True

    def _features(self, inputs):
        return {k: v for k, v in inputs.items()
                if k in ("token_ids", "padding_mask", "segment_ids")}

    def flops_per_token(self, data_config) -> int:
        """Training FLOPs per token: the encoder at every position (the head is noise)."""
        b = self.backbone
        return flops_per_token(b.num_layers, b.hidden_dim, b.intermediate_dim,
                               data_config.seq_len, 0)

    def get_config(self):
        config = super().get_config()
        config["dropout"] = self.dropout
        return config


def _check_labels(labels, what: str) -> tuple:
    labels = tuple(str(label) for label in labels)
    if len(labels) < 2:
        raise ConfigError(
            f"{what} needs at least 2 labels in config.model.labels, got {list(labels)}; "
            "leave it empty to read the labels from config.data.train."
        )
    if len(set(labels)) != len(labels):
        raise ConfigError(f"config.model.labels has duplicates: {list(labels)}.")
    return labels


class _LabelledHead(_Head):
    """`_Head` with one logit per label, trained with sparse cross-entropy."""

    def __init__(self, backbone, labels=(), dropout: float = 0.1, **kwargs):
        self.labels = _check_labels(labels, type(self).__name__)
        super().__init__(backbone, len(self.labels), dropout, **kwargs)

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def default_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def get_config(self):
        return {**super().get_config(), "labels": list(self.labels)}


@keras.saving.register_keras_serializable(package="tflm")
class SequenceClassifier(_LabelledHead):
    """Text (or text pair) classification: the `classification` objective's task.

    Args:
        backbone: a `TransformerBackbone` (usually pre-trained: `config.init_from`) or
            its arguments; its `pooling` picks the vector that is classified.
        labels: the class names, class i = `labels[i]` (>= 2).
        dropout: dropout before the classifier.

    Call args:
        inputs: `{"token_ids", "padding_mask"[, "segment_ids"]}` int (B, T).

    Returns:
        (B, len(labels)) float32 logits. Training batches: `y` int (B,) class indices.
    """

    def call(self, inputs, training=None):
        pooled = self.backbone(self._features(inputs), training=training)["pooled_output"]
        return ops.cast(self.head(self.head_dropout(pooled, training=training)), "float32")

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs["token_ids"].shape[0], len(self.labels)), "float32")


@keras.saving.register_keras_serializable(package="tflm")
class SequenceRegressor(_Head):
    """Text (or text pair) regression, e.g. STS-B similarity scores: the `regression`
    objective's task.

    Args:
        backbone, dropout: as `SequenceClassifier`.

    Returns:
        (B,) float32 predictions. Training batches: `y` float32 (B,) targets.
    """

    def __init__(self, backbone, dropout: float = 0.1, **kwargs):
        super().__init__(backbone, 1, dropout, **kwargs)

    def call(self, inputs, training=None):
        pooled = self.backbone(self._features(inputs), training=training)["pooled_output"]
        out = self.head(self.head_dropout(pooled, training=training))  # (B, 1)
        return ops.cast(out[:, 0], "float32")

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs["token_ids"].shape[0],), "float32")

    def default_loss(self):
        return keras.losses.MeanSquaredError()

    def default_metrics(self):
        return [keras.metrics.MeanAbsoluteError(name="mae")]


@keras.saving.register_keras_serializable(package="tflm")
class TokenClassifier(_LabelledHead):
    """Per-token labels (named entities, part of speech): the `token_classification`
    objective's task.

    Words are split into pieces by the tokenizer; a word's label is predicted at its
    first piece (the pipeline gives the other pieces weight 0).

    Args:
        backbone, dropout: as `SequenceClassifier`.
        labels: the tag names, tag i = `labels[i]` (>= 2).

    Returns:
        (B, T, len(labels)) float32 logits. Training batches: `y` int (B, T) tag indices,
        `sample_weight` (B, T) 1 at each word's first piece.
    """

    def call(self, inputs, training=None):
        hidden = self.backbone(self._features(inputs), training=training)["sequence_output"]
        return ops.cast(self.head(self.head_dropout(hidden, training=training)), "float32")

    def compute_output_spec(self, inputs, training=None):
        batch, seq = inputs["token_ids"].shape
        return keras.KerasTensor((batch, seq, len(self.labels)), "float32")
