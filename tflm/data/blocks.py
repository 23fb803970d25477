"""Reading a token cache by position inside tf.data, and packing it into fixed-size blocks.

A token cache is any object with `ids` (int32 1-D: every document's token ids
concatenated; a memory-mapped file, a `tflm.data.token_cache.ShardedIds` view or an
array) and `offsets` (int64, len(documents) + 1: document i is
`ids[offsets[i]:offsets[i + 1]]`), e.g. `tflm.data.token_cache.TokenCache`.

The pipelines never copy `ids` into the graph: each batch reads only its own rows from
the cache on the host (`tf.numpy_function`), so the dataset's graph and the process's
memory do not grow with the corpus. Only `offsets` (8 bytes a document) is held in memory.
"""

import numpy as np
import tensorflow as tf

from tflm.errors import DataError


def cache_arrays(cache, split: str):
    """Validated `(ids, offsets int64 (docs + 1,))` of a token cache; `ids` is not copied
    (a memory-map or a sharded view stays one; anything else becomes an int32 array)."""
    try:
        ids, offsets = cache.ids, np.asarray(cache.offsets, dtype=np.int64)
    except AttributeError as err:
        raise DataError(
            f"corpus split {split}: expected a token cache with `ids` and `offsets`, got "
            f"{type(cache).__name__}; build one with tflm.data.token_cache."
        ) from err
    if not getattr(ids, "lazy_view", False):
        ids = np.asarray(ids, dtype=np.int32)
    if (
        ids.ndim != 1
        or offsets.ndim != 1
        or len(offsets) < 1
        or offsets[0] != 0
        or offsets[-1] != len(ids)
        or np.any(np.diff(offsets) < 0)
    ):
        raise DataError(
            f"corpus split {split}: token cache offsets must rise from 0 to len(ids)="
            f"{len(ids)}; the cache is corrupt, delete it so it is rebuilt."
        )
    return ids, offsets


def host_call(fn, inputs, dtypes, shapes):
    """`fn(*numpy inputs) -> numpy outputs` as a tf op (`tf.numpy_function`) with static
    shapes set: the pipelines' one way to read the cache inside tf.data."""
    outputs = tf.numpy_function(fn, list(inputs), list(dtypes), stateful=False)
    for output, shape in zip(outputs, shapes):
        output.set_shape(shape)
    return outputs


class JoinedStream:
    """All documents of a cache with `separator_id` after each one, read by position.

    Stream position p of document d's token t is `offsets[d] + d + t`; the separator of
    document d sits at `offsets[d + 1] + d`. Length `num_tokens + num_documents`.
    """

    def __init__(self, cache, separator_id: int, split: str):
        self.ids, offsets = cache_arrays(cache, split)
        self.separator_id = np.int32(separator_id)
        self.separators = offsets[1:] + np.arange(len(offsets) - 1)  # (docs,)
        self.length = len(self.ids) + len(offsets) - 1

    def read(self, positions: np.ndarray) -> np.ndarray:
        """int32 tokens at int64 `positions` (any shape, each in `[0, length)`)."""
        flat = positions.reshape(-1)
        before = np.searchsorted(self.separators, flat)  # separators before each position
        is_sep = before < len(self.separators)
        is_sep[is_sep] = self.separators[before[is_sep]] == flat[is_sep]
        tokens = np.full(flat.shape, self.separator_id, np.int32)
        if (~is_sep).any():
            tokens[~is_sep] = self.ids[flat[~is_sep] - before[~is_sep]]
        return tokens.reshape(positions.shape)

    def blocks(self, block_indices: np.ndarray, block_len: int, pad_id: int):
        """Blocks `stream[i * block_len : (i + 1) * block_len]` of int64 `block_indices`
        (b,), padded with `pad_id` past the end: `(int32 (b, block_len), lengths int32 (b,))`."""
        positions = block_indices[:, None] * block_len + np.arange(block_len)  # (b, L)
        inside = positions < self.length
        tokens = np.full(positions.shape, np.int32(pad_id), np.int32)
        tokens[inside] = self.read(positions[inside])
        return tokens, inside.sum(axis=1).astype(np.int32)

    def num_blocks(
        self, block_len: int, remainder: str, split: str, block_name: str, min_remainder: int = 1
    ) -> int:
        """Blocks of one pass, as `count_blocks`; raises DataError below one block."""
        if remainder not in ("drop", "pad"):
            raise DataError(f'remainder must be "drop" or "pad", got {remainder!r}.')
        if self.length < block_len:
            raise DataError(
                f"corpus split {split} has {self.length} tokens, fewer than one block of "
                f"{block_name}={block_len}; use a bigger corpus or smaller config.data.seq_len."
            )
        return count_blocks(self.length, block_len, remainder, min_remainder)


def count_blocks(num_tokens: int, block_len: int, remainder: str, min_remainder: int = 1) -> int:
    """Number of consecutive non-overlapping blocks of `block_len` of a stream of
    `num_tokens` tokens: the full ones, plus a last partial one of at least
    `min_remainder` tokens with `remainder="pad"` ("drop" drops it)."""
    full, rest = divmod(num_tokens, block_len)
    return full + int(remainder == "pad" and rest >= min_remainder)
