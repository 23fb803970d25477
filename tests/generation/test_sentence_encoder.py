"""SentenceEncoder: unit vectors of the backbone's pooled hidden states, in input order,
independent of what else is in the batch; the pooling rule of model directories."""

import logging

import numpy as np
import pytest
from keras import ops

import tflm
from tests.testing import tiny_encoder_dir
from tflm.errors import GenerationError
from tflm.generation import SentenceEncoder
from tflm.generation.embedding import batch_plan
from tflm.models import pool

WINDOW = 32
# Mixed lengths: several bucket lengths (8, 16, 32) and one text cut to the window.
MIXED = ["a", "the quick brown fox jumps over the lazy dog " * 2, "a function returns",
         "classes define methods and attributes of objects", "",
         "the lazy dog " * 20, "return the value", "the fox"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_encoder_dir(tmp_path_factory.mktemp("embed_bert") / "model")


@pytest.fixture(scope="module")
def encoder(bert_dir):
    return SentenceEncoder.from_model_dir(bert_dir)


def _direct(encoder, texts, length=WINDOW):
    """The backbone called on the same ids right-padded to ``length``, pooled and
    normalised here."""
    ids = encoder.token_ids(texts)
    tokens = np.zeros((len(ids), length), np.int32)
    mask = np.zeros((len(ids), length), np.int32)
    for row, seq in enumerate(ids):
        tokens[row, :len(seq)], mask[row, :len(seq)] = seq, 1
    out = encoder.backbone({"token_ids": tokens, "padding_mask": mask})
    pooled = ops.convert_to_numpy(pool(out["sequence_output"], mask, encoder.pooling))
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_embeddings_are_unit_float32_vectors(encoder):
    vectors = encoder.embed(MIXED)
    assert vectors.shape == (len(MIXED), 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in vectors}) == len(MIXED)


def test_equal_to_the_backbone_and_pooling_on_the_same_ids(encoder):
    assert encoder.pooling == "mean"
    ids = encoder.token_ids(["the fox"])[0]
    t = encoder.tokenizer
    assert ids == [t.cls_id, *t.encode(["the fox"])[0], t.sep_id]
    np.testing.assert_allclose(encoder.embed(MIXED), _direct(encoder, MIXED), atol=1e-5)


def test_input_order_is_kept_across_buckets_and_batches(encoder):
    together = encoder.embed(MIXED, batch_size=3)  # sorted into 3 batches, 3 buckets
    alone = np.concatenate([encoder.embed([text]) for text in MIXED])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(encoder.embed(MIXED[::-1], batch_size=64), together[::-1],
                               atol=1e-5)


def test_a_text_alone_equals_it_beside_a_much_longer_text(encoder):
    short = "the fox"
    alone = encoder.embed([short])[0]  # bucket 8, one row
    beside = encoder.embed([short, "the lazy dog " * 20], batch_size=2)[0]  # bucket 32
    np.testing.assert_allclose(alone, beside, atol=1e-5)


def test_batch_plan_runs_longest_first_in_fixed_shapes():
    lengths = [5, 100, 20, 9, 100, 60, 3, 20, 4]
    plan = batch_plan(lengths, batch_size=4, limit=128)
    assert sorted(i for indices, _, _ in plan for i in indices) == list(range(len(lengths)))
    assert [lengths[i] for indices, _, _ in plan for i in indices] == sorted(lengths)[::-1]
    # Buckets over 32 tokens hold batch_size * 32 // length texts; the last batch, short
    # of rows, runs in the previous batch's shape.
    assert [(rows, length) for _, rows, length in plan] == [(1, 128), (1, 128), (2, 64),
                                                            (4, 32), (4, 32)]
    assert [indices for indices, _, _ in plan[2:]] == [[5, 2], [7, 3, 0, 8], [6]]


