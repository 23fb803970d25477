"""Reading a token cache by position inside tf.data, and packing it into fixed-size blocks.

A token cache is any object with `ids` (int32 1-D: every document's token ids
concatenated; a `tflm.data.token_cache.ShardedIds` view of the shard files or an array)
and `offsets` (int64, len(documents) + 1: document i is `ids[offsets[i]:offsets[i + 1]]`;
memory-mapped in a `tflm.data.token_cache.TokenCache`).

The pipelines never copy `ids` into the graph: each batch reads only its own rows from
the cache on the host (`tf.numpy_function`), and nothing proportional to the corpus is
built in memory (no block table, no per-document array), so the dataset's graph and the
process's memory do not grow with the corpus.
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
        or not _rising(offsets)
    ):
        raise DataError(
            f"corpus split {split}: token cache offsets must rise from 0 to len(ids)="
            f"{len(ids)}; the cache is corrupt, delete it so it is rebuilt."
        )
    return ids, offsets


def _rising(offsets: np.ndarray, chunk: int = 2**20) -> bool:
    """Whether `offsets` never decreases, checked a chunk at a time (no corpus-sized
    temporary for a memory-mapped array)."""
    return all(
        np.all(np.diff(offsets[a : a + chunk + 1]) >= 0)
        for a in range(0, max(len(offsets) - 1, 1), chunk)
    )


def host_call(fn, inputs, dtypes, shapes):
    """`fn(*numpy inputs) -> numpy outputs` as a tf op (`tf.numpy_function`) with static
    shapes set: the pipelines' one way to read the cache inside tf.data."""
    outputs = tf.numpy_function(fn, list(inputs), list(dtypes), stateful=False)
    for output, shape in zip(outputs, shapes):
        output.set_shape(shape)
    return outputs


def host_gather(values):
    """`gather(idx int64 (b,))` -> `values[idx]` as a tf op, read on the host
    (`host_call`), so the examples never become a graph constant (a graph holding a
    whole labelled file grows with it, and one over 2 GB cannot be serialized).

    `values`: a sequence of `str` (gathered as tf.string, UTF-8) or a numpy array
    (N, ...) of numbers (gathered in its dtype).
    """
    if isinstance(values, np.ndarray) and values.dtype != object:
        table, dtype = values, tf.as_dtype(values.dtype)
    else:
        table = np.empty(len(values), object)
        table[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        dtype = tf.string
    shape = [None, *table.shape[1:]]

    def gather(idx):
        return host_call(lambda i: table[i], [idx], [dtype], [shape])[0]

    return gather


class JoinedStream:
    """All documents of a cache with `separator_id` after each one, read by position.

    Stream position p of document d's token t is `offsets[d] + d + t`; the separator of
    document d sits at `sep(d) = offsets[d + 1] + d`, a rising function of d. Length
    `num_tokens + num_documents`. Positions are resolved by binary search over `offsets`
    (memory-mapped in a TokenCache): no per-document array is built.
    """

    def __init__(self, cache, separator_id: int, split: str):
        self.ids, self.offsets = cache_arrays(cache, split)
        self.separator_id = np.int32(separator_id)
        self.num_documents = len(self.offsets) - 1
        self.length = len(self.ids) + self.num_documents

    def separators_before(self, positions: np.ndarray) -> np.ndarray:
        """int64 count of separators at stream positions `< positions` (int64, 1-D)."""
        lo = np.zeros(positions.shape, np.int64)
        hi = np.full(positions.shape, self.num_documents, np.int64)
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) // 2
            below = open_ & (self.offsets[np.minimum(mid + 1, self.num_documents)] + mid
                             < positions)
            lo = np.where(below, mid + 1, lo)
            hi = np.where(open_ & ~below, mid, hi)

    def read_runs(self, starts: np.ndarray, length: int) -> np.ndarray:
        """int32 tokens at positions `starts[:, None] + arange(length)` (each in
        `[0, self.length)`): (b, length)."""
        ends = starts + length
        first, last = self.separators_before(starts), self.separators_before(ends)
        # Every separator inside any run, sorted: sep(d) for d in [first_i, last_i).
        inside = np.unique(np.concatenate(
            [np.arange(a, b) for a, b in zip(first, last)] or [np.zeros(0, np.int64)]))
        seps = np.asarray(self.offsets[inside + 1], np.int64) + inside  # (k,) rising
        positions = starts[:, None] + np.arange(length)  # (b, length)
        # separators before p = separators before its run's start + those in [start, p)
        before = first[:, None] + (np.searchsorted(seps, positions)
                                   - np.searchsorted(seps, starts)[:, None])
        is_sep = np.isin(positions, seps)
        tokens = np.full(positions.shape, self.separator_id, np.int32)
        tokens[~is_sep] = self.ids[(positions - before)[~is_sep]]
        return tokens

    def blocks(self, block_indices: np.ndarray, block_len: int, pad_id: int):
        """Blocks `stream[i * block_len : (i + 1) * block_len]` of int64 `block_indices`
        (b,), padded with `pad_id` past the end: `(int32 (b, block_len), lengths int32 (b,))`."""
        starts = block_indices.astype(np.int64) * block_len  # (b,)
        lengths = np.clip(self.length - starts, 0, block_len)  # real tokens of each block
        tokens = np.full([len(starts), block_len], np.int32(pad_id), np.int32)
        full = lengths == block_len
        if full.any():
            tokens[full] = self.read_runs(starts[full], block_len)
        for i in np.flatnonzero(~full & (lengths > 0)):  # the stream's last, partial block
            tokens[i, : lengths[i]] = self.read_runs(starts[i : i + 1], int(lengths[i]))[0]
        return tokens, lengths.astype(np.int32)

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
