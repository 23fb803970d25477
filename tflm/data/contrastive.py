"""Contrastive sentence pairs for SimCSE.

Unsupervised: every sentence is its own positive (the two views differ only by dropout in
the model). Supervised: (anchor, positive[, hard negative]) rows of a TSV / CSV / JSONL
file, e.g. SimCSE's NLI triples. Batches are a deterministic function of `(seed, step)`.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tflm.data import step_stream
from tflm.data.blocks import cache_arrays
from tflm.data.encoding import pack_single, tokenize
from tflm.data.text_files import read_columns
from tflm.errors import DataError


def unsupervised_contrastive_dataset(
    source,
    seq_len: int,
    batch_size: int,
    seed: int,
    tokenizer=None,
    cls_id: int | None = None,
    sep_id: int | None = None,
    pad_id: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Endless batches of sentences paired with themselves.

    Args:
        source: a list of strings (tokenized in-graph with `tokenizer`) or a token cache
            (`ids`, `offsets`; each document is one sentence).
        tokenizer: `tokenize(strings) -> RaggedTensor`; needed for a list of strings.
        cls_id, sep_id: added around each sentence unless None; sentences are truncated
            to fit `seq_len`.
        Other arguments as `causal_lm_dataset`.

    Returns:
        `tf.data.Dataset` of `x = {"anchor": v, "positive": v}` with `v = {"token_ids",
        "padding_mask"}` int32 (B, seq_len); both views are the same tokens.
    """
    if isinstance(source, (list, tuple)):
        if tokenizer is None:
            raise DataError("a list of sentences needs a tokenizer; pass tokenizer=...")
        strings = tf.constant(list(source), tf.string)
        count = len(source)

        def lookup(idx):
            return tokenize(tokenizer, tf.gather(strings, idx))
    else:
        ids, offsets = cache_arrays(source, "train")
        ids_table = tf.constant(ids)
        starts, lengths = tf.constant(offsets[:-1]), tf.constant(np.diff(offsets))
        count = len(offsets) - 1

        def lookup(idx):
            start = tf.gather(starts, idx)
            return tf.gather(ids_table, tf.ragged.range(start, start + tf.gather(lengths, idx)))

    def make_batch(step, row_start, idx):
        view = pack_single(lookup(idx), seq_len, cls_id, sep_id, pad_id)
        return {"anchor": view, "positive": view}

    return step_stream.training_stream(
        count, batch_size, seed, start_step, input_context, make_batch,
        deterministic,
    )


def supervised_contrastive_dataset(
    path: str,
    tokenizer,
    seq_len: int,
    batch_size: int,
    seed: int,
    columns: Sequence[str] = ("anchor", "positive", "negative"),
    cls_id: int | None = None,
    sep_id: int | None = None,
    pad_id: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Endless batches of (anchor, positive[, hard negative]) rows of a file.

    Args:
        path: a `.tsv` / `.csv` file with a header row or a `.jsonl` file.
        columns: 2 or 3 column names: anchor, positive and optionally hard negative
            (SimCSE's NLI file uses `("sent0", "sent1", "hard_neg")`).
        Other arguments as `unsupervised_contrastive_dataset`.

    Returns:
        `tf.data.Dataset` of `x = {"anchor": v, "positive": v[, "negative": v]}`, `v =
        {"token_ids", "padding_mask"}` int32 (B, seq_len).

    Raises:
        DataError: missing file or column, malformed line (naming file and line).
    """
    if len(columns) not in (2, 3):
        raise DataError(
            f"columns must name anchor, positive and optionally negative, got {columns!r}."
        )
    values, _ = read_columns(path, columns)
    roles = ("anchor", "positive", "negative")[: len(columns)]
    tables = {role: tf.constant(values[c], tf.string) for role, c in zip(roles, columns)}

    def make_batch(step, row_start, idx):
        return {
            role: pack_single(
                tokenize(tokenizer, tf.gather(t, idx)), seq_len, cls_id, sep_id, pad_id
            )
            for role, t in tables.items()
        }

    return step_stream.training_stream(
        len(values[columns[0]]), batch_size, seed, start_step, input_context, make_batch,
        deterministic,
    )
