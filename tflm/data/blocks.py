"""Packing a token cache into fixed-size blocks (numpy, done once per pipeline).

A token cache is any object with `ids` (int32 1-D: every document's token ids
concatenated) and `offsets` (int64, len(documents) + 1: document i is
`ids[offsets[i]:offsets[i + 1]]`), e.g. `tflm.data.token_cache.TokenCache`.
"""

import numpy as np

from tflm.errors import DataError


def cache_arrays(cache, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated `(ids int32 (n,), offsets int64 (docs + 1,))` of a token cache."""
    try:
        ids = np.asarray(cache.ids, dtype=np.int32)
        offsets = np.asarray(cache.offsets, dtype=np.int64)
    except AttributeError as err:
        raise DataError(
            f"corpus split {split}: expected a token cache with `ids` and `offsets`, got "
            f"{type(cache).__name__}; build one with tflm.data.token_cache."
        ) from err
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


def joined_stream(ids: np.ndarray, offsets: np.ndarray, separator_id: int) -> np.ndarray:
    """All documents with `separator_id` after each one: int32 (n + docs,)."""
    return np.insert(ids, offsets[1:], np.int32(separator_id)).astype(np.int32)


def pack_blocks(
    stream: np.ndarray,
    block_len: int,
    remainder: str,
    pad_id: int,
    split: str,
    block_name: str,
    min_remainder: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Cuts `stream` into consecutive non-overlapping blocks of `block_len` tokens.

    Returns `(blocks int32 (num_blocks, block_len), lengths int32 (num_blocks,))`; block
    i is `stream[i * block_len : (i + 1) * block_len]`. With `remainder="pad"` a last
    partial block of at least `min_remainder` tokens is kept, padded with `pad_id` at its
    end; with `"drop"` it is dropped. Raises DataError when the stream is shorter than
    one block
    (`block_name` says how `block_len` derives from the config, e.g. "seq_len+1").
    """
    if remainder not in ("drop", "pad"):
        raise DataError(f'remainder must be "drop" or "pad", got {remainder!r}.')
    if len(stream) < block_len:
        raise DataError(
            f"corpus split {split} has {len(stream)} tokens, fewer than one block of "
            f"{block_name}={block_len}; use a bigger corpus or smaller config.data.seq_len."
        )
    full, rest = divmod(len(stream), block_len)
    blocks = stream[: full * block_len].reshape(full, block_len)
    lengths = np.full([full], block_len, np.int32)
    if remainder == "pad" and rest >= min_remainder:
        last = np.full([1, block_len], pad_id, np.int32)
        last[0, :rest] = stream[full * block_len :]
        blocks = np.concatenate([blocks, last])
        lengths = np.append(lengths, np.int32(rest))
    return blocks.astype(np.int32), lengths


def count_blocks(num_tokens: int, block_len: int, remainder: str, min_remainder: int = 1) -> int:
    """Number of blocks `pack_blocks` makes of a stream of `num_tokens` tokens."""
    full, rest = divmod(num_tokens, block_len)
    return full + int(remainder == "pad" and rest >= min_remainder)
