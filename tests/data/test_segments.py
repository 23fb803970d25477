"""SegmentTable: segment and anchor lookups from running totals per group of documents
equal an explicit table of every segment."""

import numpy as np
import pytest

from tflm.data import segments


def _explicit(offsets, segment_len):
    """Every segment's (document, start, end) and the anchor segments, listed."""
    table, anchors = [], []
    for d, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        starts = list(range(a, b, segment_len))
        for j, s in enumerate(starts):
            if j + 1 < len(starts):
                anchors.append(len(table))
            table.append((d, s, min(s + segment_len, b), len(starts)))
    return table, anchors


@pytest.mark.parametrize("group", [1, 3, 4096])
def test_lookups_equal_an_explicit_table(monkeypatch, group):
    monkeypatch.setattr(segments, "GROUP", group)
    rng = np.random.default_rng(group)
    lengths = rng.integers(0, 30, 40)
    lengths[[0, 7, 8, 39]] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    table, anchors = _explicit(offsets, 7)
    seg = segments.SegmentTable(offsets, 7)
    assert (seg.num_segments, seg.num_anchors) == (len(table), len(anchors))
    assert seg.nonempty_documents == np.count_nonzero(lengths)
    start, end = seg.bounds(np.arange(len(table)).reshape(-1, 1))
    np.testing.assert_array_equal(start[:, 0], [t[1] for t in table])
    np.testing.assert_array_equal(end[:, 0], [t[2] for t in table])
    idx = rng.permutation(len(anchors))
    segment, count, first = seg.anchor(idx)
    np.testing.assert_array_equal(segment, np.array(anchors)[idx])
    np.testing.assert_array_equal(count, [table[anchors[i]][3] for i in idx])
    first_of = {d: min(i for i, t in enumerate(table) if t[0] == d) for d, *_ in table}
    np.testing.assert_array_equal(first, [first_of[table[anchors[i]][0]] for i in idx])
