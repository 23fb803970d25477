"""The unigram baseline: the perplexity a model knowing only token frequencies reaches.

A language model that has learnt anything about context must beat it; the trainer
reports it next to the model's validation perplexity.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_CHUNK = 2**22  # token ids counted at a time


def unigram_log_probs(ids: np.ndarray, num_documents: int, vocabulary_size: int,
                      eos_id: int | None) -> np.ndarray:
    """Add-one smoothed log p(token), float64 (vocabulary_size,).

    Counts ``ids`` plus one end-of-text token per document (the causal pipeline appends
    ``eos_id`` after each document, so the model is asked to predict it too).
    """
    counts = np.zeros(vocabulary_size, np.float64)
    for start in range(0, len(ids), _CHUNK):  # a chunk at a time: ids may be a whole corpus
        chunk = np.bincount(np.asarray(ids[start : start + _CHUNK], np.int64),
                            minlength=vocabulary_size)
        counts += chunk[:vocabulary_size]
    if eos_id is not None:
        counts[eos_id] += num_documents
    return np.log((counts + 1.0) / (counts.sum() + vocabulary_size))


def unigram_perplexity(train_cache, dataset: tf.data.Dataset, vocabulary_size: int,
                       eos_id: int | None) -> float:
    """exp(mean -log p_unigram(label)) over the weighted labels of ``dataset``.

    Args:
        train_cache: the train split's token cache (``ids``, ``offsets``): the counts.
        dataset: ``(x, y, sample_weight)`` batches, e.g. the validation batches the
            model is evaluated on.
        vocabulary_size: V.
        eos_id: the end-of-text id appended after every document.
    """
    log_probs = unigram_log_probs(train_cache.ids, len(train_cache.offsets) - 1,
                                  vocabulary_size, eos_id)
    total, weight = 0.0, 0.0
    for _, labels, sample_weight in dataset.as_numpy_iterator():
        total -= float(np.sum(log_probs[labels] * sample_weight))
        weight += float(np.sum(sample_weight))
    return float(np.exp(total / weight)) if weight else float("nan")
