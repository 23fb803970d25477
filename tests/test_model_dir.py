"""Model directory: save/load round trip, the backbone on its own, directories of earlier
versions, and clear errors for missing or mismatched parts."""

import os
import shutil

import numpy as np
import pytest
from keras import ops

from tflm.config import base_config, validate
from tflm.errors import ModelDirError, TokenizerError
from tflm.model_dir import build_model, load_backbone, load_model_dir, save_model_dir
from tflm.text import train_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A function returns a value."] * 20
FILES = ["backbone.weights.h5", "config.json", "model.weights.h5", "tokenizer"]
FLAT_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "flat_model_dir")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("bpe", TEXTS, 300)


def _config(vocabulary_size):
    config = base_config()
    config.model.backbone.update(vocabulary_size=vocabulary_size, num_layers=1, hidden_dim=16,
                        num_heads=2, intermediate_dim=32, max_sequence_length=16)
    config.data.update(seq_len=16, tokenizer="bpe")
    return validate(config)


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    config = _config(tokenizer.vocabulary_size)
    model = build_model(config)
    return save_model_dir(str(tmp_path / "model"), model, tokenizer, config), model


def test_round_trip_restores_identical_logits(model_dir, tokenizer):
    path, model = model_dir
    assert sorted(os.listdir(path)) == FILES
    loaded, loaded_tokenizer, config = load_model_dir(path)
    ids = np.array(tokenizer.encode(["The quick brown fox"]), "int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)))
    assert loaded_tokenizer.fingerprint == tokenizer.fingerprint
    assert config.model.backbone.vocabulary_size == tokenizer.vocabulary_size


def test_saving_again_replaces_the_directory(model_dir, tokenizer):
    path, model = model_dir
    save_model_dir(path, model, tokenizer, _config(tokenizer.vocabulary_size))
    assert sorted(os.listdir(path)) == FILES
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")]


@pytest.mark.parametrize("part", ["config.json", "model.weights.h5", "tokenizer"])
def test_missing_part_is_named(model_dir, part):
    path, _ = model_dir
    target = os.path.join(path, part)
    shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    with pytest.raises(ModelDirError, match=part):
        load_model_dir(path)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        load_model_dir(str(tmp_path / "nowhere"))


def test_damaged_weights(model_dir):
    path, _ = model_dir
    with open(os.path.join(path, "model.weights.h5"), "wb") as f:
        f.write(b"not hdf5")
    with pytest.raises(ModelDirError, match="model.weights.h5"):
        load_model_dir(path)


def test_vocabulary_mismatch(tmp_path, tokenizer):
    config = _config(tokenizer.vocabulary_size + 1)
    path = save_model_dir(str(tmp_path / "model"), build_model(config), tokenizer, config)
    with pytest.raises(TokenizerError, match=str(tokenizer.vocabulary_size + 1)):
        load_model_dir(path)


def _logits(model, ids):
    x = {"token_ids": np.asarray(ids, "int32"), "padding_mask": np.ones_like(ids, "int32")}
    return ops.convert_to_numpy(model(x))


def test_a_task_built_on_the_saved_backbone_has_its_weights(model_dir, tokenizer):
    path, model = model_dir
    backbone = load_backbone(path)
    for saved, loaded in zip(model.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(loaded), ops.convert_to_numpy(saved))
    config = _config(tokenizer.vocabulary_size)
    ids = [tokenizer.encode(["The quick brown fox"])[0]]
    # GPT ties its head to the token table: a task on the backbone is the same model.
    np.testing.assert_array_equal(_logits(build_model(config, backbone=backbone), ids),
                                  _logits(model, ids))
    assert not np.allclose(_logits(build_model(config), ids), _logits(model, ids))


def test_load_backbone_overrides_only_what_the_weights_do_not_fix(model_dir):
    path, model = model_dir
    assert load_backbone(path, pooling="mean").pooling == "mean"
    with pytest.raises(ModelDirError, match="cannot change num_layers"):
        load_backbone(path, num_layers=3)


def test_a_model_dir_of_the_flat_layout_loads_exactly(tmp_path):
    # Written by the code before config.model.backbone / backbone.weights.h5 existed.
    copy = str(tmp_path / "model")
    shutil.copytree(os.path.join(FLAT_DIR, "model"), copy)
    model, tokenizer, config = load_model_dir(copy)
    assert config.model.backbone.num_layers == 1 and config.model.tie_embeddings
    ids = [[259, 292, 269, 287, 276, 78, 296]]
    assert tokenizer.encode(["The quick brown fox"]) == ids
    expected = np.load(os.path.join(FLAT_DIR, "logits.npy"))
    np.testing.assert_array_equal(_logits(model, ids), expected)
    # Its backbone serves another task although it has no backbone.weights.h5.
    backbone = load_backbone(copy)
    np.testing.assert_array_equal(_logits(build_model(config, backbone=backbone), ids), expected)
    # Saving it again writes the current layout.
    save_model_dir(copy, model, tokenizer, config)
    assert sorted(os.listdir(copy)) == FILES
