"""Contrastive sentence pairs for SimCSE.

Unsupervised: every sentence is its own positive (the two views differ only by dropout in
the model). Supervised: (anchor, positive[, hard negative]) rows of a TSV / CSV / JSONL
file, e.g. SimCSE's NLI triples. Batches are a deterministic function of `(seed, step)`.

`simcse_pipeline` is the `simcse` objective's adapter: a split's file
(`config.data.train` / `config.data.validation`, columns `config.data.columns`) when
set, else the documents of the corpus split as sentences; each sentence is laid out as
`tflm.generation.SentenceEncoder` embeds it (`layout_ids`).
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tflm import special_ids
from tflm.data import step_stream
from tflm.data.blocks import cache_arrays, host_call, host_gather
from tflm.data.encoding import pack_single, tokenize
from tflm.data.text_files import read_columns
from tflm.errors import DataError

ROLES = ("anchor", "positive", "negative")


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
    count, make_views = _sentence_views(source, "train", tokenizer, seq_len, cls_id, sep_id,
                                        pad_id)
    return step_stream.training_stream(
        count, batch_size, seed, start_step, input_context,
        lambda step, row_start, idx: make_views(idx), deterministic,
    )


def _sentence_views(source, split, tokenizer, seq_len, cls_id, sep_id, pad_id):
    """`(count, indices -> {"anchor": v, "positive": v})` of a list of strings or a
    token cache (`split` names it in errors)."""
    if isinstance(source, (list, tuple)):
        if tokenizer is None:
            raise DataError("a list of sentences needs a tokenizer; pass tokenizer=...")
        string_of = host_gather(source)
        count = len(source)

        def lookup(idx):
            return tokenize(tokenizer, string_of(idx))
    else:
        ids, offsets = cache_arrays(source, split)
        count = len(offsets) - 1

        def read(idx):  # only the first seq_len tokens: all that pack_single keeps
            starts = offsets[idx]
            lengths = np.minimum(offsets[idx + 1] - starts, seq_len)
            positions = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
            return np.asarray(ids[positions.astype(np.int64)], np.int32), lengths

        def lookup(idx):
            values, lengths = host_call(read, [idx], [tf.int32, tf.int64], [[None], [None]])
            return tf.RaggedTensor.from_row_lengths(values, lengths)

    def make_views(idx):
        view = pack_single(lookup(idx), seq_len, cls_id, sep_id, pad_id)
        return {"anchor": view, "positive": view}

    return count, make_views


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
    count, make_views = _file_views(path, columns, tokenizer, seq_len, cls_id, sep_id, pad_id)
    return step_stream.training_stream(
        count, batch_size, seed, start_step, input_context,
        lambda step, row_start, idx: make_views(idx), deterministic,
    )


def _file_views(path, columns, tokenizer, seq_len, cls_id, sep_id, pad_id):
    """`(count, indices -> {"anchor": v, "positive": v[, "negative": v]})` of a file."""
    columns = tuple(columns)
    if len(columns) not in (2, 3):
        raise DataError(
            f"columns must name anchor, positive and optionally negative, got {columns!r}."
        )
    values, _ = read_columns(path, columns)
    tables = {role: host_gather(values[c]) for role, c in zip(ROLES, columns)}

    def make_views(idx):
        return {
            role: pack_single(tokenize(tokenizer, text_of(idx)), seq_len, cls_id, sep_id, pad_id)
            for role, text_of in tables.items()
        }

    return len(values[columns[0]]), make_views


def layout_ids(tokenizer) -> tuple[int | None, int | None, int]:
    """`(cls_id, sep_id, pad_id)` of a sentence: `[CLS] s [SEP]` when the tokenizer has
    both (WordPiece, SentencePiece), else the ids alone (byte-level BPE; a decoder pools
    its last token): the layout `tflm.generation.SentenceEncoder` embeds with."""
    framed = tokenizer.cls_id is not None and tokenizer.sep_id is not None
    return (tokenizer.cls_id if framed else None, tokenizer.sep_id if framed else None,
            special_ids.pad_id(tokenizer))


def split_file(data_config, split: str) -> str:
    """The file of `split` (`config.data.train` / `.validation`), or "" (the corpus)."""
    key = {"train": "train", "validation": "validation"}.get(split)
    return data_config[key] if key else ""


def simcse_pipeline(caches, tokenizer, config, batch_size: int, *, split: str,
                    training: bool, seed: int, start_step: int = 0,
                    input_context=None) -> tf.data.Dataset:
    """The `simcse` objective's adapter (contract in `tflm.models.tasks`).

    Examples: the rows of `split`'s file (`config.data.train` / `.validation`, columns
    `config.data.columns`: anchor, positive[, hard negative]) when it is set, else the
    documents of `caches[split]` as sentences, each its own positive. Sentences are cut
    to `config.data.seq_len` tokens with their special tokens (`layout_ids`). Evaluation
    batches (`training=False`) are every example in order, without a last batch
    smaller than `batch_size` (it would have fewer in-batch negatives) unless that is
    the only one.

    Returns:
        `(x, y)`: `x = {"anchor": v, "positive": v[, "negative": v]}`, `v =
        {"token_ids", "padding_mask"}` int32 (B, seq_len); `y` int32 zeros (B,) (the
        loss reads no labels).

    Raises:
        DataError: a missing split, file or column; more or fewer than 2 or 3 columns.
    """
    d = config.data
    layout = layout_ids(tokenizer)
    path = split_file(d, split)
    if path:
        count, make_views = _file_views(path, d.columns, tokenizer, d.seq_len, *layout)
    elif split in caches:
        count, make_views = _sentence_views(caches[split], split, None, d.seq_len, *layout)
    else:
        raise DataError(f"no {split} examples for the simcse objective: no file for it "
                        "(config.data.train / config.data.validation) and no token cache "
                        f"of the corpus' {split} split.")

    def make(idx):
        return make_views(idx), tf.zeros(tf.shape(idx), tf.int32)

    if training:
        return step_stream.training_stream(count, batch_size, seed, start_step, input_context,
                                           lambda step, row_start, idx: make(idx))
    indices = tf.data.Dataset.range(count).batch(batch_size,
                                                 drop_remainder=count >= batch_size)
    return step_stream.finish(indices, make)
