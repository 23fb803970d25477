"""Text (or text pair) classification from TSV / CSV / JSONL files, with a label vocabulary.

The label vocabulary is the sorted set of the training file's labels (so it is the same on
every run), saved as `labels.json` beside the model and loaded for evaluation; class `i`
is `labels[i]`.
"""

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tflm.data import step_stream
from tflm.data.encoding import pack_pair_tokens, pack_single, tokenize
from tflm.data.text_files import read_columns
from tflm.errors import DataError

LABELS_FILE = "labels.json"


def build_labels(labels: Sequence[str]) -> list[str]:
    """The label vocabulary: sorted distinct labels."""
    return sorted(set(labels))


def save_labels(labels: Sequence[str], directory: str) -> str:
    """Writes `directory/labels.json` (a JSON list) and returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LABELS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(list(labels), f, ensure_ascii=False, indent=0)
    return path


def load_labels(directory: str) -> list[str]:
    """Reads `directory/labels.json`; DataError if missing or not a list of strings."""
    path = os.path.join(directory, LABELS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            labels = json.load(f)
    except FileNotFoundError as err:
        raise DataError(
            f"{path}: no label vocabulary; fine-tune a classifier first (it writes one)."
        ) from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}); delete and re-create it.") from err
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{path}: expected a JSON list of label strings.")
    return labels


def read_examples(
    path: str,
    labels: Sequence[str] | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
):
    """`(texts, text_pairs or None, label ids int32 (N,), labels)` of a file.

    Without `labels` the vocabulary is built from this file; with it, a label outside the
    vocabulary raises DataError naming the label and its line.
    """
    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    values, lines = read_columns(path, columns)
    labels = build_labels(values[label_column]) if labels is None else list(labels)
    index = {label: i for i, label in enumerate(labels)}
    for label, line in zip(values[label_column], lines):
        if label not in index:
            raise DataError(
                f"{path}:{line}: label {label!r} is not in the label vocabulary {labels}; "
                "fix the file or fine-tune with a training file that has this label."
            )
    label_ids = np.array([index[x] for x in values[label_column]], np.int32)
    pairs = values[text_pair_column] if text_pair_column else None
    return values[text_column], pairs, label_ids, labels


def _batch_maker(texts, pairs, label_ids, tokenizer, seq_len, cls_id, sep_id, pad_id):
    """Function of example indices -> `(x, y)`."""
    if pairs is not None and (cls_id is None or sep_id is None):
        raise DataError("text pairs are packed as [CLS] A [SEP] B [SEP]; pass cls_id and sep_id.")
    text_table, label_table = tf.constant(texts, tf.string), tf.constant(label_ids)
    pair_table = None if pairs is None else tf.constant(pairs, tf.string)

    def make_batch(idx):
        first = tokenize(tokenizer, tf.gather(text_table, idx))
        if pair_table is None:
            x = pack_single(first, seq_len, cls_id, sep_id, pad_id)
            x["segment_ids"] = tf.zeros_like(x["token_ids"])
        else:
            second = tokenize(tokenizer, tf.gather(pair_table, idx))
            x = pack_pair_tokens(first, second, seq_len, cls_id, sep_id, pad_id)
        return x, tf.gather(label_table, idx)

    return make_batch


def classification_dataset(
    path: str,
    tokenizer,
    seq_len: int,
    batch_size: int,
    seed: int,
    labels: Sequence[str] | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    cls_id: int | None = None,
    sep_id: int | None = None,
    pad_id: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool = True,
) -> tuple[tf.data.Dataset, list[str]]:
    """Endless shuffled training batches of a labelled file, and its label vocabulary.

    Args:
        path: `.tsv` / `.csv` (header row) or `.jsonl` file.
        tokenizer: `tokenize(strings) -> RaggedTensor`, run in-graph.
        labels: the label vocabulary; default: built from this file (`build_labels`).
        text_column, text_pair_column, label_column: column / key names.
        cls_id, sep_id: added around the text (both needed for pairs).
        Other arguments as `causal_lm_dataset`.

    Returns:
        `(dataset, labels)`: the dataset yields `(x, y)`, `x = {"token_ids", "padding_mask",
        "segment_ids"}` int32 (B, seq_len), `y` int32 (B,) the index in `labels`.
    """
    texts, pairs, label_ids, labels = read_examples(
        path, labels, text_column, text_pair_column, label_column
    )
    make = _batch_maker(texts, pairs, label_ids, tokenizer, seq_len, cls_id, sep_id, pad_id)
    return step_stream.training_stream(
        len(texts), batch_size, seed, start_step, input_context, lambda step, row, idx: make(idx),
        deterministic,
    ), labels


def classification_eval_dataset(
    path: str,
    tokenizer,
    seq_len: int,
    batch_size: int,
    labels: Sequence[str],
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    cls_id: int | None = None,
    sep_id: int | None = None,
    pad_id: int = 0,
) -> tf.data.Dataset:
    """Finite batches of every example in file order; labels outside `labels` raise DataError."""
    texts, pairs, label_ids, labels = read_examples(
        path, labels, text_column, text_pair_column, label_column
    )
    make = _batch_maker(texts, pairs, label_ids, tokenizer, seq_len, cls_id, sep_id, pad_id)
    return step_stream.finish(tf.data.Dataset.range(len(texts)).batch(batch_size), make)
