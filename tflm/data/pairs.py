"""Sentence-pair pipelines: next sentence prediction (BERT) and sentence order (ALBERT).

Each document is cut into consecutive segments of `segment_len` tokens (the last one of a
document may be shorter). An example starts from a segment A that has a successor in its
document and packs `[CLS] A [SEP] B [SEP]`:
- "nsp": B is the next segment (label 1) or, half the time, a uniformly drawn segment of
  another document (label 0);
- "sop": B is the next segment (label 1) or, half the time, A and B are swapped (label 0).
So `next_sentence_label == 1` exactly when B directly follows A in the same document.
The segments are looked up per batch on the host with the tokens
(`tflm.data.segments.SegmentTable`), so nothing grows with the corpus in the graph or in
memory; the choices per example
are stateless random draws from `(seed, step)`, so batches are a deterministic function
of `(seed, step)`.
"""

import numpy as np
import tensorflow as tf

from tflm.data import step_stream
from tflm.data.blocks import cache_arrays, host_call
from tflm.data.masking import MaskingSpec, mask_tokens, step_noise
from tflm.data.segments import SegmentTable
from tflm.errors import DataError

TASKS = ("nsp", "sop")


def truncate_pair(len_a, len_b, max_len):
    """Lengths after BERT's `truncate_seq_pair`: trims the longer side first, B on ties.

    Args: int tensors (or numbers) of the same shape. Returns `(len_a, len_b)` with
    `len_a + len_b <= max_len`.
    """
    len_a, len_b = tf.convert_to_tensor(len_a), tf.convert_to_tensor(len_b)
    max_len = tf.cast(max_len, len_a.dtype)
    short = tf.minimum(len_a, len_b)
    # The short side survives whole when it fits in half; otherwise both end near half.
    a = tf.where(
        2 * short <= max_len,
        tf.where(len_a > len_b, max_len - len_b, len_a),
        max_len - max_len // 2,
    )
    b = tf.where(
        2 * short <= max_len, tf.where(len_a > len_b, len_b, max_len - len_a), max_len // 2
    )
    fits = len_a + len_b <= max_len
    return tf.where(fits, len_a, a), tf.where(fits, len_b, b)


def _batch_maker(
    cache, task, seq_len, batch_size, seed, cls_id, sep_id, pad_id, segment_len, masking, split
):
    """`(num_anchors, make_batch(step, row_start, indices))` of the pair pipeline."""
    if task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got {task!r}.")
    ids, offsets = cache_arrays(cache, split)
    segment_len = segment_len or (seq_len - 3) // 2
    seg = SegmentTable(offsets, segment_len)
    if not seg.num_anchors:
        raise DataError(
            f"corpus split {split}: no document is longer than one segment of {segment_len} "
            "tokens, so no sentence pair can be built; use longer documents, a smaller "
            "config.data.seq_len, or masked LM without pairs (config.model.pair_task='none')."
        )
    if task == "nsp" and seg.nonempty_documents < 2:
        raise DataError(
            f"corpus split {split}: next sentence prediction needs at least two non-empty "
            "documents to draw random segments from; add documents, or use sentence order "
            "(config.model.pair_task='sop') or no pairs ('none')."
        )
    num_segments = seg.num_segments

    def make_batch(step, row_start, idx):
        a, doc_count, first_of_doc = host_call(
            seg.anchor, [idx], [tf.int64] * 3, [[None]] * 3)  # (b,) each
        rows = tf.shape(idx, out_type=tf.int64)[0]
        coin, pick = tf.unstack(step_noise(seed, step, 2, batch_size, 1, salt=2)[:, :, 0])
        coin, pick = coin[row_start : row_start + rows], pick[row_start : row_start + rows]
        label = coin < 0.5  # (b,)
        if task == "nsp":
            others = num_segments - doc_count  # segments elsewhere
            r = tf.minimum(tf.cast(pick * tf.cast(others, tf.float32), tf.int64), others - 1)
            random_seg = tf.where(r >= first_of_doc, r + doc_count, r)
            seg_a, seg_b = a, tf.where(label, a + 1, random_seg)
        else:
            seg_a, seg_b = tf.where(label, a, a + 1), tf.where(label, a + 1, a)
        x = pack_pair(ids, seg, seg_a, seg_b, seq_len, cls_id, sep_id, pad_id)
        label = tf.cast(label, tf.int32)
        if masking is None:
            return x, label
        noise = step_noise(seed, step, 3, batch_size, seq_len, salt=1)
        masked = mask_tokens(
            x["token_ids"], x["padding_mask"], noise[:, row_start : row_start + rows], masking
        )
        x = dict(x, token_ids=masked["token_ids"], mask_positions=masked["mask_positions"])
        y = {"mask_ids": masked["mask_ids"], "next_sentence_label": label}
        weights = {
            "mask_ids": masked["mask_weights"],
            "next_sentence_label": tf.ones_like(label, tf.float32),
        }
        return x, y, weights

    return seg.num_anchors, make_batch


