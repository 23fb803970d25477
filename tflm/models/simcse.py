"""SimCSE: contrastive sentence embeddings (Gao et al., 2021), the `simcse` objective's task.

Each example is an anchor sentence, a positive and optionally a hard negative. The
model embeds every view with the backbone (its `pooled_output`) and, while training, a
projection MLP (Dense + tanh, SimCSE's); `ContrastiveLoss` is InfoNCE over the cosine
similarities / temperature: anchor i must pick its own positive among the positives
(and hard negatives) of the whole batch. Unsupervised SimCSE feeds each sentence as its
own positive: the two views differ only by dropout.

The batch is the global one: the loss's `gather` (identity here, keras.ops only) is
replaced by a cross-replica gather when `tflm.training.TrainingModel` compiles it
(`tflm.training.replicas`), so in-batch negatives span all replicas with exact
gradients.
"""

import keras
from keras import ops

from tflm.errors import ConfigError
from tflm.models.backbone import BackboneTask, build_backbone
from tflm.models.flops import flops_per_token

VIEWS = ("anchor", "positive", "negative")
EPSILON = 1e-12  # squared-norm floor of the L2 normalisation


def no_gather(rows):
    """The one-device gather: `(rows, 0)` (see `tflm.training.replicas.gather`)."""
    return rows, 0


def contrastive_logits(embeddings, gather=no_gather, temperature: float = 1.0):
    """Cosine similarities / temperature of each anchor to every candidate, and the
    column of its positive.

    Args:
        embeddings: (B, V, H) float: view 0 the anchors, 1 the positives, 2 (if V = 3)
            the hard negatives.
        gather: `rows (B, ...) -> (rows of the global batch (N, ...), index of the
            first local row)`.
        temperature: the similarities are divided by it.

    Returns:
        `(logits (B, (V - 1) * N) float32, labels (B,) int32)`: columns are the N
        positives, then the N hard negatives; anchor i's positive is column `labels[i]`.
    """
    embeddings = ops.cast(embeddings, "float32")
    squared = ops.sum(ops.square(embeddings), axis=-1, keepdims=True)  # (B, V, 1)
    unit = embeddings / ops.sqrt(ops.maximum(squared, EPSILON))  # (B, V, H)
    candidates, start = gather(unit[:, 1:])  # (N, V - 1, H)
    hidden = ops.shape(unit)[-1]
    candidates = ops.reshape(ops.transpose(candidates, (1, 0, 2)), (-1, hidden))
    logits = ops.matmul(unit[:, 0], ops.transpose(candidates)) / temperature  # (B, C)
    labels = ops.cast(start, "int32") + ops.arange(ops.shape(unit)[0], dtype="int32")
    return logits, labels


