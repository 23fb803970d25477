"""In-graph packing of tokenized text into fixed-length model inputs.

`tokenizer` is any object with `tokenize(strings) -> tf.RaggedTensor` of ids that runs in a
graph (a `tflm.text` Tokenizer, a keras-hub tokenizer, ...).
"""

import tensorflow as tf

from tflm.data.pairs import truncate_pair


def tokenize(tokenizer, strings: tf.Tensor) -> tf.RaggedTensor:
    """Ragged int32 (b, None) ids of a batch of strings."""
    tokens = tokenizer.tokenize(strings)
    if not isinstance(tokens, tf.RaggedTensor):
        tokens = tf.RaggedTensor.from_tensor(tokens)
    return tf.cast(tokens, tf.int32)


def pack_single(
    tokens: tf.RaggedTensor,
    seq_len: int,
    cls_id: int | None = None,
    sep_id: int | None = None,
    pad_id: int = 0,
) -> dict:
    """`[CLS] tokens [SEP]`, truncated, padded: `token_ids`, `padding_mask` int32 (b, seq_len).

    `cls_id` / `sep_id` of None leave that token out.
    """
    budget = seq_len - (cls_id is not None) - (sep_id is not None)
    parts = [tokens[:, :budget]]
    edge = tf.ones_like(tokens.row_lengths(), tf.int32)[:, None]  # (b, 1)
    if cls_id is not None:
        parts.insert(0, edge * cls_id)
    if sep_id is not None:
        parts.append(edge * sep_id)
    packed = tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    return {
        "token_ids": packed.to_tensor(pad_id, shape=[None, seq_len]),
        "padding_mask": tf.ones_like(packed).to_tensor(0, shape=[None, seq_len]),
    }


def pack_pair_tokens(
    first: tf.RaggedTensor,
    second: tf.RaggedTensor,
    seq_len: int,
    cls_id: int | None,
    sep_id: int,
    pad_id: int = 0,
) -> dict:
    """`[CLS] A [SEP] B [SEP]` (no `[CLS]` when `cls_id` is None: a decoder's `A eos B
    eos`), longer side trimmed first: `token_ids`, `padding_mask`, `segment_ids` int32
    (b, seq_len)."""
    budget = seq_len - 2 - (cls_id is not None)
    len_a, len_b = truncate_pair(first.row_lengths(), second.row_lengths(), budget)
    first = tf.ragged.boolean_mask(first, tf.ragged.range(first.row_lengths()) < len_a[:, None])
    second = tf.ragged.boolean_mask(second, tf.ragged.range(second.row_lengths()) < len_b[:, None])
    edge = tf.ones_like(first.row_lengths(), tf.int32)[:, None]  # (b, 1)
    head = [edge * cls_id] if cls_id is not None else []
    packed = tf.concat([*head, first, edge * sep_id, second, edge * sep_id], axis=1)
    segments = tf.concat(
        [*(edge * 0 for _ in head), tf.zeros_like(first), edge * 0, tf.ones_like(second),
         edge], axis=1
    )
    return {
        "token_ids": packed.to_tensor(pad_id, shape=[None, seq_len]),
        "padding_mask": tf.ones_like(packed).to_tensor(0, shape=[None, seq_len]),
        "segment_ids": segments.to_tensor(0, shape=[None, seq_len]),
    }


def pack_texts(
    first: tf.RaggedTensor,
    second: tf.RaggedTensor | None,
    seq_len: int,
    cls_id: int | None,
    sep_id: int | None,
    pad_id: int = 0,
    segments: bool = True,
) -> dict:
    """The fine-tuning layout of tokenized texts (`second` None: `pack_single`) or text
    pairs (`pack_pair_tokens`): `token_ids`, `padding_mask` and, with `segments`,
    `segment_ids` (zeros for single texts) int32 (b, seq_len). The one rule the
    fine-tuning pipelines, `tflm.load(dir).classify` and the exported `classify` use."""
    if second is None:
        x = pack_single(first, seq_len, cls_id, sep_id, pad_id)
        x["segment_ids"] = tf.zeros_like(x["token_ids"])
    else:
        x = pack_pair_tokens(first, second, seq_len, cls_id, sep_id, pad_id)
    if not segments:
        x.pop("segment_ids")
    return x


def special_count(cls_id: int | None, sep_id: int | None, pair: bool) -> int:
    """How many special tokens `pack_single` / `pack_pair_tokens` add to a text."""
    if pair:
        return 2 + (cls_id is not None)
    return (cls_id is not None) + (sep_id is not None)
