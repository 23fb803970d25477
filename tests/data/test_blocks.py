"""JoinedStream: documents joined with a separator, read by position without building
the joined stream or any per-document array."""

import types

import numpy as np

from tflm.data.blocks import JoinedStream

SEP = 99


def _cache(lengths, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 50, sum(lengths)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    joined = np.concatenate(
        [np.append(ids[a:b], SEP) for a, b in zip(offsets[:-1], offsets[1:])]).astype(np.int32)
    return types.SimpleNamespace(ids=ids, offsets=offsets), joined


def test_reads_equal_the_joined_stream_with_empty_documents():
    lengths = [0, 0, 5, 1, 0, 17, 3, 0, 0, 0, 9, 2]
    cache, joined = _cache(lengths)
    stream = JoinedStream(cache, SEP, "train")
    assert stream.length == len(joined)
    separators = np.flatnonzero(joined == SEP)
    positions = np.arange(len(joined) + 1)
    np.testing.assert_array_equal(stream.separators_before(positions),
                                  np.searchsorted(separators, positions))
    for length in (1, 4, 7):
        starts = np.arange(len(joined) - length + 1)
        expected = joined[starts[:, None] + np.arange(length)]
        np.testing.assert_array_equal(stream.read_runs(starts, length), expected)


def test_blocks_pad_only_past_the_end():
    cache, joined = _cache([4, 0, 9, 6, 1], seed=3)
    stream = JoinedStream(cache, SEP, "train")  # 25 positions
    tokens, lengths = stream.blocks(np.array([3, 0, 2, 4]), 6, pad_id=-1)
    np.testing.assert_array_equal(lengths, [6, 6, 6, 1])
    np.testing.assert_array_equal(tokens[0], joined[18:24])
    np.testing.assert_array_equal(tokens[1], joined[0:6])
    np.testing.assert_array_equal(tokens[3], [joined[24], -1, -1, -1, -1, -1])
