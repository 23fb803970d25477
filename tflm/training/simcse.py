"""The `simcse` objective's hooks: what `tflm.load` returns, the pooling it fixes, and the
similarity score it is judged by.

SimCSE is judged by the Spearman correlation between the cosine of two sentences'
embeddings and a gold similarity (STS-B and the like). With
``config.data.similarity_validation`` (a TSV / CSV / JSONL file of sentence pairs and
scores, columns ``config.data.similarity_columns``), :class:`SimilarityScores` embeds
the pairs at every validation exactly as ``tflm.load(model_dir).embed`` will (a
``tflm.generation.SentenceEncoder`` on the task's backbone) and adds ``val_spearman``
and ``val_pearson`` to the logs (the summary's ``validation_spearman``, and the
starting encoder's as ``initial_validation_spearman``).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from tflm.data.text_files import read_columns
from tflm.errors import DataError
from tflm.training.task_metrics import pearson, spearman
from tflm.training.validation_scores import ScoresCallback


def configure_pooling(config) -> dict:
    """The `simcse` objective's `configure` hook: `model.backbone.pooling` "auto" becomes
    what `SentenceEncoder` embeds an "auto" model with ("mean"), so the model trains
    with the pooling it is used with."""
    from tflm.generation.embedding import sentence_pooling

    return {"model.backbone.pooling": sentence_pooling(config.model.backbone.pooling)}


def read_similarity_pairs(path: str, columns) -> tuple[list[str], list[str], np.ndarray]:
    """`(first sentences, second sentences, gold scores float32 (N,))` of a file.

    Args:
        path: `.tsv` / `.csv` (header row) or `.jsonl`.
        columns: the first sentence's, the second's and the score's column names.

    Raises:
        DataError: a missing file or column, a score that is not a number (naming the
            line), fewer than 2 pairs, or not 3 column names.
    """
    columns = tuple(columns)
    if len(columns) != 3:
        raise DataError(f"config.data.similarity_columns must name the two sentences and "
                        f"the score, got {columns!r}.")
    values, lines = read_columns(path, columns)
    scores = []
    for value, line in zip(values[columns[2]], lines):
        try:
            scores.append(float(value))
        except ValueError:
            raise DataError(f"{path}:{line}: column {columns[2]!r} holds {value!r}, not a "
                            "number; the similarity file needs a gold score per pair.") from None
    if len(scores) < 2:
        raise DataError(f"{path}: {len(scores)} pair; a correlation needs at least 2.")
    return values[columns[0]], values[columns[1]], np.array(scores, np.float32)


def similarity_scores(encoder, first, second, gold) -> dict[str, float]:
    """`{"spearman", "pearson"}` of the cosine of each pair's embeddings with `gold`."""
    cosine = encoder.similarity(list(first), list(second))
    return {"spearman": spearman(cosine, gold), "pearson": pearson(cosine, gold)}


class SimilarityScores(ScoresCallback):
    """Adds ``val_spearman`` / ``val_pearson`` (see the module doc) to the logs of every
    epoch Keras validated (whose logs hold ``val_loss``), logs one absl line and, with
    ``log_dir``, writes TensorBoard scalars ``epoch_spearman`` / ``epoch_pearson`` in
    ``<log_dir>/validation`` at the optimizer's step.

    Args:
        encoder: a ``SentenceEncoder`` on the trained backbone (it sees the weights as
            they train).
        pairs: ``(first, second, gold)`` from :func:`read_similarity_pairs`.
        log_dir: the TensorBoard directory, or None.
        initial: also score the starting weights when training begins
            (``summary_fields``: ``initial_validation_spearman`` / ``_pearson``).
    """

    label = "Similarity scores"

    def __init__(self, encoder, pairs, log_dir: str | None = None, initial: bool = True):
        super().__init__(log_dir)
        self.encoder = encoder
        self.pairs = pairs
        self.initial = initial
        self.initial_scores: dict[str, float] = {}

    def evaluate(self) -> dict[str, float]:
        """The scores of the encoder's current weights."""
        return similarity_scores(self.encoder, *self.pairs)

    def on_train_begin(self, logs=None):
        if self.initial and not self.initial_scores:
            self.initial_scores = self.evaluate()
            logging.info("Similarity scores at the start: %s", _format(self.initial_scores))

    def scores(self) -> dict[str, float]:
        return self.evaluate()

    def summary_fields(self) -> dict[str, float]:
        return {f"initial_validation_{name}": value
                for name, value in self.initial_scores.items()}


def _format(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in values.items())


def simcse_callbacks(task, context) -> list:
    """The `simcse` objective's callbacks: :class:`SimilarityScores` when
    ``config.data.similarity_validation`` names a file, else none."""
    d = context.config.data
    if not d.similarity_validation:
        return []
    pairs = read_similarity_pairs(os.path.expanduser(d.similarity_validation),
                                  d.similarity_columns)
    from tflm.generation.embedding import task_encoder

    encoder = task_encoder(task, context.tokenizer, context.config)
    return [SimilarityScores(encoder, pairs, log_dir=context.log_dir,
                             initial=context.fresh_start)]
