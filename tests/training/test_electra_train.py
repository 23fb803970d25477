"""ELECTRA end to end: configs/electra_mini.py, shrunk, trained by the one trainer on the
built-in corpus, evaluated by `tflm evaluate`'s function, its discriminator loaded for
fine-tuning."""

import os

import numpy as np
import pytest
from keras import ops

from tests.training.train_worker import shared_cache_dir
from tflm.config import load_config
from tflm.data import load_corpus
from tflm.data.electra import electra_pipeline
from tflm.data.token_cache import build_token_cache
from tflm.model_dir import load_backbone, load_model_dir
from tflm.models.electra import replaced_token_labels
from tflm.training import evaluate, train
from tflm.training.prepare import cache_root

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "electra_mini.py")


def _train(tmp_path_factory, steps, **model):
    """electra_mini with bert_mini's end-to-end test shape (its tokenizer is shared)."""
    config = load_config(CONFIG)
    config.model.backbone.update(vocabulary_size=512, num_layers=2, hidden_dim=64,
                                 num_heads=2, intermediate_dim=128, max_sequence_length=64,
                                 dropout=0.0)
    config.model.update(generator_fraction=0.5, **model)
    config.data.update(seq_len=64, max_predictions=9,
                       cache_dir=shared_cache_dir(tmp_path_factory))
    config.train.update(batch_size=16, steps=steps, learning_rate=2e-3, warmup_steps=20,
                        eval_every=steps, eval_steps=4, log_every=50, checkpoint_every=steps,
                        precision="float32")
    workdir = str(tmp_path_factory.mktemp("electra_mini"))
    return workdir, train(config, workdir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train(tmp_path_factory, 100)


def test_trains_and_evaluate_reports_replaced_token_metrics(run):
    workdir, summary = run
    assert summary["final_step"] == 100 and summary["objective"] == "electra"
    assert summary["validation_loss"] < summary["initial_validation_loss"]
    assert summary["validation_mlm_loss"] < summary["initial_validation_mlm_loss"]
    metrics = evaluate(os.path.join(workdir, "model"), max_batches=4)
    assert {"rtd_accuracy", "rtd_precision", "rtd_recall", "rtd_loss", "mlm_loss",
            "mlm_accuracy"} <= set(metrics)
    for name in ("loss", "rtd_accuracy", "mlm_loss"):  # the trainer's validation batches
        np.testing.assert_allclose(metrics[name], summary[f"validation_{name}"], rtol=1e-5)


def test_the_model_directorys_backbone_is_the_discriminator(run):
    model_dir = os.path.join(run[0], "model")
    model, _, _ = load_model_dir(model_dir)
    backbone = load_backbone(model_dir, pooling="mean")
    assert backbone.count_params() == model.backbone.count_params()
    for a, b in zip(backbone.weights, model.backbone.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def _all_original_accuracy(model_dir, batches) -> float:
    """The accuracy of calling every real token original on the evaluation batches."""
    model, tokenizer, config = load_model_dir(model_dir)
    cache = build_token_cache(load_corpus(config.data), "validation", tokenizer,
                              os.path.join(cache_root(config.data), "tokens"))
    dataset = electra_pipeline({"validation": cache}, tokenizer, config,
                               config.train.batch_size, split="validation", training=False,
                               seed=config.data.seed)
    replaced = real = 0.0
    for x, y, w in dataset.take(batches):
        labels, _ = replaced_token_labels(y["rtd"], model(x)["rtd"])
        replaced += float(ops.sum(labels * w["rtd"]))
        real += float(ops.sum(w["rtd"]))
    return 1.0 - replaced / real


@pytest.mark.slow
def test_the_discriminator_beats_the_all_original_baseline(tmp_path_factory):
    workdir, _ = _train(tmp_path_factory, 2500)
    model_dir = os.path.join(workdir, "model")
    metrics = evaluate(model_dir, max_batches=4)
    baseline = _all_original_accuracy(model_dir, 4)
    assert metrics["rtd_accuracy"] > baseline, (metrics, baseline)
    assert metrics["rtd_precision"] > 0.5, metrics