def pack_pair(ids, seg, seg_a, seg_b, seq_len, cls_id, sep_id, pad_id):
    """`[CLS] A [SEP] B [SEP]` of segments `seg_a`, `seg_b` int64 (b,) of a `SegmentTable`
    over the token ids `ids` (read on the host): `{"token_ids", "padding_mask",
    "segment_ids"}` int32 (b, seq_len)."""
    start_a, end_a, start_b, end_b = host_call(
        lambda a, b: (*seg.bounds(a), *seg.bounds(b)), [seg_a, seg_b], [tf.int64] * 4,
        [[None]] * 4)
    len_a, len_b = truncate_pair(end_a - start_a, end_b - start_b, seq_len - 3)
    t = tf.range(seq_len, dtype=tf.int64)[None, :]  # (1, T)
    start_a, start_b, len_a, len_b = (v[:, None] for v in (start_a, start_b, len_a, len_b))
    in_a = (t >= 1) & (t <= len_a)
    in_b = (t >= len_a + 2) & (t <= len_a + len_b + 1)
    source = tf.where(in_a, start_a + t - 1, tf.where(in_b, start_b + t - len_a - 2, 0))
    read = host_call(lambda p, keep: np.where(keep, _take(ids, p, keep), np.int32(pad_id)),
                     [source, in_a | in_b], [tf.int32], [[None, seq_len]])[0]
    tokens = tf.where(t == 0, cls_id, read)  # (b, T)
    tokens = tf.where((t == len_a + 1) | (t == len_a + len_b + 2), sep_id, tokens)
    real = t <= len_a + len_b + 2
    second = (t >= len_a + 2) & real
    return {
        "token_ids": tokens,
        "padding_mask": tf.cast(real, tf.int32),
        "segment_ids": tf.cast(second, tf.int32),
    }


def _take(ids, positions: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """int32 `ids[positions]` where `keep`, 0 elsewhere (only kept positions are read)."""
    out = np.zeros(positions.shape, np.int32)
    out[keep] = ids[positions[keep]]
    return out


def sentence_pair_dataset(
    cache,
    seq_len: int,
    batch_size: int,
    seed: int,
    task: str,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    segment_len: int | None = None,
    masking: MaskingSpec | None = None,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool = True,
    split: str = "train",
) -> tf.data.Dataset:
    """Endless NSP / SOP batches of steps `start_step, start_step + 1, ...`.

    Args:
        task: "nsp" or "sop" (see the module docstring).
        segment_len: tokens per segment; default `(seq_len - 3) // 2` (never truncated).
            Longer segments are truncated to fit, the longer side first.
        masking: a `MaskingSpec` to add BERT masking (MLM + NSP pre-training).
        Other arguments as `causal_lm_dataset`.

    Returns:
        Without masking `(x, y)`: `x = {"token_ids", "padding_mask", "segment_ids"}` int32
        (B, seq_len) (`segment_ids` 1 on B and its [SEP]), `y` = next_sentence_label int32
        (B,). With masking `(x, y, sample_weight)`: `x` adds `mask_positions`, `y =
        {"mask_ids", "next_sentence_label"}`, `sample_weight = {"mask_ids": mask_weights,
        "next_sentence_label": ones}`.
    """
    count, make_batch = _batch_maker(
        cache, task, seq_len, batch_size, seed, cls_id, sep_id, pad_id, segment_len, masking, split
    )
    return step_stream.training_stream(
        count, batch_size, seed, start_step, input_context, make_batch,
        deterministic,
    )


def sentence_pair_eval_dataset(
    cache,
    seq_len: int,
    batch_size: int,
    task: str,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    segment_len: int | None = None,
    masking: MaskingSpec | None = None,
    seed: int = 0,
    split: str = "validation",
) -> tf.data.Dataset:
    """Finite, unshuffled pairs, one per anchor segment, the same draws on every call."""
    count, make_batch = _batch_maker(
        cache, task, seq_len, batch_size, seed, cls_id, sep_id, pad_id, segment_len, masking, split
    )
    batches = tf.data.Dataset.range(count).batch(batch_size).enumerate()
    return step_stream.finish(
        batches, lambda step, idx: make_batch(step, tf.constant(0, tf.int64), idx)
    )