def test_batch_plan_last_batch_in_the_next_power_of_two_rows():
    assert batch_plan([5, 7, 3], batch_size=64, limit=128) == [([1, 0, 2], 4, 8)]
    # Three texts left do not fit the previous batch's one row.
    assert batch_plan([100, 20, 20, 20], 4, 128) == [([0], 1, 128), ([1, 2, 3], 4, 32)]


def test_similarity_is_a_symmetric_cosine(encoder):
    a, b = "the quick brown fox", "a function returns a value"
    assert encoder.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    assert encoder.similarity(a, b) == pytest.approx(encoder.similarity(b, a), abs=1e-6)
    vectors = encoder.embed([a, b])
    assert encoder.similarity(a, b) == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
    pairwise = encoder.similarity([a, b, a], [b, a, a])
    assert pairwise.shape == (3,) and pairwise.dtype == np.float32
    np.testing.assert_allclose(pairwise, [vectors[0] @ vectors[1]] * 2 + [1.0], atol=1e-5)


def test_bad_requests_say_what_to_do(encoder):
    with pytest.raises(GenerationError, match="list of strings"):
        encoder.embed("one text")
    with pytest.raises(GenerationError, match="list of strings"):
        encoder.embed([1, 2])
    with pytest.raises(GenerationError, match="batch_size must be >= 1"):
        encoder.embed(["a"], batch_size=0)
    with pytest.raises(GenerationError, match="same length"):
        encoder.similarity(["a", "b"], ["a"])
    with pytest.raises(GenerationError, match="two strings"):
        encoder.similarity("a", ["a"])
    assert encoder.embed([]).shape == (0, 16)


def test_long_texts_are_cut_with_one_counted_warning(encoder, caplog):
    with caplog.at_level(logging.WARNING):
        vectors = encoder.embed(["the lazy dog " * 20, "short", "the fox " * 30])
    assert caplog.text.count("2 of 3 texts are longer than the model's 30 tokens") == 1
    assert len(encoder.token_ids(["the lazy dog " * 20])[0]) == WINDOW
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_pooling_rule_of_model_directories(bert_dir, tmp_path):
    """'auto' -> mean; a pooling set in the config (SimCSE) is used; an argument wins."""
    first_dir = tiny_encoder_dir(tmp_path / "first", pooling="first")
    first = SentenceEncoder.from_model_dir(first_dir)
    assert first.pooling == "first"
    out = first.backbone({"token_ids": np.asarray(first.token_ids(["the fox"]), np.int32)})
    cls = ops.convert_to_numpy(out["sequence_output"])[0, 0]
    np.testing.assert_allclose(first.embed(["the fox"])[0], cls / np.linalg.norm(cls),
                               atol=1e-5)
    assert SentenceEncoder.from_model_dir(first_dir, pooling="mean").pooling == "mean"
    assert SentenceEncoder.from_model_dir(bert_dir, pooling="last").pooling == "last"
    with pytest.raises(GenerationError, match="not one of"):
        SentenceEncoder.from_model_dir(bert_dir, pooling="median")


def test_causal_model_directory_embeds_raw_ids_with_mean_pooling(tmp_path):
    encoder = SentenceEncoder.from_model_dir(
        tiny_encoder_dir(tmp_path / "gpt", objective="causal_lm"))
    assert encoder.pooling == "mean" and encoder.tokenizer.cls_id is None
    assert encoder.token_ids(["the fox", ""]) == [
        encoder.tokenizer.encode(["the fox"])[0], [encoder.tokenizer.eos_id]]
    np.testing.assert_allclose(encoder.embed(MIXED, batch_size=4), _direct(encoder, MIXED),
                               atol=1e-5)


def test_loaded_masked_lm_embeds_like_the_sentence_encoder(bert_dir, encoder):
    lm = tflm.load(bert_dir)
    np.testing.assert_allclose(lm.embed(MIXED), encoder.embed(MIXED), atol=1e-6)
    assert lm.similarity("the fox", "the dog") == pytest.approx(
        encoder.similarity("the fox", "the dog"), abs=1e-6)
