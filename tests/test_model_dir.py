"""Model directory: save/load round trip, and clear errors for missing or mismatched parts."""

import os
import shutil

import numpy as np
import pytest
from keras import ops

from tflm.config import base_config, validate
from tflm.errors import ModelDirError, TokenizerError
from tflm.model_dir import build_model, load_model_dir, save_model_dir
from tflm.text import train_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A function returns a value."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("wordpiece", TEXTS, 64)


def _config(vocabulary_size):
    config = base_config()
    config.model.update(vocabulary_size=vocabulary_size, num_layers=1, hidden_dim=16,
                        num_heads=2, intermediate_dim=32, max_sequence_length=16)
    config.data.update(seq_len=16, tokenizer="wordpiece")
    return validate(config)


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    config = _config(tokenizer.vocabulary_size)
    model = build_model(config)
    return save_model_dir(str(tmp_path / "model"), model, tokenizer, config), model


def test_round_trip_restores_identical_logits(model_dir, tokenizer):
    path, model = model_dir
    assert sorted(os.listdir(path)) == ["config.json", "model.weights.h5", "tokenizer"]
    loaded, loaded_tokenizer, config = load_model_dir(path)
    ids = np.array(tokenizer.encode(["The quick brown fox"]), "int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)))
    assert loaded_tokenizer.fingerprint == tokenizer.fingerprint
    assert config.model.vocabulary_size == tokenizer.vocabulary_size


def test_saving_again_replaces_the_directory(model_dir, tokenizer):
    path, model = model_dir
    save_model_dir(path, model, tokenizer, _config(tokenizer.vocabulary_size))
    assert sorted(os.listdir(path)) == ["config.json", "model.weights.h5", "tokenizer"]
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
