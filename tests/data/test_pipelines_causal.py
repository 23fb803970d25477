"""Causal LM pipeline: label shift, packing, padding, determinism, resume, epochs, sharding."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.data import pipelines
from tflm.errors import DataError

EOS, PAD = 1, 0


def make_cache(doc_lengths, seed=0):
    """Token cache of documents with the given lengths; ids in [2, 1000)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 1000, size=sum(doc_lengths)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids, offsets=offsets)


def joined(cache):
    """The eos-joined stream, written out the slow obvious way."""
    out = []
    for i in range(len(cache.offsets) - 1):
        out += list(cache.ids[cache.offsets[i] : cache.offsets[i + 1]]) + [EOS]
    return np.array(out)


def take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


CACHE = make_cache([7, 30, 3, 12, 25, 9, 40, 5])  # 131 + 8 eos = 139 tokens


def test_label_shift_and_blocks_are_contiguous_slices():
    seq_len = 8
    stream = joined(CACHE)
    ds = pipelines.causal_lm_dataset(CACHE, seq_len, batch_size=4, seed=3, eos_id=EOS)
    for x, y, w in take(ds, 5):
        assert x["token_ids"].shape == y.shape == w.shape == (4, seq_len)
        assert x["token_ids"].dtype == y.dtype == np.int32 and w.dtype == np.float32
        np.testing.assert_array_equal(x["token_ids"][:, 1:], y[:, :-1])
        assert (w == 1).all() and (x["padding_mask"] == 1).all()
        for tokens, labels in zip(x["token_ids"], y):
            block = np.concatenate([tokens, labels[-1:]])
            starts = [s for s in range(0, len(stream) - seq_len, seq_len + 1)]
            assert any((stream[s : s + seq_len + 1] == block).all() for s in starts)


def test_padding_only_at_the_end_of_the_last_block():
    seq_len = 10  # 139 tokens = 12 blocks of 11 + 7 left over
    ds = pipelines.causal_lm_eval_dataset(CACHE, seq_len, 5, eos_id=EOS, remainder="pad")
    batches = take(ds, 10)
    assert [len(b[1]) for b in batches] == [5, 5, 3]
    x, y, w = (np.concatenate(p) for p in zip(*[(b[0]["token_ids"], b[1], b[2]) for b in batches]))
    mask = np.concatenate([b[0]["padding_mask"] for b in batches])
    np.testing.assert_array_equal(mask, w)
    assert w[:12].all()
    np.testing.assert_array_equal(w[12], [1] * 6 + [0] * 4)  # 7 tokens -> 6 labels
    np.testing.assert_array_equal(y[12][6:], PAD)
    stream = joined(CACHE)
    np.testing.assert_array_equal(np.concatenate([x[:12], y[:12, -1:]], 1).ravel(), stream[:132])
    np.testing.assert_array_equal(y[12][:6], stream[133:])
    dropped = take(pipelines.causal_lm_eval_dataset(CACHE, seq_len, 5, eos_id=EOS), 10)
    assert sum(len(b[1]) for b in dropped) == 12
    assert pipelines.num_blocks(CACHE, seq_len) == 12
    assert pipelines.num_blocks(CACHE, seq_len, remainder="pad") == 13


def test_same_seed_and_step_same_batch_and_resume_equals_tail():
    make = lambda start, seed=5: pipelines.causal_lm_dataset(  # noqa: E731
        CACHE, 6, batch_size=3, seed=seed, start_step=start, eos_id=EOS
    )
    full = take(make(0), 12)
    for k in (1, 7):
        tail = take(make(k), 12 - k)
        for a, b in zip(full[k:], tail):
            np.testing.assert_array_equal(a[0]["token_ids"], b[0]["token_ids"])
            np.testing.assert_array_equal(a[1], b[1])
    other = take(make(0, seed=6), 12)
    assert any((a[1] != b[1]).any() for a, b in zip(full, other))


def test_each_epoch_covers_every_block_once():
    seq_len, batch = 6, 4  # 139 // 7 = 19 blocks
    n = pipelines.num_blocks(CACHE, seq_len)
    batches = take(pipelines.causal_lm_dataset(CACHE, seq_len, batch, seed=1, eos_id=EOS), 19)
    labels = np.concatenate([b[1] for b in batches])  # 76 blocks = 4 epochs of 19
    expected = sorted(map(tuple, labels[:n]))
    for epoch in range(4):
        assert sorted(map(tuple, labels[epoch * n : (epoch + 1) * n])) == expected
        assert len(set(map(tuple, labels[epoch * n : (epoch + 1) * n]))) == n
    assert (labels[:n] != labels[n : 2 * n]).any()  # reshuffled each epoch


def test_two_workers_take_disjoint_halves_of_the_global_batch():
    global_batch = take(pipelines.causal_lm_dataset(CACHE, 6, 8, seed=2, eos_id=EOS), 3)
    shards = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=4
        )
        ds = pipelines.causal_lm_dataset(CACHE, 6, 8, seed=2, eos_id=EOS, input_context=ctx)
        shards.append(take(ds, 6))  # 2 local replicas x 3 steps, batches of 2
    for step in range(3):
        parts = [shards[w][2 * step + r][1] for w in range(2) for r in range(2)]
        assert all(p.shape == (2, 6) for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), global_batch[step][1])


def test_batch_not_divisible_by_replicas_is_a_data_error():
    ctx = tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=3
    )
    with pytest.raises(DataError, match="batch_size"):
        pipelines.causal_lm_dataset(CACHE, 6, 8, seed=0, eos_id=EOS, input_context=ctx)


def test_corpus_smaller_than_one_block_is_a_data_error():
    tiny = make_cache([3, 2])
    with pytest.raises(DataError, match=r"split train has 7 tokens.*seq_len\+1=9.*seq_len"):
        pipelines.causal_lm_dataset(tiny, 8, 2, seed=0, eos_id=EOS)
    with pytest.raises(DataError, match="split validation"):
        pipelines.causal_lm_eval_dataset(tiny, 8, 2, eos_id=EOS)


def test_distributed_dataset_feeds_each_replica():
    strategy = tf.distribute.get_strategy()
    dist = pipelines.distributed_dataset(
        strategy,
        lambda ctx: pipelines.causal_lm_dataset(CACHE, 6, 4, seed=0, eos_id=EOS, input_context=ctx),
    )
    x, y, w = next(iter(dist))
    assert y.shape == (4, 6)
