"""TensorBoard logs, read back with TensorBoard's own reader: every tag, sane values."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tests.training.train_worker import shared_cache_dir, tiny_config
from tflm.training import train
from tflm.training.optim import learning_rate_schedule

# 22 steps: the last Keras epoch (5 steps each) is cut short at step 22.
STEPS, LOG_EVERY, EVAL_EVERY = 22, 5, 10


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return shared_cache_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    config = tiny_config(cache_dir, train__steps=STEPS, train__log_every=LOG_EVERY,
                         train__eval_every=EVAL_EVERY, train__sample_every=EVAL_EVERY)
    workdir = str(tmp_path_factory.mktemp("tensorboard"))
    return config, workdir, train(config, workdir)


def _read(workdir, name):
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(workdir, "logs", name),
        size_guidance={event_accumulator.TENSORS: 0, event_accumulator.GRAPH: 1})
    accumulator.Reload()
    return accumulator


def _series(accumulator, tag):
    """{step: value} of a tag (tf.summary writes scalars and text as tensors)."""
    return {e.step: tf.make_ndarray(e.tensor_proto) for e in accumulator.Tensors(tag)}


def test_train_scalars(run):
    config, workdir, summary = run
    assert summary["final_step"] == STEPS
    train_logs = _read(workdir, "train")
    log_steps = [5, 10, 15, 20]
    for tag in ("loss", "perplexity", "accuracy", "grad_norm", "learning_rate",
                "tokens_per_second", "examples_per_second", "mfu"):
        series = _series(train_logs, tag)
        assert sorted(series) == log_steps, tag
        assert all(math.isfinite(float(v)) for v in series.values()), tag
    assert all(0 <= v <= 1 for v in _series(train_logs, "accuracy").values())
    assert all(v > 0 for v in _series(train_logs, "tokens_per_second").values())
    assert all(0 < v < 1 for v in _series(train_logs, "mfu").values())
    loss = _series(train_logs, "loss")
    perplexity = _series(train_logs, "perplexity")
    assert all(v > 0 for v in loss.values())
    assert all(p > 1 for p in perplexity.values())
    schedule = learning_rate_schedule(config.train)
    for step, lr in _series(train_logs, "learning_rate").items():
        np.testing.assert_allclose(lr, float(schedule(step)), rtol=1e-6)
    # Keras' own TensorBoard callback: epoch scalars in the same run.
    assert "epoch_loss" in train_logs.Tags()["tensors"]


def test_model_graph(run):
    _, workdir, _ = run
    graph = _read(workdir, "train").Graph()
    assert any(node.op == "MatMul" or "BatchMatMul" in node.op for node in graph.node)


def test_validation_scalars(run):
    _, workdir, summary = run
    validation = _read(workdir, "validation")
    for tag in ("loss", "perplexity", "accuracy"):
        series = _series(validation, tag)
        assert sorted(series) == [0, 10, 20, STEPS], tag
    perplexity = _series(validation, "perplexity")
    np.testing.assert_allclose(perplexity[0], summary["initial_validation_perplexity"],
                               rtol=1e-6)
    np.testing.assert_allclose(perplexity[STEPS], summary["validation_perplexity"], rtol=1e-6)
    assert perplexity[STEPS] < perplexity[0]
    unigram = _series(validation, "unigram_perplexity")
    np.testing.assert_allclose(unigram[0], summary["unigram_validation_perplexity"],
                               rtol=1e-6)


def test_text_samples(run):
    config, workdir, _ = run
    samples = _series(_read(workdir, "samples"), "samples")
    assert sorted(samples) == [10, 20, STEPS]
    texts = [t.decode() for t in samples[STEPS].ravel()]
    assert len(texts) == len(config.train.sample_prompts)
    for prompt, text in zip(config.train.sample_prompts, texts):
        assert text.startswith(prompt) and len(text) > len(prompt)
