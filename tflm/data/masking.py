"""BERT masked-LM masking as a pure function of the tokens and explicit noise.

`tensorflow_text.mask_language_model` (and keras-hub's `MaskedLMMaskGenerator` built on
it) draw with stateful random ops, so a resumed run could not reproduce its masks; here the
randomness is a noise tensor the pipeline draws with `tf.random.stateless_uniform` from
`(seed, step)`, and the masking itself is a deterministic function of it.

Per sequence, `count = min(max_predictions, max(1, round(mask_rate * candidates)))`
candidate tokens (not special, not padding) are selected in a random order of words
(whole-word masking) or tokens; a word is taken only whole, so selection stops at the
first word that would overflow `count`. Of the selected tokens 80% become `mask_id`, 10% a
random non-special token and 10% stay unchanged.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tflm.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class MaskingSpec:
    """What to mask and how often.

    Attributes:
        mask_id: id of `[MASK]`.
        vocabulary_size: ids are in `[0, vocabulary_size)`.
        special_ids: ids never selected nor used as random replacements (CLS, SEP, PAD...);
            a sequence, or a Tokenizer's `special_ids` dict (role -> id).
        mask_rate: fraction of candidate tokens selected.
        max_predictions: most selected tokens per sequence (size of the mask_* features).
        word_start: optional bool (vocabulary_size,): True where a token starts a word
            (for WordPiece, ids not starting with "##"); enables whole-word masking.
    """

    mask_id: int
    vocabulary_size: int
    special_ids: Sequence[int] | Mapping[str, int]
    mask_rate: float = 0.15
    max_predictions: int = 20
    word_start: np.ndarray | None = None

    def __post_init__(self):
        if not 0.0 < self.mask_rate < 1.0:
            raise DataError(f"config.data.mask_rate must be in (0, 1), got {self.mask_rate}.")
        if self.max_predictions < 1:
            raise DataError(
                f"config.data.max_predictions must be >= 1, got {self.max_predictions}."
            )
        if self.word_start is not None and len(self.word_start) != self.vocabulary_size:
            raise DataError(
                f"word_start has {len(self.word_start)} entries but the vocabulary has "
                f"{self.vocabulary_size}; build it from the same tokenizer."
            )

    def special_table(self) -> np.ndarray:
        """bool (vocabulary_size,): True for special ids (and `mask_id`)."""
        ids = self.special_ids
        ids = list(ids.values()) if isinstance(ids, Mapping) else list(ids)  # Tokenizer's dict
        table = np.zeros([self.vocabulary_size], bool)
        table[np.asarray([i for i in ids if i is not None] + [self.mask_id], np.int64)] = True
        return table


def word_starts(vocabulary: Sequence[str], continuation_prefix: str = "##") -> np.ndarray:
    """bool (len(vocabulary),): True where a token does not continue a word (WordPiece)."""
    return np.array([not t.startswith(continuation_prefix) for t in vocabulary], bool)


def mask_tokens(
    token_ids: tf.Tensor, padding_mask: tf.Tensor, noise: tf.Tensor, spec: MaskingSpec
) -> dict:
    """Masks a batch of sequences.

    Args:
        token_ids: int32 (B, T).
        padding_mask: int/bool (B, T), 1 on real tokens.
        noise: float32 (3, B, T) uniform in [0, 1): selection order, 80/10/10 choice,
            random replacement token.
        spec: a `MaskingSpec`.

    Returns:
        dict: `token_ids` int32 (B, T) with the masks applied; `mask_positions` int32
        (B, P) ascending positions of the selected tokens, then zeros; `mask_ids` int32
        (B, P) their original ids (0 where unused); `mask_weights` float32 (B, P), 1 on
        used slots. P = `spec.max_predictions`.
    """
    special_table = spec.special_table()
    special = tf.constant(special_table)
    replacements = tf.constant(np.flatnonzero(~special_table).astype(np.int32))
    batch, length = tf.shape(token_ids)[0], token_ids.shape[1]
    positions = tf.range(length)
    candidate = tf.logical_and(
        tf.logical_not(tf.gather(special, token_ids)), tf.cast(padding_mask, tf.bool)
    )  # (B, T)

    # Units: a word (whole-word masking) or a token; every non-candidate is its own unit.
    if spec.word_start is not None:
        previous = tf.pad(candidate[:, :-1], [[0, 0], [1, 0]])  # (B, T), False at t=0
        word_start = tf.gather(tf.constant(np.asarray(spec.word_start, bool)), token_ids)
        starts = tf.logical_not(candidate) | word_start | tf.logical_not(previous)
    else:
        starts = tf.ones_like(candidate)
    unit = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1  # (B, T) in [0, T)

    # Order units by their noise (a unit's positions stay contiguous: stable sort).
    score = tf.gather(noise[0], unit, batch_dims=1)
    score = tf.where(candidate, score, 2.0)
    order = tf.argsort(score, axis=1, stable=True)  # (B, T)
    rank = tf.argsort(order, axis=1)  # (B, T): position -> place in the order
    num_candidates = tf.reduce_sum(tf.cast(candidate, tf.float32), axis=1)
    count = tf.cast(tf.round(num_candidates * spec.mask_rate), tf.int32)
    count = tf.minimum(spec.max_predictions, tf.maximum(count, 1))
    count = tf.where(num_candidates > 0, count, 0)  # (B,)
    flat_unit = unit + tf.range(batch)[:, None] * length  # unique over the batch
    unit_last = tf.math.unsorted_segment_max(rank, flat_unit, batch * length)
    selected = candidate & (tf.gather(unit_last, flat_unit) < count[:, None])  # (B, T)

    # 80% [MASK], 10% random non-special token, 10% unchanged.
    pick = tf.cast(noise[2] * tf.cast(tf.size(replacements), tf.float32), tf.int32)
    random_ids = tf.gather(replacements, tf.minimum(pick, tf.size(replacements) - 1))
    kept_or_random = tf.where(noise[1] < 0.9, random_ids, token_ids)
    new_ids = tf.where(noise[1] < 0.8, spec.mask_id, kept_or_random)
    masked = tf.where(selected, new_ids, token_ids)

    # Selected positions first, ascending: top_k of (T - position) over selected ones.
    k = min(spec.max_predictions, length)
    key = tf.where(selected, length - positions[None, :], -1)
    _, mask_positions = tf.math.top_k(key, k=k)  # (B, k)
    used = tf.gather(selected, mask_positions, batch_dims=1)
    mask_positions = tf.where(used, mask_positions, 0)
    mask_ids = tf.where(used, tf.gather(token_ids, mask_positions, batch_dims=1), 0)
    pad = [[0, 0], [0, spec.max_predictions - k]]
    return {
        "token_ids": masked,
        "mask_positions": tf.pad(mask_positions, pad),
        "mask_ids": tf.pad(mask_ids, pad),
        "mask_weights": tf.pad(tf.cast(used, tf.float32), pad),
    }


def step_noise(
    seed: int, step: tf.Tensor, channels: int, batch_size: int, length: int, salt: int
) -> tf.Tensor:
    """float32 (channels, batch_size, length) uniform noise of the global batch of `step`."""
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    pair = tf.random.experimental.stateless_fold_in(pair, salt)
    return tf.random.stateless_uniform([channels, batch_size, length], seed=pair)
