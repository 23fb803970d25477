"""masked_lm_pipeline: the masked-LM objective's batches for each pair task, and its
masking spec from a real tokenizer (special ids, whole-word boundaries)."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.config import base_config
from tflm.data.masked_lm import masked_lm_pipeline, masking_spec, tokenizer_word_starts
from tflm.errors import DataError
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


def _config(pair_task, whole_word=False):
    config = base_config("masked_lm")
    config.model.pair_task = pair_task
    config.data.update(seq_len=32, max_predictions=6, whole_word_masking=whole_word)
    return config


def _batches(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


@pytest.mark.parametrize("pair_task", ["nsp", "sop", "none"])
def test_batches_are_keyed_like_the_models_outputs(tokenizer, caches, pair_task):
    x, y, w = _batches(masked_lm_pipeline(caches, tokenizer, _config(pair_task), 4,
                                          split="train", training=True, seed=1), 1)[0]
    assert set(x) == {"token_ids", "padding_mask", "segment_ids", "mask_positions"}
    outputs = {"mlm"} if pair_task == "none" else {"mlm", "pair"}
    assert set(y) == set(w) == outputs
    assert y["mlm"].shape == w["mlm"].shape == (4, 6)
    assert (x["token_ids"][:, 0] == tokenizer.cls_id).all()
    masked = np.take_along_axis(x["token_ids"], x["mask_positions"], axis=1)
    used = w["mlm"] > 0
    # Selected positions hold [MASK] most of the time; their labels are the originals.
    assert (masked[used] == tokenizer.mask_id).mean() > 0.5
    assert not np.isin(y["mlm"][used], list(tokenizer.special_ids.values())).any()
    if pair_task != "none":
        assert set(np.unique(y["pair"])) <= {0, 1} and (w["pair"] == 1).all()
        assert x["segment_ids"].max() == 1  # B is segment 1


def test_a_resumed_stream_continues_with_the_same_masks(tokenizer, caches):
    config = _config("nsp")
    full = _batches(masked_lm_pipeline(caches, tokenizer, config, 4, split="train",
                                       training=True, seed=3), 5)
    resumed = _batches(masked_lm_pipeline(caches, tokenizer, config, 4, split="train",
                                          training=True, seed=3, start_step=3), 2)
    for a, b in zip(full[3:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_evaluation_batches_are_the_same_on_every_call(tokenizer, caches):
    config = _config("sop")
    first, second = (_batches(masked_lm_pipeline(caches, tokenizer, config, 4,
                                                 split="validation", training=False, seed=0),
                              100) for _ in range(2))
    assert len(first) > 1
    for a, b in zip(first, second):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_whole_word_masking_uses_the_tokenizers_word_boundaries(tokenizer, caches):
    starts = tokenizer_word_starts(tokenizer)
    for i in range(tokenizer.vocabulary_size):
        assert starts[i] == (not tokenizer.id_to_token(i).startswith("##"))
    spec = masking_spec(tokenizer, _config("none", whole_word=True).data)
    assert spec.word_start is not None and spec.mask_id == tokenizer.mask_id
    x, y, w = _batches(masked_lm_pipeline(caches, tokenizer, _config("none", True), 8,
                                          split="train", training=True, seed=5), 1)[0]
    continuations = 0
    for row in range(8):
        chosen = sorted(x["mask_positions"][row][w["mlm"][row] > 0].tolist())
        for slot, p in enumerate(chosen):  # a chosen continuation's word start is chosen too
            if not starts[y["mlm"][row][slot]]:
                continuations += 1
                assert p - 1 in chosen
    assert continuations  # the check above was exercised


def test_whole_word_masking_needs_word_boundaries(train_texts=TEXTS):
    bpe = train_tokenizer("bpe", train_texts, 300)
    with pytest.raises(DataError, match="whole-word masking.*wordpiece"):
        tokenizer_word_starts(bpe)


def test_a_corpus_of_one_segment_documents_names_the_fix(tokenizer):
    short = types.SimpleNamespace(ids=np.arange(5, 65, dtype=np.int32) % 100 + 5,
                                  offsets=np.arange(0, 61, 6, dtype=np.int64))  # 10-token docs
    caches = {"train": short}
    with pytest.raises(DataError, match=r"no sentence pair.*pair_task='none'"):
        masked_lm_pipeline(caches, tokenizer, _config("nsp"), 4, split="train", training=True,
                           seed=0)
    # Without pairs the same corpus trains.
    x, _, _ = _batches(masked_lm_pipeline(caches, tokenizer, _config("none"), 4,
                                          split="train", training=True, seed=0), 1)[0]
    assert x["token_ids"].shape == (4, 32)
