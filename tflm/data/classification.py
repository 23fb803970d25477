"""Text (or text pair) classification and regression from TSV / CSV / JSONL files.

The label vocabulary is the sorted set of the training file's labels (so it is the same on
every run); the `classification` objective keeps it as `config.model.labels` (filled by
`configure_labels` before the run starts) and the model directory as `labels.json`;
class `i` is `labels[i]`. Regression targets are the label column read as numbers.

The fine-tuning adapters (`classification_pipeline`, `regression_pipeline`) read
`config.data.train` / `config.data.validation`, with the columns
`config.data.text_column`, `text_pair_column` (optional) and `label_column`
(`tflm.models.tasks.FILE_DATA`).
"""

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tflm import special_ids
from tflm.data import step_stream
from tflm.data.blocks import host_gather
from tflm.data.encoding import pack_texts, special_count, tokenize
from tflm.data.text_files import read_columns
from tflm.errors import ConfigError, DataError

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
    header: bool = True,
    regression: bool = False,
    with_lines: bool = False,
):
    """`(texts, text_pairs or None, targets (N,), labels)` of a file.

    Classification: targets are int32 label ids; without `labels` the vocabulary is built
    from this file; with it, a label outside the vocabulary raises DataError naming the
    label, its line and column. Regression: targets are float32 and `labels` is None. With
    `with_lines`, each record's line number is returned too (a fifth item).
    """
    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    values, lines = read_columns(path, columns, header=header)
    pairs = values[text_pair_column] if text_pair_column else None
    if regression:
        targets = []
        for value, line in zip(values[label_column], lines):
            try:
                targets.append(float(value))
            except ValueError:
                raise DataError(f"{path}:{line}: column {label_column!r} holds {value!r}, "
                                "not a number; regression needs numeric labels.") from None
        result = values[text_column], pairs, np.array(targets, np.float32), None
        return (*result, lines) if with_lines else result
    labels = build_labels(values[label_column]) if labels is None else list(labels)
    index = {label: i for i, label in enumerate(labels)}
    for label, line in zip(values[label_column], lines):
        if label not in index:
            raise DataError(
                f"{path}:{line}: label {label!r} (column {label_column!r}) is not in the "
                f"label vocabulary {labels}, read from the training file; fix the file or "
                "fine-tune with a training file that has this label."
            )
    label_ids = np.array([index[x] for x in values[label_column]], np.int32)
    result = values[text_column], pairs, label_ids, labels
    return (*result, lines) if with_lines else result


def _batch_maker(texts, pairs, label_ids, tokenizer, seq_len, cls_id, sep_id, pad_id,
                 segments=True):
    """Function of example indices -> `(x, y)`; `segments` False leaves out
    `segment_ids` (a backbone without segment embeddings)."""
    if pairs is not None and sep_id is None:
        raise DataError("text pairs are packed as [CLS] A [SEP] B [SEP]; pass sep_id.")
    text_of, label_of = host_gather(texts), host_gather(np.asarray(label_ids))
    pair_of = None if pairs is None else host_gather(pairs)

    def make_batch(idx):
        first = tokenize(tokenizer, text_of(idx))
        second = None if pair_of is None else tokenize(tokenizer, pair_of(idx))
        x = pack_texts(first, second, seq_len, cls_id, sep_id, pad_id, segments)
        return x, label_of(idx)

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


def layout_ids(tokenizer) -> tuple[int | None, int | None, int]:
    """`(cls_id, sep_id, pad_id)` a fine-tuning task lays texts out with: the tokenizer's
    [CLS] / [SEP] (an encoder's), else none and the end-of-text token as separator (a
    decoder's `A eos B eos`, whose last real token is what it pools)."""
    sep = tokenizer.sep_id if tokenizer.sep_id is not None else tokenizer.eos_id
    return tokenizer.cls_id, sep, special_ids.pad_id(tokenizer)


def split_file(data_config, split: str) -> str:
    """The labelled file of `split` (`config.data.train` / `.validation`)."""
    key = "train" if split == "train" else "validation"
    path = data_config[key]
    if not path:
        raise ConfigError(
            f"config.data.{key} is empty: fine-tuning reads its {key} examples from a "
            f".tsv / .csv / .jsonl file; pass --config.data.{key}=FILE."
        )
    return os.path.expanduser(path)


