"""SimCSE: the InfoNCE loss by hand, the views, the projection, serialization."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.testing import check_model
from tflm.errors import ConfigError
from tflm.models import SimCSE, TransformerBackbone
from tflm.models.simcse import ContrastiveAccuracy, ContrastiveLoss, contrastive_logits

SEQ = 6


def _backbone(dropout=0.0, pooling="first"):
    return TransformerBackbone(30, 2, 16, 2, 32, SEQ, dropout=dropout, causal=False,
                               num_segments=2, pooling=pooling, name="backbone")


def _view(rng, batch=4):
    lengths = rng.integers(2, SEQ + 1, size=(batch, 1))
    mask = (np.arange(SEQ)[None, :] < lengths).astype("int32")
    ids = rng.integers(5, 30, size=(batch, SEQ)).astype("int32") * mask
    return {"token_ids": ids, "padding_mask": mask}


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _info_nce(anchors, candidates, labels, temperature):
    """Mean over anchors of -log softmax(cos(anchor, candidates) / t)[label]."""
    logits = _unit(anchors) @ _unit(candidates).T / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def test_loss_is_info_nce_with_hard_negatives_as_extra_columns():
    rng = np.random.default_rng(0)
    views = rng.normal(size=(3, 3, 4)).astype("float32")  # (B, V, H)
    loss = ContrastiveLoss(temperature=0.05)
    # Columns: the 3 positives, then the 3 hard negatives; anchor i's positive is i.
    candidates = np.concatenate([views[:, 1], views[:, 2]])
    expected = _info_nce(views[:, 0], candidates, np.arange(3), 0.05)
    value = loss(np.zeros(3), views)
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-5)
    pairs = loss(np.zeros(3), views[:, :2])  # no hard negatives: in-batch only
    np.testing.assert_allclose(ops.convert_to_numpy(pairs),
                               _info_nce(views[:, 0], views[:, 1], np.arange(3), 0.05),
                               rtol=1e-5)


def test_a_gather_adds_the_other_replicas_candidates():
    """With a gather, the candidates are the global batch's and the labels point past
    the rows that come before this replica's."""
    rng = np.random.default_rng(1)
    local = rng.normal(size=(2, 3, 4)).astype("float32")
    before, after = (rng.normal(size=(n, 3, 4)).astype("float32") for n in (3, 1))

    def gather(rows):  # this replica is the second of three (3 + 2 + 1 rows)
        unit = lambda x: ops.convert_to_tensor(_unit(x[:, 1:]))  # noqa: E731
        return ops.concatenate([unit(before), rows, unit(after)], axis=0), 3

    loss = ContrastiveLoss(temperature=0.1)
    loss.gather = gather
    everything = np.concatenate([before, local, after])
    candidates = np.concatenate([everything[:, 1], everything[:, 2]])
    expected = _info_nce(local[:, 0], candidates, np.array([3, 4]), 0.1)
    np.testing.assert_allclose(ops.convert_to_numpy(loss(np.zeros(2), local)), expected,
                               rtol=1e-5)
    logits, labels = contrastive_logits(local, gather)
    assert tuple(logits.shape) == (2, 12)
    assert ops.convert_to_numpy(labels).tolist() == [3, 4]


def test_accuracy_counts_anchors_whose_nearest_candidate_is_their_positive():
    anchors = np.array([[1, 0], [0, 1], [1, 1]], "float32")
    positives = np.array([[1, 0], [1, 0.1], [1, 1]], "float32")
    metric = ContrastiveAccuracy()
    metric.update_state(np.zeros(3), np.stack([anchors, positives], axis=1))
    # anchor 0 -> positive 0; anchor 1 ([0, 1]) is nearest to [1, 1] (row 2); anchor 2 -> 2
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_views_differ_only_by_dropout():
    rng = np.random.default_rng(2)
    view = _view(rng)
    same = {"anchor": view, "positive": view}
    noisy = SimCSE(_backbone(dropout=0.3), projection=False)
    out = ops.convert_to_numpy(noisy(same, training=True))  # (B, 2, H)
    assert out.shape == (4, 2, 16)
    assert np.abs(out[:, 0] - out[:, 1]).max() > 1e-3  # two dropout masks
    out = ops.convert_to_numpy(noisy(same, training=False))
    np.testing.assert_allclose(out[:, 0], out[:, 1], atol=1e-6)
    quiet = SimCSE(_backbone(dropout=0.0))
    out = ops.convert_to_numpy(quiet(same, training=True))
    np.testing.assert_allclose(out[:, 0], out[:, 1], atol=1e-6)


def test_projection_only_while_training():
    rng = np.random.default_rng(3)
    x = {"anchor": _view(rng), "positive": _view(rng), "negative": _view(rng)}
    model = SimCSE(_backbone(pooling="mean"))
    pooled = [ops.convert_to_numpy(model.backbone(x[v])["pooled_output"])
              for v in ("anchor", "positive", "negative")]
    inference = ops.convert_to_numpy(model(x))  # (B, 3, H): the pooled vectors as is
    np.testing.assert_allclose(inference, np.stack(pooled, axis=1), atol=1e-5)
    trained = ops.convert_to_numpy(model(x, training=True))
    projected = ops.convert_to_numpy(model.projection_head(pooled[0]))
    np.testing.assert_allclose(trained[:, 0], projected, atol=1e-5)
    assert SimCSE(_backbone(), projection=False).projection_head is None


def test_round_trip_and_fit_step(tmp_path):
    rng = np.random.default_rng(4)
    x = {"anchor": _view(rng), "positive": _view(rng)}
    model = SimCSE(_backbone(), temperature=0.1, projection=True)
    check_model(model, x, y=np.zeros(4, "int32"), tmp_path=tmp_path)
    config = model.get_config()
    assert (config["temperature"], config["projection"]) == (0.1, True)


def test_flops_count_the_views():
    model = SimCSE(_backbone(), projection=False)
    pairs = {"seq_len": SEQ, "train": "", "columns": ("a", "b", "c")}
    triples = {**pairs, "train": "nli.csv"}
    unsupervised = model.flops_per_token(_Config(pairs))
    assert model.flops_per_token(_Config(triples)) == unsupervised * 3 // 2
    assert unsupervised == model.flops_per_token(_Config({"seq_len": SEQ}))


class _Config(dict):
    """A data config: keys as attributes (like a ConfigDict)."""

    __getattr__ = dict.__getitem__


def test_bad_arguments():
    with pytest.raises(ConfigError, match="temperature"):
        SimCSE(_backbone(), temperature=0.0)
    with pytest.raises(ValueError, match="positive"):
        SimCSE(_backbone())({"anchor": _view(np.random.default_rng(0))})


def test_the_task_is_registered_for_keras_saving():
    assert keras.saving.get_registered_object("tflm>SimCSE") is SimCSE
