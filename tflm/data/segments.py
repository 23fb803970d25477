"""The segments of a token cache's documents, for sentence-pair (NSP / SOP) examples.

Document d (length n) holds `count(d) = ceil(n / segment_len)` consecutive segments
numbered from `first(d)`; segment `first(d) + j` is tokens
`[offsets[d] + j * segment_len, min(that + segment_len, offsets[d + 1]))`. An anchor is a
segment with a successor in its document (anchor i: the i-th such segment).

Nothing per document or per segment is held: only running totals at every
`GROUP`-th document; a lookup counts inside its group from `offsets` (memory-mapped in a
`tflm.data.token_cache.TokenCache`).
"""

import numpy as np

GROUP = 4096  # documents per group of the running totals


class SegmentTable:
    """Segment and anchor lookups over int64 `offsets` (documents + 1,) (see the module
    docstring). Attributes: `num_segments`, `num_anchors`, `nonempty_documents`."""

    def __init__(self, offsets: np.ndarray, segment_len: int):
        self.offsets, self.segment_len = offsets, segment_len
        self.num_documents = len(offsets) - 1
        segments, anchors, nonempty = [0], [0], 0
        for a in range(0, self.num_documents, GROUP):
            count = self._counts(a)
            segments.append(segments[-1] + int(count.sum()))
            anchors.append(anchors[-1] + int(np.maximum(count - 1, 0).sum()))
            nonempty += int(np.count_nonzero(count))
        self.segments_before = np.array(segments, np.int64)  # (groups + 1,)
        self.anchors_before = np.array(anchors, np.int64)  # (groups + 1,)
        self.num_segments, self.num_anchors = segments[-1], anchors[-1]
        self.nonempty_documents = nonempty

    def _counts(self, start: int) -> np.ndarray:
        """int64 segment counts of the documents of the group starting at `start`."""
        lengths = np.diff(np.asarray(self.offsets[start : start + GROUP + 1], np.int64))
        return (lengths + self.segment_len - 1) // self.segment_len

    def _find(self, values: np.ndarray, anchors: bool):
        """For int64 `values` (1-D) numbering segments (or anchors): int64 `(document,
        that document's count, its first segment, the segments (or anchors) before it)`."""
        totals = self.anchors_before if anchors else self.segments_before
        group = np.searchsorted(totals, values, side="right") - 1
        out = [np.zeros(values.shape, np.int64) for _ in range(4)]
        for g in np.unique(group):
            here = group == g
            count = self._counts(g * GROUP)  # (group's documents,)
            per_doc = np.maximum(count - 1, 0) if anchors else count
            end = totals[g] + np.cumsum(per_doc)  # units up to and with each document
            local = np.searchsorted(end, values[here], side="right")
            first = self.segments_before[g] + np.cumsum(count) - count
            out[0][here] = g * GROUP + local
            out[1][here], out[2][here] = count[local], first[local]
            out[3][here] = end[local] - per_doc[local]
        return out

    def anchor(self, idx: np.ndarray):
        """Anchor indices (b,) -> int64 `(segment, its document's count, first)` (b,) each."""
        _, count, first, before = self._find(np.asarray(idx, np.int64), anchors=True)
        return first + idx - before, count, first

    def bounds(self, segments: np.ndarray):
        """Segment ids (any shape) -> int64 `(start, end)` token positions."""
        flat = np.asarray(segments, np.int64).reshape(-1)
        doc, _, first, _ = self._find(flat, anchors=False)
        start = np.asarray(self.offsets[doc], np.int64) + (flat - first) * self.segment_len
        end = np.minimum(start + self.segment_len, self.offsets[doc + 1])
        shape = np.shape(segments)
        return start.reshape(shape), end.reshape(shape)
