"""BertPretrainer: MLM at masked positions only, pair head, padding, segments, saving."""

import numpy as np
import pytest
from keras import ops

from tests.testing import check_model
from tflm.errors import ConfigError
from tflm.models import BertPretrainer
from tflm.models.losses import token_cross_entropy

B, T, P, VOCAB = 2, 10, 3, 40


def _backbone(**overrides):
    args = dict(vocabulary_size=VOCAB, num_layers=2, hidden_dim=16, num_heads=2,
                intermediate_dim=32, max_sequence_length=12, causal=False, norm_first=False,
                activation="gelu", num_segments=2)
    return {**args, **overrides}


def _x(seed=0, mask=None):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(B, T)).astype("int32")
    segments = np.zeros((B, T), "int32")
    segments[:, 6:] = 1
    positions = np.array([[1, 4, 7], [2, 3, 0]], "int32")  # row 1 uses 2 slots
    return {"token_ids": ids, "padding_mask": np.ones((B, T), "int32") if mask is None else mask,
            "segment_ids": segments, "mask_positions": positions}


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def model():
    return BertPretrainer(backbone=_backbone())


def test_outputs_mlm_logits_at_the_masked_positions_and_pair_logits(model):
    out = model(_x())
    assert out["mlm"].shape == (B, P, VOCAB) and out["pair"].shape == (B, 2)
    assert str(out["mlm"].dtype) in ("float32", "<dtype: 'float32'>")
    assert "pair" not in BertPretrainer(backbone=_backbone(), pair_task="none")(_x())


def test_gathered_loss_equals_full_logits_restricted_to_the_masked_positions(model):
    x = _x()
    hidden = model.backbone({k: v for k, v in x.items() if k != "mask_positions"})
    every = np.tile(np.arange(T, dtype="int32"), (B, 1))  # the head at every position
    full = _np(model.mlm_head(hidden["sequence_output"], every))  # (B, T, V)
    restricted = np.take_along_axis(full, x["mask_positions"][:, :, None], axis=1)
    gathered = _np(model(x)["mlm"])
    np.testing.assert_allclose(gathered, restricted, atol=1e-5)
    labels = np.array([[5, 6, 7], [8, 9, 0]], "int32")
    weights = np.array([[1, 1, 1], [1, 1, 0]], "float32")
    loss = float(model.default_loss()["mlm"](labels, gathered, sample_weight=weights))
    per_token = _np(token_cross_entropy(labels, restricted))
    np.testing.assert_allclose(loss, (per_token * weights).sum() / weights.sum(), rtol=1e-5)
    # An unused slot (weight 0) never contributes, whatever its label.
    other = labels.copy()
    other[1, 2] = 33
    np.testing.assert_allclose(
        float(model.default_loss()["mlm"](other, gathered, sample_weight=weights)), loss,
        rtol=1e-6)


def test_padding_never_changes_real_tokens_outputs(model):
    mask = np.ones((B, T), "int32")
    mask[:, 8:] = 0
    x = _x(mask=mask)
    changed = dict(x, token_ids=x["token_ids"].copy())
    changed["token_ids"][:, 8:] = 5
    for key in ("mlm", "pair"):
        np.testing.assert_allclose(_np(model(changed)[key]), _np(model(x)[key]), atol=1e-5)


def test_pooled_output_and_pair_logits_change_when_segment_b_changes(model):
    x = _x()
    changed = dict(x, token_ids=x["token_ids"].copy())
    changed["token_ids"][:, 7:] = (changed["token_ids"][:, 7:] + 1) % VOCAB
    pooled = model.backbone({k: v for k, v in x.items() if k != "mask_positions"})
    pooled_changed = model.backbone({k: v for k, v in changed.items() if k != "mask_positions"})
    assert not np.allclose(_np(pooled["pooled_output"]), _np(pooled_changed["pooled_output"]))
    assert not np.allclose(_np(model(x)["pair"]), _np(model(changed)["pair"]))


def test_tied_table_and_flops():
    model = BertPretrainer(backbone=_backbone())
    # The head reuses the token table: no second (V, hidden) matrix.
    tables = [w for w in model.weights if tuple(w.shape) == (VOCAB, 16)]
    assert len(tables) == 1

    class Data:
        seq_len, max_predictions = T, P

    d, f = 16, 32
    encoder = 6 * 2 * (4 * d * d + 2 * d * f) + 12 * 2 * T * d
    heads = (6 * (d * d + d * VOCAB) * P + 6 * (d * d + 2 * d)) // T
    assert model.flops_per_token(Data) == encoder + heads


def test_fit_step_save_and_reload(tmp_path):
    model = BertPretrainer(backbone=_backbone(dropout=0.1), pair_task="sop")
    x = _x()
    y = {"mlm": np.array([[5, 6, 7], [8, 9, 0]], "int32"), "pair": np.array([1, 0], "int32")}
    w = {"mlm": np.array([[1, 1, 1], [1, 1, 0]], "float32"), "pair": np.ones(2, "float32")}
    before = [v.copy() for v in model.get_weights()]
    check_model(model, x, y, w, tmp_path=tmp_path)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"bidirectional backbone.*causal=False"):
        BertPretrainer(backbone=_backbone(causal=True))
    with pytest.raises(ConfigError, match="pair_task 'nxp' is not one of"):
        BertPretrainer(backbone=_backbone(), pair_task="nxp")
