"""NSP / SOP pairs: label balance, pair correctness, swaps, truncation, packing, streams."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.data import pipelines
from tflm.data.pairs import truncate_pair
from tflm.errors import DataError

PAD, CLS, SEP, MASK = 0, 1, 2, 3


def make_cache(doc_lengths):
    """Token t of document d is 100_000 + 1000 * d + t: a token names its doc and place."""
    ids = np.concatenate([100_000 + 1000 * d + np.arange(n) for d, n in enumerate(doc_lengths)])
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids.astype(np.int32), offsets=offsets)


CACHE = make_cache([30, 9, 17, 4, 25, 40, 12])


def take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


def split_pair(tokens, segment_ids, padding_mask):
    """(A, B) of one `[CLS] A [SEP] B [SEP] pad` row, checking its layout."""
    n = padding_mask.sum()
    assert (padding_mask[:n] == 1).all() and (padding_mask[n:] == 0).all()
    assert (tokens[n:] == PAD).all() and tokens[0] == CLS and tokens[n - 1] == SEP
    len_a = int(np.argmax(tokens[1:] == SEP))
    assert (segment_ids[: len_a + 2] == 0).all() and (segment_ids[len_a + 2 : n] == 1).all()
    assert (segment_ids[n:] == 0).all()
    return tokens[1 : len_a + 1], tokens[len_a + 2 : n - 1]


def test_truncate_pair_matches_trimming_one_token_at_a_time():
    cases = np.array([(m, a, b) for m in range(12) for a in range(14) for b in range(14)])
    got_a, got_b = truncate_pair(cases[:, 1], cases[:, 2], cases[:, 0])
    for (max_len, a, b), ga, gb in zip(cases, got_a.numpy(), got_b.numpy()):
        while a + b > max_len:  # BERT's truncate_seq_pair
            if a > b:
                a -= 1
            else:
                b -= 1
        assert (ga, gb) == (a, b)


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_pairs_are_correct_and_labels_balanced(task):
    ds = pipelines.sentence_pair_dataset(CACHE, 11, 16, seed=3, task=task, cls_id=CLS, sep_id=SEP)
    labels = []
    for x, y in take(ds, 40):
        for row in range(16):
            a, b = split_pair(x["token_ids"][row], x["segment_ids"][row], x["padding_mask"][row])
            assert 1 <= len(a) <= 4 and 1 <= len(b) <= 4  # default segment_len (11-3)//2
            assert (np.diff(a) == 1).all() and (np.diff(b) == 1).all()
            same_doc = a[0] // 1000 == b[0] // 1000
            if y[row] == 1:
                assert same_doc and b[0] == a[-1] + 1 and (a[0] - 100_000) % 1000 % 4 == 0
            elif task == "nsp":
                assert not same_doc
            else:
                assert same_doc and a[0] == b[-1] + 1  # swapped
        labels.extend(y)
    assert abs(np.mean(labels) - 0.5) < 0.06


def test_truncation_keeps_length_and_trims_the_longer_side():
    ds = pipelines.sentence_pair_dataset(
        CACHE, 11, 8, seed=0, task="sop", cls_id=CLS, sep_id=SEP, segment_len=7
    )
    for x, _ in take(ds, 10):
        assert x["token_ids"].shape == (8, 11)
        for row in range(8):
            a, b = split_pair(x["token_ids"][row], x["segment_ids"][row], x["padding_mask"][row])
            assert len(a) + len(b) <= 8
            if len(a) + len(b) == 8 and min(len(a), len(b)) < 4:
                assert max(len(a), len(b)) == 8 - min(len(a), len(b))  # shorter kept whole


def test_masking_resume_and_shards():
    spec = pipelines.MaskingSpec(MASK, 200_000, (PAD, CLS, SEP), max_predictions=3)
    make = lambda start=0, ctx=None: pipelines.sentence_pair_dataset(  # noqa: E731
        CACHE,
        12,
        4,
        seed=1,
        task="nsp",
        cls_id=CLS,
        sep_id=SEP,
        masking=spec,
        start_step=start,
        input_context=ctx,
    )
    full = take(make(), 4)
    x, y, w = full[0]
    assert set(x) == {"token_ids", "padding_mask", "segment_ids", "mask_positions"}
    assert y["mask_ids"].shape == w["mask_ids"].shape == (4, 3)
    assert y["next_sentence_label"].shape == (4,)
    for a, b in zip(full[1:], take(make(start=1), 3)):
        np.testing.assert_array_equal(a[0]["token_ids"], b[0]["token_ids"])
        np.testing.assert_array_equal(a[1]["next_sentence_label"], b[1]["next_sentence_label"])
    halves = [take(make(ctx=tf.distribute.InputContext(2, i, 2)), 4) for i in range(2)]
    for step in range(4):
        joined = np.concatenate([halves[0][step][0]["token_ids"], halves[1][step][0]["token_ids"]])
        np.testing.assert_array_equal(joined, full[step][0]["token_ids"])


def test_eval_dataset_has_one_pair_per_anchor_segment():
    ds = pipelines.sentence_pair_eval_dataset(CACHE, 11, 16, task="sop", cls_id=CLS, sep_id=SEP)
    # segments of 4: docs 30, 9, 17, 4, 25, 40, 12 -> 8+3+5+1+7+10+3 = 37, anchors 37 - 7
    assert sum(len(y) for _, y in take(ds, 100)) == 30


def test_errors_say_what_to_do():
    with pytest.raises(DataError, match="task"):
        pipelines.sentence_pair_dataset(CACHE, 11, 4, 0, task="mlm", cls_id=CLS, sep_id=SEP)
    with pytest.raises(DataError, match="two non-empty"):
        pipelines.sentence_pair_dataset(
            make_cache([30]), 11, 4, 0, task="nsp", cls_id=CLS, sep_id=SEP
        )
    with pytest.raises(DataError, match="no document is longer"):
        pipelines.sentence_pair_dataset(
            make_cache([3, 2]), 11, 4, 0, task="sop", cls_id=CLS, sep_id=SEP
        )