@keras.saving.register_keras_serializable(package="tflm")
class ContrastiveLoss(keras.losses.Loss):
    """InfoNCE with in-batch negatives: per anchor, the cross-entropy of picking its
    positive among all candidates (`contrastive_logits`); mean over the anchors.

    `y_true` is not read (the pipelines pass zeros). `gather` is the function that
    collects the candidates of the global batch (default: this batch only).

    Args:
        temperature: the similarities are divided by it (SimCSE: 0.05).
    """

    def __init__(self, temperature: float = 0.05, name: str = "contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)
        self.gather = no_gather

    def call(self, y_true, y_pred):
        logits, labels = contrastive_logits(y_pred, self.gather, self.temperature)
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tflm")
class ContrastiveAccuracy(keras.metrics.Mean):
    """How often an anchor's most similar candidate is its own positive (in-batch top-1
    over the global batch, with `gather` as `ContrastiveLoss`)."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.gather = no_gather

    def update_state(self, y_true, y_pred, sample_weight=None):
        logits, labels = contrastive_logits(y_pred, self.gather)
        hits = ops.cast(ops.equal(ops.argmax(logits, axis=-1), labels), "float32")  # (B,)
        return super().update_state(hits, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="tflm")
class SimCSE(BackboneTask):
    """Contrastive sentence embeddings: the `simcse` objective's task.

    Args:
        backbone: a `TransformerBackbone` (usually pre-trained: `config.init_from`) or its
            arguments; its `pooling` picks the sentence vector (SimCSE: "first", [CLS]).
        temperature: of the InfoNCE loss (`default_loss`), > 0.
        projection: add SimCSE's projection MLP (Dense + tanh) on the pooled vector while
            training; the embeddings used afterwards are the pooled vectors without it.
        normalize: the embeddings used afterwards (`tflm.load(dir).embed`, the exported
            `embed`) are L2-normalised; False keeps their lengths (an imported
            sentence-transformers model without a Normalize module). Training is cosine
            based either way.

    Call args:
        inputs: `{"anchor": v, "positive": v[, "negative": v]}`, each view `v =
            {"token_ids", "padding_mask"[, "segment_ids"]}` int (B, T), the same keys
            and T in every view (they run through the backbone as one batch).
        training: dropout on, and the projection applied.

    Returns:
        (B, V, hidden) float32: the embedding of each view, in the order anchor,
        positive, negative. Training batches: `y` is not read (zeros).

    Raises:
        ConfigError: a temperature <= 0.
    """

    perplexity_from_loss = False

    def __init__(self, backbone, temperature: float = 0.05, projection: bool = True,
                 normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ConfigError(f"config.model.temperature must be > 0, got {temperature}.")
        self.backbone = build_backbone(backbone, dtype=self.dtype_policy)
        self.temperature = float(temperature)
        self.projection = bool(projection)
        self.normalize = bool(normalize)
        self.projection_head = None
        if self.projection:
            hidden = self.backbone.hidden_dim
            self.projection_head = keras.layers.Dense(
                hidden, activation="tanh", name="projection", dtype=self.dtype_policy)
            self.projection_head.build((None, hidden))
        self.built = True

    def _views(self, inputs) -> list:
        missing = [v for v in VIEWS[:2] if v not in inputs]
        if missing:
            raise ValueError(f"SimCSE takes {{'anchor': ..., 'positive': ...[, 'negative': "
                             f"...]}} views; {', '.join(missing)} missing (got "
                             f"{sorted(inputs)}).")
        return [inputs[v] for v in VIEWS if v in inputs]

    def call(self, inputs, training=None):
        views = self._views(inputs)
        batch = ops.shape(views[0]["token_ids"])[0]
        features = {key: ops.concatenate([view[key] for view in views], axis=0)
                    for key in views[0]}  # (V * B, T)
        pooled = self.backbone(features, training=training)["pooled_output"]  # (V * B, H)
        if training and self.projection_head is not None:
            pooled = self.projection_head(pooled)
        pooled = ops.reshape(ops.cast(pooled, "float32"),
                             (len(views), batch, self.backbone.hidden_dim))
        return ops.transpose(pooled, (1, 0, 2))  # (B, V, H)

    def compute_output_spec(self, inputs, training=None):
        views = self._views(inputs)
        batch = views[0]["token_ids"].shape[0]
        return keras.KerasTensor((batch, len(views), self.backbone.hidden_dim), "float32")

    def default_loss(self):
        return ContrastiveLoss(self.temperature)

    def default_metrics(self):
        return [ContrastiveAccuracy(name="accuracy")]

    def flops_per_token(self, data_config) -> int:
        """Training FLOPs per token of `data_config.seq_len`: the encoder (and the
        projection once per sequence) for each view: 3 with a supervised file of 3
        `columns` (`data_config.train`), else 2. The similarity matrix is left out."""
        b, seq = self.backbone, data_config.seq_len
        supervised = bool(data_config.get("train")) and len(data_config.get("columns", ())) == 3
        views = 3 if supervised else 2
        encoder = flops_per_token(b.num_layers, b.hidden_dim, b.intermediate_dim, seq, 0)
        head = 6 * b.hidden_dim * b.hidden_dim // seq if self.projection else 0
        return views * (encoder + head)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "projection": self.projection, "normalize": self.normalize}
