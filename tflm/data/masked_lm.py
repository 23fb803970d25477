"""Masked LM pipeline: `[CLS] block [SEP]` sequences from a token cache, BERT masking.

Documents are joined with `sep_id` after each one (RoBERTa's FULL-SENTENCES packing) and
cut into blocks of `seq_len - 2` tokens, read from the cache per batch; masks are drawn
from `(seed, step)`, so every epoch sees new masks (dynamic masking) and a resumed run
sees the same ones.
"""

import numpy as np
import tensorflow as tf

from tflm import special_ids
from tflm.data import step_stream
from tflm.data.blocks import JoinedStream, host_call
from tflm.data.masking import MaskingSpec, mask_tokens, step_noise, word_starts
from tflm.data.pairs import sentence_pair_dataset, sentence_pair_eval_dataset
from tflm.errors import DataError


def _sequence_reader(cache, seq_len, cls_id, sep_id, pad_id, remainder, split):
    """`(count, read)`: `read(indices int64 (b,))` -> `[CLS] content [SEP] pad...` int32
    (b, seq_len) and real lengths int32 (b,), read from the cache on the host."""
    stream = JoinedStream(cache, sep_id, split)
    count = stream.num_blocks(seq_len - 2, remainder, split, "seq_len-2")

    def sequences(idx):
        content, lengths = stream.blocks(idx, seq_len - 2, pad_id)
        out = np.full([len(idx), seq_len], pad_id, np.int32)
        out[:, 0] = cls_id
        out[:, 1:-1] = content
        out[np.arange(len(idx)), lengths + 1] = sep_id
        return out, lengths + 2

    def read(idx):
        return host_call(sequences, [idx], [tf.int32, tf.int32], [[None, seq_len], [None]])

    return count, read


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
    count, read = _sequence_reader(cache, seq_len, cls_id, sep_id, pad_id, remainder, split)
    make_batch = _batch_maker(read, seq_len, seed, batch_size, masking)
    return step_stream.training_stream(
        count, batch_size, seed, start_step, input_context, make_batch,
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
    count, read = _sequence_reader(cache, seq_len, cls_id, sep_id, pad_id, remainder, split)
    make_batch = _batch_maker(read, seq_len, seed, batch_size, masking)
    batches = tf.data.Dataset.range(count).batch(batch_size).enumerate()
    return step_stream.finish(
        batches, lambda step, idx: make_batch(step, tf.constant(0, tf.int64), idx)
    )


def _batch_maker(read, seq_len, seed, batch_size, masking):
    """Function `(step, row_start, indices) -> (x, y, sample_weight)` of masked sequences."""

    def make_batch(step, row_start, idx):
        token_ids, lengths = read(idx)  # (b, seq_len), (b,)
        padding_mask = tf.cast(tf.range(seq_len)[None, :] < lengths[:, None], tf.int32)
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


def tokenizer_word_starts(tokenizer) -> np.ndarray:
    """bool (V,): True where a token of `tokenizer` starts a word (whole-word masking).

    WordPiece continues words with "##" pieces; SentencePiece starts them with "▁".

    Raises:
        DataError: a tokenizer kind without word boundaries in its pieces (byte BPE).
    """
    vocabulary = [tokenizer.id_to_token(i) for i in range(tokenizer.vocabulary_size)]
    if tokenizer.kind == "wordpiece":
        return word_starts(vocabulary)
    if tokenizer.kind == "sentencepiece":
        return np.array([t.startswith("\u2581") for t in vocabulary], bool)
    raise DataError(
        f"whole-word masking needs word boundaries in the vocabulary; a {tokenizer.kind} "
        "tokenizer has none. Use config.data.tokenizer='wordpiece' or 'sentencepiece', or "
        "set config.data.whole_word_masking=False."
    )


def masking_spec(tokenizer, data_config) -> MaskingSpec:
    """The `MaskingSpec` of a run: the tokenizer's [MASK] and special ids, and
    `config.data.mask_rate`, `max_predictions`, `whole_word_masking`."""
    word_start = tokenizer_word_starts(tokenizer) if data_config.whole_word_masking else None
    return MaskingSpec(
        mask_id=tokenizer.mask_id, vocabulary_size=tokenizer.vocabulary_size,
        special_ids=tokenizer.special_ids, mask_rate=data_config.mask_rate,
        max_predictions=data_config.max_predictions, word_start=word_start,
    )


def masked_lm_pipeline(
    caches,
    tokenizer,
    config,
    batch_size: int,
    *,
    split: str = "train",
    training: bool = True,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """The `masked_lm` objective's pipeline adapter (see `tflm.models.tasks`).

    With `config.model.pair_task` "nsp" / "sop": `[CLS] A [SEP] B [SEP]` pairs of
    `caches[split]` (`sentence_pair_dataset`), masked; with "none": `[CLS] block [SEP]`
    sequences (`masked_lm_dataset`). Masks follow `masking_spec` and are drawn from
    `(seed, step)`: a new mask each time a sequence is seen in training, the same masks
    on every evaluation.

    Returns:
        `(x, y, sample_weight)`: `x = {"token_ids", "padding_mask", "segment_ids",
        "mask_positions"}`, `y = {"mlm": masked ids (B, P), "pair": labels (B,)}` and
        `sample_weight = {"mlm": mask weights (B, P), "pair": ones (B,)}` (no "pair"
        without a pair task).
    """
    d, pair_task = config.data, config.model.pair_task
    masking = masking_spec(tokenizer, d)
    cache, pad_id = caches[split], special_ids.pad_id(tokenizer)
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    if pair_task == "none":
        if training:
            dataset = masked_lm_dataset(
                cache, d.seq_len, batch_size, seed, masking, cls_id, sep_id, pad_id,
                start_step=start_step, remainder=d.remainder, input_context=input_context,
                split=split)
        else:
            dataset = masked_lm_eval_dataset(
                cache, d.seq_len, batch_size, masking, cls_id, sep_id, pad_id, seed=seed,
                remainder=d.remainder, split=split)
        return dataset.map(lambda x, y, w: (x, {"mlm": y}, {"mlm": w}))
    if training:
        dataset = sentence_pair_dataset(
            cache, d.seq_len, batch_size, seed, pair_task, cls_id, sep_id, pad_id,
            masking=masking, start_step=start_step, input_context=input_context, split=split)
    else:
        dataset = sentence_pair_eval_dataset(
            cache, d.seq_len, batch_size, pair_task, cls_id, sep_id, pad_id,
            masking=masking, seed=seed, split=split)
    return dataset.map(lambda x, y, w: (
        x, {"mlm": y["mask_ids"], "pair": y["next_sentence_label"]},
        {"mlm": w["mask_ids"], "pair": w["next_sentence_label"]}))
