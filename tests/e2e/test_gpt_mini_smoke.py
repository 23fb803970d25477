"""End to end: the real configs/gpt_mini.py, shrunk, trained by the real loop.

Like flax's lm1b/train_test.py: the shipped config with only its sizes made tiny, so the
test exercises exactly what `tflm train --config=configs/gpt_mini.py` runs.
"""

import json
import os

import numpy as np
import pytest
from keras import ops

from tests.training.train_worker import shared_cache_dir
from tflm.config import load_config
from tflm.model_dir import load_model_dir
from tflm.training import evaluate, train
from tflm.training.strategy import cpu_has_bf16

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "gpt_mini.py")
STEPS = 150


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return shared_cache_dir(tmp_path_factory)


def shrunk_gpt_mini(cache_dir):
    config = load_config(CONFIG)
    config.model.backbone.update(vocabulary_size=384, num_layers=2, hidden_dim=32, num_heads=2,
                        intermediate_dim=64, max_sequence_length=32)
    config.data.update(seq_len=32, cache_dir=cache_dir)
    config.train.update(batch_size=8, steps=STEPS, learning_rate=1e-2, warmup_steps=10,
                        eval_every=50, eval_steps=4, log_every=10, checkpoint_every=50,
                        sample_every=STEPS, sample_tokens=8)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    workdir = str(tmp_path_factory.mktemp("gpt_mini"))
    config = shrunk_gpt_mini(cache_dir)
    return config, workdir, train(config, workdir)


def test_trains_and_beats_the_baselines(run):
    _, _, summary = run
    assert summary["final_step"] == STEPS
    assert summary["resumed_from_step"] == 0
    assert summary["validation_perplexity"] < summary["initial_validation_perplexity"]
    assert summary["validation_perplexity"] < summary["unigram_validation_perplexity"]
    assert np.isfinite(summary["train_loss"])


def test_summary_file(run):
    _, workdir, summary = run
    with open(os.path.join(workdir, "summary.json")) as f:
        saved = json.load(f)
    assert saved == summary
    for key in ("tokens_per_second", "examples_per_second", "wall_seconds"):
        assert saved[key] > 0, key
    assert 0 < saved["mfu"] < 1
    assert saved["parameters"] > 0
    # precision "auto": bf16 on CPUs with bf16 instructions (measured faster), else float32
    expected = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    assert (saved["precision"], saved["replicas"]) == (expected, 1)
    assert saved["strategy"]
    assert sorted(os.listdir(workdir)) == [
        "checkpoints", "config.json", "initial_evaluation.json", "logs", "model",
        "summary.json"]


def test_model_dir_restores_identical_logits(run):
    config, workdir, _ = run
    model, tokenizer, loaded_config = load_model_dir(os.path.join(workdir, "model"))
    assert loaded_config.model.to_dict() == config.model.to_dict()
    ids = np.array(tokenizer.encode(["Return the number of items"]), "int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    from_dir = ops.convert_to_numpy(model(x))
    # The last periodic checkpoint is the final step's weights.
    model.load_weights(os.path.join(workdir, "checkpoints", f"ckpt-{STEPS:08d}.weights.h5"))
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x)), from_dir)


def test_evaluate_matches_the_training_validation(run):
    config, workdir, summary = run
    result = evaluate(os.path.join(workdir, "model"), max_batches=config.train.eval_steps)
    assert result["batches"] == config.train.eval_steps
    np.testing.assert_allclose(result["perplexity"], summary["validation_perplexity"],
                               rtol=1e-4)
    json.dumps(result)


def test_finished_run_is_not_trained_again(run):
    config, workdir, summary = run
    assert train(config, workdir) == summary
