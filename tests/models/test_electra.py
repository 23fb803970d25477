"""ElectraPretrainer: the replaced-token labels, the sample, the shared table, the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests.testing import check_config_round_trip, check_model
from tflm.errors import ConfigError
from tflm.models import ElectraPretrainer
from tflm.models.electra import (
    ReplacedTokenAccuracy,
    ReplacedTokenLoss,
    ReplacedTokenPrecision,
    ReplacedTokenRecall,
    generator_shape,
    replace_at,
    replaced_token_labels,
    sample_from_logits,
)

VOCAB, MASK = 40, 4


def _backbone(**overrides):
    args = dict(vocabulary_size=VOCAB, num_layers=2, hidden_dim=16, num_heads=2,
                intermediate_dim=32, max_sequence_length=12, causal=False, num_segments=2)
    return {**args, **overrides}


def _batch(seed=0):
    """x, y, sample_weight of 2 rows of 10 tokens (row 1: 3 padding), 3 mask slots."""
    rng = np.random.default_rng(seed)
    original = rng.integers(5, VOCAB, (2, 10)).astype("int32")
    original[1, 7:] = 0
    positions = np.array([[1, 4, 0], [2, 3, 6]], "int32")  # row 0: third slot unused
    weights = np.array([[1, 1, 0], [1, 1, 1]], "float32")
    token_ids = original.copy()
    for row, position in zip(*np.nonzero(weights)):
        token_ids[row, positions[row, position]] = MASK
    padding = (original != 0).astype("int32")
    x = {"token_ids": token_ids, "padding_mask": padding, "segment_ids": np.zeros_like(padding),
         "mask_positions": positions, "mask_weights": weights,
         "sample_noise": rng.random((2, 3)).astype("float32")}
    y = {"mlm": np.take_along_axis(original, positions, axis=1) * (weights > 0), "rtd": original}
    return x, y, {"mlm": weights, "rtd": padding.astype("float32")}


@pytest.fixture(scope="module")
def model():
    return ElectraPretrainer(backbone=_backbone(), generator_fraction=0.5)


def test_labels_are_one_exactly_where_the_sample_differs_from_the_original():
    original = np.array([[5, 6, 7, 8, 9]], "int32")
    masked = np.array([[5, MASK, MASK, 8, MASK]], "int32")
    positions, weights = np.array([[1, 2, 4]]), np.ones((1, 3), "float32")
    # The generator is sure of 6 at position 1 (the original: it counts as original),
    # of 30 at position 2 and of 9 at position 4 (the original again).
    logits = np.full((1, 3, VOCAB), -30.0, "float32")
    logits[0, 0, 6] = logits[0, 1, 30] = logits[0, 2, 9] = 30.0
    sampled = sample_from_logits(logits, np.full((1, 3), 0.5, "float32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(sampled), [[6, 30, 9]])
    corrupted = replace_at(masked, positions, weights, sampled)
    np.testing.assert_array_equal(ops.convert_to_numpy(corrupted), [[5, 6, 30, 8, 9]])
    rtd = ops.stack([ops.zeros((1, 5)), ops.cast(corrupted, "float32")], axis=-1)
    labels, _ = replaced_token_labels(original, rtd)
    np.testing.assert_array_equal(ops.convert_to_numpy(labels), [[0, 0, 1, 0, 0]])


def test_unused_mask_slots_write_nothing():
    token_ids = np.array([[2, MASK, 7]], "int32")
    out = replace_at(token_ids, np.array([[1, 0]]), np.array([[1.0, 0.0]]), np.array([[9, 11]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(out), [[2, 9, 7]])


def test_the_sample_is_a_draw_from_the_softmax():
    probs = np.array([0.5, 0.0, 0.2, 0.3], "float32")
    logits = np.log(np.maximum(probs, 1e-30))[None, None].repeat(1000, axis=1)
    noise = ((np.arange(1000) + 0.5) / 1000).astype("float32")[None]  # an even grid
    counts = np.bincount(ops.convert_to_numpy(sample_from_logits(logits, noise))[0], minlength=4)
    np.testing.assert_array_equal(counts, [500, 0, 200, 300])


def test_outputs_and_the_corrupted_input(model):
    x, y, _ = _batch()
    out = model(x)
    assert out["mlm"].shape == (2, 3, VOCAB) and out["rtd"].shape == (2, 10, 2)
    assert out["mlm"].dtype == "float32" and out["rtd"].dtype == "float32"
    seen = ops.convert_to_numpy(out["rtd"][..., 1]).astype("int32")
    masked = x["token_ids"] == MASK
    np.testing.assert_array_equal(seen[~masked], y["rtd"][~masked])  # only masks change
    assert not np.any(seen == MASK)  # every mask was replaced by a sample
    spec = model.compute_output_spec({k: keras.KerasTensor(v.shape, str(v.dtype))
                                      for k, v in x.items()})
    assert spec["mlm"].shape == (2, 3, VOCAB) and spec["rtd"].shape == (2, 10, 2)


def test_padding_is_never_scored():
    labels_true = np.array([[5, 6, 7, 0, 0]], "float32")
    rtd = np.stack([np.array([[2.0, -1.0, 0.5, 0.3, -4.0]]),
                    np.array([[5, 9, 7, 0, 0]])], axis=-1).astype("float32")
    weight = np.array([[1, 1, 1, 0, 0]], "float32")
    garbage = rtd.copy()
    garbage[0, 3:] = [[50.0, 3], [-50.0, 8]]  # other logits and ids on the padding
    loss = ReplacedTokenLoss(weight=2.0)
    for metric_class in (ReplacedTokenAccuracy, ReplacedTokenPrecision, ReplacedTokenRecall):
        results = []
        for pred in (rtd, garbage):
            metric = metric_class()
            metric.update_state(labels_true, pred, sample_weight=weight)
            results.append(float(metric.result()))
        assert results[0] == results[1]
    np.testing.assert_allclose(float(loss(labels_true, rtd, weight)),
                               float(loss(labels_true, garbage, weight)))
    # The mean is over the real tokens: labels 0, 1, 0 under logits 2, -1, 0.5.
    expected = 2.0 * np.mean([np.log1p(np.exp(2.0)), np.log1p(np.exp(1.0)),
                              np.log1p(np.exp(0.5))])
    np.testing.assert_allclose(float(loss(labels_true, rtd, weight)), expected, rtol=1e-5)


def test_the_generator_shares_the_discriminators_token_table(model):
    table = model.backbone.embedding.token_embeddings
    assert model.mlm_head.token_embedding is model.backbone.embedding
    vocabulary_sized = {id(v) for v in model.weights if v.shape[0] == VOCAB}
    assert vocabulary_sized == {id(table), id(model.mlm_head.bias)}  # one table, one bias
    x, y, w = _batch()
    with tf.GradientTape() as tape:
        mlm = model(x)["mlm"]
        loss = model.default_loss()["mlm"](y["mlm"], mlm, w["mlm"])
    grad = tape.gradient(loss, table)
    assert grad is not None and np.abs(ops.convert_to_numpy(tf.convert_to_tensor(grad))).sum() > 0


def test_no_gradient_flows_through_the_sample(model):
    x, y, w = _batch()
    generator_only = [*model.generator_projection.weights, *model.generator_output.weights,
                      *model.mlm_head.dense.weights, *model.mlm_head.norm.weights,
                      model.mlm_head.bias]
    for block in model.generator_blocks:
        generator_only += block.weights
    with tf.GradientTape(persistent=True) as tape:
        rtd = model(x)["rtd"]
        loss = ReplacedTokenLoss()(y["rtd"], rtd, w["rtd"])
    assert all(g is None for g in tape.gradient(loss, generator_only))
    assert tape.gradient(loss, model.backbone.embedding.token_embeddings) is not None


def test_config_round_trip_fit_step_and_reload(tmp_path):
    model = ElectraPretrainer(backbone=_backbone(), generator_fraction=0.25,
                              discriminator_weight=20.0)
    clone = check_config_round_trip(model)
    assert clone.generator_fraction == 0.25 and clone.discriminator_weight == 20.0
    x, y, w = _batch()
    check_model(model, x, y, w, tmp_path=tmp_path)


def test_generator_shape_and_flops():
    backbone = ElectraPretrainer(backbone=_backbone(hidden_dim=256, num_heads=4,
                                                    intermediate_dim=1024)).backbone
    assert generator_shape(backbone, 0.25) == (64, 1, 256)  # ELECTRA-small's generator
    assert generator_shape(backbone, 1.0) == (256, 4, 1024)
    data = type("Data", (), {"seq_len": 12, "max_predictions": 3})()
    small = ElectraPretrainer(backbone=_backbone(), generator_fraction=0.25)
    large = ElectraPretrainer(backbone=_backbone(), generator_fraction=1.0)
    assert 0 < small.flops_per_token(data) < large.flops_per_token(data)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ConfigError, match="bidirectional"):
        ElectraPretrainer(backbone=_backbone(causal=True))
    with pytest.raises(ConfigError, match="generator_fraction must be in"):
        ElectraPretrainer(backbone=_backbone(), generator_fraction=0.0)
    with pytest.raises(ConfigError, match="do not divide"):
        ElectraPretrainer(backbone=_backbone(hidden_dim=18, num_heads=6), generator_fraction=0.4)