def check_lengths(path, texts, pairs, lines, tokenizer, seq_len, policy) -> int:
    """Counts the examples longer than `seq_len` after layout; they are cut with one
    warning, or (`policy` "error") the first raises DataError naming its line."""
    cls_id, sep_id, _ = layout_ids(tokenizer)
    budget = seq_len - special_count(cls_id, sep_id, pairs is not None)
    lengths = np.array([len(ids) for ids in tokenizer.encode(list(texts))])
    if pairs is not None:
        lengths = lengths + np.array([len(ids) for ids in tokenizer.encode(list(pairs))])
    long = np.flatnonzero(lengths > budget)
    if len(long) and policy == "error":
        raise DataError(
            f"{path}:{lines[long[0]]}: {lengths[long[0]]} tokens, more than the "
            f"{budget} that fit config.data.seq_len={seq_len} ({len(long)} examples are "
            "too long); shorten them, raise config.data.seq_len (up to the model's "
            "max_sequence_length) or set config.data.too_long='truncate'."
        )
    if len(long):
        logging.warning("%s: %d of %d examples are longer than %d tokens and are cut "
                        "(config.data.too_long='error' to refuse them).", path, len(long),
                        len(lengths), budget)
    return len(long)


def _file_pipeline(tokenizer, config, batch_size, split, training, seed, start_step,
                   input_context, regression):
    d = config.data
    path = split_file(d, split)
    labels = None if regression else config.model.labels
    texts, pairs, targets, _, lines = read_examples(
        path, labels, d.text_column, d.text_pair_column or None, d.label_column,
        header=d.header, regression=regression, with_lines=True)
    check_lengths(path, texts, pairs, lines, tokenizer, d.seq_len, d.too_long)
    cls_id, sep_id, pad_id = layout_ids(tokenizer)
    make = _batch_maker(texts, pairs, targets, tokenizer, d.seq_len, cls_id, sep_id, pad_id,
                        segments=config.model.backbone.num_segments > 0)
    if training:
        return step_stream.training_stream(
            len(texts), batch_size, seed, start_step, input_context,
            lambda step, row, idx: make(idx))
    return step_stream.finish(tf.data.Dataset.range(len(texts)).batch(batch_size), make)


def classification_pipeline(caches, tokenizer, config, batch_size: int, *, split: str,
                            training: bool, seed: int, start_step: int = 0,
                            input_context=None) -> tf.data.Dataset:
    """The `classification` objective's adapter (see `tflm.models.tasks`): `(x, y)` with
    `x = {"token_ids", "padding_mask"[, "segment_ids"]}` (B, seq_len), `y` int32 (B,) the
    index in `config.model.labels`; `caches` is unused (the examples are files)."""
    return _file_pipeline(tokenizer, config, batch_size, split, training, seed, start_step,
                          input_context, regression=False)


def regression_pipeline(caches, tokenizer, config, batch_size: int, *, split: str,
                        training: bool, seed: int, start_step: int = 0,
                        input_context=None) -> tf.data.Dataset:
    """The `regression` objective's adapter: as `classification_pipeline` with `y`
    float32 (B,) the label column's numbers."""
    return _file_pipeline(tokenizer, config, batch_size, split, training, seed, start_step,
                          input_context, regression=True)


def configure_labels(config) -> dict:
    """The `classification` objective's `configure` hook: `model.labels` = the sorted
    labels of `config.data.train` (kept when the config names them; then every training
    label must be one of them)."""
    d = config.data
    path = split_file(d, "train")
    _, _, _, labels = read_examples(path, config.model.labels or None, d.text_column,
                                    d.text_pair_column or None, d.label_column,
                                    header=d.header)
    if len(labels) < 2:
        raise DataError(f"{path}: every example has the label {labels[0]!r}; a classifier "
                        "needs at least 2 labels in its training file.")
    return {"model.labels": tuple(labels)}


def check_regression_file(config) -> dict:
    """The `regression` objective's `configure` hook: reads `config.data.train` once so a
    missing column or a non-numeric target fails before the run starts; sets nothing."""
    d = config.data
    read_examples(split_file(d, "train"), None, d.text_column, d.text_pair_column or None,
                  d.label_column, header=d.header, regression=True)
    return {}
