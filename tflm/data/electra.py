"""ELECTRA pipeline: masked `[CLS] block [SEP]` sequences plus the generator's sample noise.

The masked-LM pipeline (`masked_lm_dataset`, `masking_spec`) picks the positions. Every
picked position becomes `[MASK]` in the generator's input (ELECTRA's masking: BERT's 10%
random / 10% kept tokens are masked too, as the generator's samples replace them anyway).
The noise the model samples with is drawn per row from `(seed, row)`, where the row is
its original ids and mask positions: a deterministic function of the batch, so resumed and
multi-worker runs (any slicing of the global batch) draw what a single run draws.
"""

import functools

import tensorflow as tf

from tflm import special_ids
from tflm.data.masked_lm import masked_lm_dataset, masked_lm_eval_dataset, masking_spec


def electra_batch(x, mask_ids, mask_weights, *, mask_id: int, seed: int):
    """One masked-LM batch in ELECTRA's layout.

    Args:
        x: `{"token_ids", "padding_mask", "segment_ids": int32 (B, T), "mask_positions":
            int32 (B, P)}` from `masked_lm_dataset` (80/10/10 masking applied).
        mask_ids: int32 (B, P) original ids at the masked positions.
        mask_weights: float32 (B, P), 1 on used slots.
        mask_id: the `[MASK]` id.
        seed: the pipeline's seed.

    Returns:
        `(x, y, sample_weight)`: `x` with `token_ids` [MASK] at every used position, plus
        `mask_weights` and `sample_noise` float32 (B, P) uniform in [0, 1);
        `y = {"mlm": mask_ids, "rtd": original ids (B, T)}`,
        `sample_weight = {"mlm": mask_weights, "rtd": padding mask float32 (B, T)}`.
    """
    token_ids, positions = x["token_ids"], x["mask_positions"]
    used = tf.cast(mask_weights > 0, tf.int32)[:, :, None]  # (B, P, 1)
    hits = tf.one_hot(positions, tf.shape(token_ids)[1], dtype=tf.int32) * used  # (B, P, T)
    masked = tf.reduce_max(hits, axis=1) > 0  # (B, T)
    original = tf.where(masked, tf.reduce_sum(hits * mask_ids[:, :, None], axis=1), token_ids)
    noise = row_noise(tf.concat([original, positions], axis=1), positions.shape[1], seed)
    x = {**x, "token_ids": tf.where(masked, mask_id, token_ids),
         "mask_weights": mask_weights, "sample_noise": noise}
    y = {"mlm": mask_ids, "rtd": original}
    weights = {"mlm": mask_weights, "rtd": tf.cast(x["padding_mask"], tf.float32)}
    return x, y, weights


def row_noise(rows: tf.Tensor, length: int, seed: int) -> tf.Tensor:
    """float32 (B, length) uniform in [0, 1): row b's a function of `(seed, rows[b])`."""
    keys = tf.bitcast(tf.fingerprint(rows), tf.int64)  # (B,) farmhash64 of each row
    return tf.map_fn(
        lambda key: tf.random.stateless_uniform(
            [length], seed=tf.stack([key, tf.constant(seed, tf.int64)])),
        keys, fn_output_signature=tf.float32)


def electra_pipeline(
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
    """The `electra` objective's pipeline adapter (see `tflm.models.tasks`).

    `[CLS] block [SEP]` sequences of `caches[split]` masked by `masking_spec(tokenizer,
    config.data)` (masks from `(seed, step)`), in the layout of `electra_batch`.
    """
    d = config.data
    masking = masking_spec(tokenizer, d)
    cache, pad_id = caches[split], special_ids.pad_id(tokenizer)
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    if training:
        dataset = masked_lm_dataset(
            cache, d.seq_len, batch_size, seed, masking, cls_id, sep_id, pad_id,
            start_step=start_step, remainder=d.remainder, input_context=input_context,
            split=split)
    else:
        dataset = masked_lm_eval_dataset(
            cache, d.seq_len, batch_size, masking, cls_id, sep_id, pad_id, seed=seed,
            remainder=d.remainder, split=split)
    batch = functools.partial(electra_batch, mask_id=tokenizer.mask_id, seed=seed)
    return dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
