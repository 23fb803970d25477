"""Trainer: workdir/config checks, NaN guard, epoch layout, unigram baseline, prepare."""

import os
import re

import keras
import numpy as np
import pytest
from keras import ops

from tests.training.train_worker import shared_cache_dir, tiny_config
from tflm.config import save_config
from tflm.errors import ConfigError, TrainingError
from tflm.model_dir import build_model
from tflm.training import optim, prepare, train
from tflm.training.baseline import unigram_log_probs
from tflm.training.trainer import _validation_epochs

EXPLODE_AFTER = 7


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return shared_cache_dir(tmp_path_factory)


def test_validation_epochs():
    # Epochs of gcd(eval_every, checkpoint_every) steps; validate every eval_every and last.
    assert _validation_epochs(steps=30, per_epoch=5, eval_every=10) == [2, 4, 6]
    assert _validation_epochs(steps=600, per_epoch=100, eval_every=200) == [2, 4, 6]
    assert _validation_epochs(steps=25, per_epoch=5, eval_every=10) == [2, 4, 5]
    assert _validation_epochs(steps=27, per_epoch=5, eval_every=10) == [2, 4, 6]


def test_unigram_log_probs_are_add_one_smoothed():
    ids = np.array([1, 1, 2], np.int32)  # two documents: eos (0) counted twice
    log_p = unigram_log_probs(ids, num_documents=2, vocabulary_size=4, eos_id=0)
    np.testing.assert_allclose(np.exp(log_p), np.array([3, 3, 2, 1]) / 9)


def test_prepare_reuses_the_cached_tokenizer(cache_dir):
    first = prepare(tiny_config(cache_dir))
    second = prepare(tiny_config(cache_dir))
    assert first.tokenizer.directory == second.tokenizer.directory
    assert first.tokenizer.vocabulary_size == 384
    assert first.caches["train"].path == second.caches["train"].path
    assert first.caches["validation"].num_tokens > 0


def test_different_config_in_workdir_names_the_key(tmp_path, cache_dir):
    save_config(tiny_config(cache_dir), str(tmp_path / "config.json"))
    changed = tiny_config(cache_dir, train__learning_rate=0.01)
    with pytest.raises(TrainingError, match=r"train\.learning_rate.*new --workdir"):
        train(changed, str(tmp_path))


def test_grad_accum_must_divide_checkpoint_every(tmp_path, cache_dir):
    config = tiny_config(cache_dir, train__grad_accum_steps=2, train__checkpoint_every=5)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        train(config, str(tmp_path))


class Explode(keras.optimizers.schedules.LearningRateSchedule):
    """1e-3, then 1e12 from step EXPLODE_AFTER on: the loss turns inf/NaN after that."""

    def __call__(self, step):
        return ops.where(step < EXPLODE_AFTER, 1e-3, 1e12)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(optim, "learning_rate_schedule", lambda train_config: Explode())
    config = tiny_config(cache_dir, train__sample_every=0, train__jit_compile="off")
    with pytest.raises(TrainingError, match=r"diverged at step (\d+)") as error:
        train(config, str(tmp_path))
    step = int(re.search(r"step (\d+)", str(error.value)).group(1))
    assert EXPLODE_AFTER < step < 30
    assert "ckpt-00000005.weights.h5" in str(error.value)
    checkpoints = sorted(os.listdir(tmp_path / "checkpoints"))
    last_good = (step - 1) // 5 * 5
    assert f"ckpt-{last_good:08d}.weights.h5" in checkpoints
    assert not [c for c in checkpoints if c.startswith("ckpt") and int(c[5:13]) >= step]
    model = build_model(config)
    model.load_weights(str(tmp_path / "checkpoints" / f"ckpt-{last_good:08d}.weights.h5"))
    assert all(np.all(np.isfinite(ops.convert_to_numpy(w))) for w in model.weights)
    assert not (tmp_path / "summary.json").exists()
