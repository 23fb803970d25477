"""Causal LM pipeline: documents joined with end-of-text, packed into blocks, shifted by one.

The usual GPT recipe: every document is followed by `eos_id`, the joined stream is cut into
consecutive non-overlapping blocks of `seq_len + 1` tokens, and a block gives the inputs
`block[:-1]` and the next-token labels `block[1:]`. Training batches are a deterministic
function of `(seed, step)` (see `tflm.data.step_stream`); each batch reads its blocks from
the cache (`tflm.data.blocks.JoinedStream`), so no block table is ever built.
"""

import tensorflow as tf

from tflm import special_ids
from tflm.data import step_stream
from tflm.data.blocks import JoinedStream, cache_arrays, count_blocks, host_call


def _block_reader(cache, seq_len, eos_id, pad_id, remainder, split):
    """`(num_blocks, lookup)`: `lookup(block indices int64 (b,))` -> that batch's
    `(x, y, sample_weight)`, read from the cache on the host (nothing in the graph)."""
    stream = JoinedStream(cache, eos_id, split)
    # A last partial block needs 2 tokens to hold one (input, label) pair.
    count = stream.num_blocks(seq_len + 1, remainder, split, "seq_len+1", 2)

    def lookup(idx):
        blocks, lengths = host_call(
            lambda i: stream.blocks(i, seq_len + 1, pad_id), [idx], [tf.int32, tf.int32],
            [[None, seq_len + 1], [None]])
        return block_features(blocks, lengths)

    return count, lookup


def num_blocks(cache, seq_len: int, remainder: str = "drop") -> int:
    """Number of blocks of one epoch of `causal_lm_dataset` (epochs = steps * batch / this)."""
    ids, offsets = cache_arrays(cache, "train")
    return count_blocks(len(ids) + len(offsets) - 1, seq_len + 1, remainder, 2)


def block_features(blocks: tf.Tensor, lengths: tf.Tensor):
    """`(x, y, sample_weight)` of blocks int32 (B, seq_len + 1) holding `lengths` real tokens."""
    seq_len = blocks.shape[-1] - 1
    token_ids, labels = blocks[:, :-1], blocks[:, 1:]  # (B, seq_len) each
    real = tf.range(seq_len)[None, :] < (lengths - 1)[:, None]  # (B, seq_len)
    x = {"token_ids": token_ids, "padding_mask": tf.cast(real, tf.int32)}
    return x, labels, tf.cast(real, tf.float32)


def causal_lm_dataset(
    cache,
    seq_len: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    *,
    eos_id: int,
    pad_id: int = 0,
    remainder: str = "drop",
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool = True,
    split: str = "train",
) -> tf.data.Dataset:
    """Endless training batches of steps `start_step, start_step + 1, ...`.

    Args:
        cache: token cache (`ids`, `offsets`), e.g. `TokenCache`.
        seq_len: tokens per example; blocks hold `seq_len + 1` tokens.
        batch_size: global batch size (split over replicas with `input_context`).
        seed: shuffles the blocks of each epoch with `(seed, epoch)`.
        start_step: first step yielded; a resumed run passes the step it resumes at.
        eos_id: end-of-text id appended after every document.
        pad_id: id of the padding of a last partial block (`remainder="pad"`).
        remainder: "drop" the last partial block, or "pad" it (weight 0 on padding).
        input_context: `tf.distribute.InputContext`; this pipeline then yields
            per-replica batches, its disjoint share of every global batch.
        deterministic: `tf.data.Options.deterministic`; False may reorder batches.
        split: the corpus split's name, used in error messages.

    Returns:
        `tf.data.Dataset` of `(x, y, sample_weight)`: `x = {"token_ids": int32 (B, seq_len),
        "padding_mask": int32 (B, seq_len)}`, `y` int32 (B, seq_len) with
        `y[:, t] == block[t + 1]`, `sample_weight` float32 (B, seq_len), 0 on padding.

    Raises:
        DataError: the split has fewer tokens than one block, or a bad batch split.
    """
    count, lookup = _block_reader(cache, seq_len, eos_id, pad_id, remainder, split)
    return step_stream.training_stream(
        count, batch_size, seed, start_step, input_context,
        lambda step, row, idx: lookup(idx), deterministic,
    )


def causal_lm_eval_dataset(
    cache,
    seq_len: int,
    batch_size: int,
    eos_id: int,
    pad_id: int = 0,
    remainder: str = "drop",
    split: str = "validation",
) -> tf.data.Dataset:
    """Finite, unshuffled batches holding every block once (the last batch may be smaller).

    Same blocks and element structure as `causal_lm_dataset`.
    """
    count, lookup = _block_reader(cache, seq_len, eos_id, pad_id, remainder, split)
    batches = tf.data.Dataset.range(count).batch(batch_size)
    return step_stream.finish(batches, lookup)


def causal_lm_pipeline(
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
    """The `causal_lm` objective's pipeline adapter (see `tflm.models.tasks`).

    Blocks of `config.data.seq_len + 1` tokens of `caches[split]`, documents joined with
    the tokenizer's end-of-text; a last partial block per `config.data.remainder`, padded
    with `tflm.special_ids.pad_id` (the tokenizer's pad, else its end-of-text).
    `training` gives `causal_lm_dataset` from `start_step`, else `causal_lm_eval_dataset`.
    """
    pad_id, data_config = special_ids.pad_id(tokenizer), config.data
    if training:
        return causal_lm_dataset(
            caches[split], data_config.seq_len, batch_size, seed, start_step=start_step,
            eos_id=tokenizer.eos_id, pad_id=pad_id, remainder=data_config.remainder,
            input_context=input_context, split=split,
        )
    return causal_lm_eval_dataset(
        caches[split], data_config.seq_len, batch_size, tokenizer.eos_id, pad_id=pad_id,
        remainder=data_config.remainder, split=split,
    )
