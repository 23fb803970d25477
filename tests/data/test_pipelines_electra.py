"""electra_pipeline: masked batches keyed like ElectraPretrainer's outputs, with the
generator's sample noise a deterministic function of each row."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.config import base_config
from tflm.data.electra import electra_batch, electra_pipeline
from tflm.text import train_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.",
         "A function returns a value; functions are defined with the def statement.",
         "Classes define methods, attributes and properties of their instances."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("wordpiece", TEXTS, 150, lowercase=True)


@pytest.fixture(scope="module")
def caches(tokenizer):
    docs = [tokenizer.encode([t])[0] * 3 for t in TEXTS]  # documents of ~45 tokens
    ids = np.concatenate([np.asarray(d, np.int32) for d in docs])
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    cache = types.SimpleNamespace(ids=ids, offsets=offsets)
    return {"train": cache, "validation": cache}


def _config():
    config = base_config("electra")
    config.data.update(seq_len=32, max_predictions=6)
    return config


def _batches(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


def test_batches_mask_every_picked_token_and_keep_the_originals(tokenizer, caches):
    dataset = electra_pipeline(caches, tokenizer, _config(), 4, split="train", training=True,
                               seed=3)
    (x, y, w), = _batches(dataset, 1)
    assert set(y) == set(w) == {"mlm", "rtd"}
    positions, weights = x["mask_positions"], x["mask_weights"]
    used = weights > 0
    picked = np.take_along_axis(x["token_ids"], positions, axis=1)
    assert np.all(picked[used] == tokenizer.mask_id)  # all [MASK], no 10% random / kept
    np.testing.assert_array_equal(np.take_along_axis(y["rtd"], positions, axis=1)[used],
                                  y["mlm"][used])
    unpicked = np.ones_like(x["token_ids"], bool)
    for row, slot in zip(*np.nonzero(used)):
        unpicked[row, positions[row, slot]] = False
    np.testing.assert_array_equal(x["token_ids"][unpicked], y["rtd"][unpicked])
    assert tokenizer.mask_id not in y["rtd"]
    np.testing.assert_array_equal(w["rtd"], x["padding_mask"])  # padding is never scored
    np.testing.assert_array_equal(w["mlm"], weights)
    assert x["sample_noise"].shape == positions.shape
    assert np.all((x["sample_noise"] >= 0) & (x["sample_noise"] < 1))


def test_padding_gets_zero_rtd_weight():
    ids = np.array([[2, 20, 21, 22, 3, 0, 0]], np.int32)
    x = {"token_ids": tf.constant(ids), "padding_mask": tf.constant((ids > 0).astype(np.int32)),
         "segment_ids": tf.zeros_like(ids), "mask_positions": tf.constant([[2, 0]])}
    _, y, w = electra_batch(x, tf.constant([[21, 0]]), tf.constant([[1.0, 0.0]]), mask_id=4,
                            seed=0)
    np.testing.assert_array_equal(w["rtd"], [[1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(y["rtd"], ids)


def test_a_resumed_stream_and_evaluation_repeat_their_samples_noise(tokenizer, caches):
    config = _config()
    run = _batches(electra_pipeline(caches, tokenizer, config, 4, split="train",
                                    training=True, seed=1), 3)
    resumed = _batches(electra_pipeline(caches, tokenizer, config, 4, split="train",
                                        training=True, seed=1, start_step=2), 1)
    np.testing.assert_array_equal(resumed[0][0]["sample_noise"], run[2][0]["sample_noise"])
    assert not np.array_equal(run[0][0]["sample_noise"], run[1][0]["sample_noise"])
    first, second = (_batches(electra_pipeline(caches, tokenizer, config, 4,
                                               split="validation", training=False, seed=0), 2)
                     for _ in range(2))
    np.testing.assert_array_equal(first[1][0]["sample_noise"], second[1][0]["sample_noise"])


def test_each_rows_noise_is_independent_of_the_rest_of_its_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 100, (4, 8)).astype("int32")
    x = {"token_ids": tf.constant(ids), "padding_mask": tf.ones_like(ids),
         "segment_ids": tf.zeros_like(ids), "mask_positions": tf.constant([[1, 2]] * 4)}
    mask_ids, weights = tf.constant(ids[:, 1:3]), tf.ones([4, 2])
    whole = electra_batch(x, mask_ids, weights, mask_id=4, seed=0)[0]["sample_noise"]
    half = electra_batch({k: v[2:] for k, v in x.items()}, mask_ids[2:], weights[2:],
                         mask_id=4, seed=0)[0]["sample_noise"]
    np.testing.assert_array_equal(whole[2:], half)  # another worker's slice: same draws
    other_seed = electra_batch(x, mask_ids, weights, mask_id=4, seed=1)[0]["sample_noise"]
    assert not np.array_equal(whole, other_seed)
