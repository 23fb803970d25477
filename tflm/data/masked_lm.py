"""Masked LM pipeline: `[CLS] block [SEP]` sequences from a token cache, BERT masking.

Documents are joined with `sep_id` after each one (RoBERTa's FULL-SENTENCES packing) and
cut into blocks of `seq_len - 2` tokens; masks are drawn from `(seed, step)`, so every
epoch sees new masks (dynamic masking) and a resumed run sees the same ones.
"""

import numpy as np
import tensorflow as tf

from tflm.data import step_stream
from tflm.data.blocks import cache_arrays, joined_stream, pack_blocks
from tflm.data.masking import MaskingSpec, mask_tokens, step_noise


def _sequences(cache, seq_len, cls_id, sep_id, pad_id, remainder, split):
    """`[CLS] content [SEP] pad...` int32 (N, seq_len) and real lengths int32 (N,)."""
    ids, offsets = cache_arrays(cache, split)
    stream = joined_stream(ids, offsets, sep_id)
    content, lengths = pack_blocks(stream, seq_len - 2, remainder, pad_id, split, "seq_len-2")
    rows = np.arange(len(content))
    sequences = np.full([len(content), seq_len], pad_id, np.int32)
    sequences[:, 0] = cls_id
    sequences[:, 1:-1] = content
    sequences[rows, lengths + 1] = sep_id
    return sequences, lengths + 2


def masked_lm_dataset(
    cache,
    seq_len: int,
    batch_size: int,
    seed: int,
    masking: MaskingSpec,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    start_step: int = 0,
    remainder: str = "drop",
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool = True,
    split: str = "train",
) -> tf.data.Dataset:
    """Endless masked-LM batches of steps `start_step, start_step + 1, ...`.

    Arguments as `causal_lm_dataset`, plus `masking` (a `MaskingSpec`; include `cls_id`,
    `sep_id` and `pad_id` in its `special_ids`) and the `[CLS]` / `[SEP]` ids.

    Returns:
        `tf.data.Dataset` of `(x, y, sample_weight)` (keras-hub's BertMaskedLM layout):
        `x = {"token_ids", "padding_mask", "segment_ids": int32 (B, seq_len),
        "mask_positions": int32 (B, P)}`, `y` = mask_ids int32 (B, P) (the original ids),
        `sample_weight` = mask_weights float32 (B, P); P = `masking.max_predictions`.
    """
    sequences, lengths = _sequences(cache, seq_len, cls_id, sep_id, pad_id, remainder, split)
    make_batch = _batch_maker(sequences, lengths, seed, batch_size, masking)
    return step_stream.training_stream(
        len(sequences), batch_size, seed, start_step, input_context, make_batch,
        deterministic,
    )


def masked_lm_eval_dataset(
    cache,
    seq_len: int,
    batch_size: int,
    masking: MaskingSpec,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    seed: int = 0,
    remainder: str = "drop",
    split: str = "validation",
) -> tf.data.Dataset:
    """Finite, unshuffled masked-LM batches, every sequence once, the same masks each call."""
    sequences, lengths = _sequences(cache, seq_len, cls_id, sep_id, pad_id, remainder, split)
    make_batch = _batch_maker(sequences, lengths, seed, batch_size, masking)
    batches = tf.data.Dataset.range(len(sequences)).batch(batch_size).enumerate()
    return step_stream.finish(
        batches, lambda step, idx: make_batch(step, tf.constant(0, tf.int64), idx)
    )


def _batch_maker(sequences, lengths, seed, batch_size, masking):
    """Function `(step, row_start, indices) -> (x, y, sample_weight)` of masked sequences."""
    table, length_table = tf.constant(sequences), tf.constant(lengths)
    seq_len = sequences.shape[1]

    def make_batch(step, row_start, idx):
        token_ids = tf.gather(table, idx)  # (b, seq_len)
        padding_mask = tf.cast(
            tf.range(seq_len)[None, :] < tf.gather(length_table, idx)[:, None], tf.int32
        )
        noise = step_noise(seed, step, 3, batch_size, seq_len, salt=1)  # (3, B, seq_len)
        noise = noise[:, row_start : row_start + tf.shape(idx, out_type=tf.int64)[0]]
        masked = mask_tokens(token_ids, padding_mask, noise, masking)
        x = {
            "token_ids": masked["token_ids"],
            "padding_mask": padding_mask,
            "segment_ids": tf.zeros_like(token_ids),
            "mask_positions": masked["mask_positions"],
        }
        return x, masked["mask_ids"], masked["mask_weights"]

    return make_batch
