"""A new objective is one task class, one pipeline adapter and one config.

Everything about the toy objective below lives in this file: it is registered here and
then trained by ``tflm.training.train`` (interrupted and resumed), evaluated by the
function behind ``tflm evaluate``, saved and loaded as a model directory and through
``tflm.load`` - with no edit to the trainer, the CLI or the model-directory code.

The toy task: is the first token id of a sequence even? A bidirectional backbone, its
first-token pooled output, a Dense head; inputs are consecutive slices of the token cache.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import tflm
from tests.training.train_worker import shared_cache_dir
from tflm.config import base_config, validate
from tflm.data import step_stream
from tflm.errors import ConfigError
from tflm.model_dir import LoadedModel, build_model, load_model_dir
from tflm.models import Objective, register_objective, unregister_objective
from tflm.models.backbone import build_backbone
from tflm.training import evaluate, train

NAME = "first_token_parity"
CRASH = {"at_step": None}  # the step at which the next run raises once


class FirstTokenParity(keras.Model):
    """The task: backbone -> pooled output -> Dense(num_classes) logits (float32)."""

    def __init__(self, backbone, num_classes: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.backbone = build_backbone(backbone, dtype=self.dtype_policy)
        self.num_classes = num_classes
        self.head = keras.layers.Dense(num_classes, name="head", dtype=self.dtype_policy)
        self.head.build((None, self.backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        pooled = self.backbone(inputs, training=training)["pooled_output"]  # (B, hidden)
        return ops.cast(self.head(pooled), "float32")  # (B, num_classes)

    def flops_per_token(self, data_config):
        return 6 * self.backbone.count_params()

    @staticmethod
    def default_loss():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @staticmethod
    def default_metrics():
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def parity_pipeline(caches, tokenizer, config, batch_size, *, split, training, seed,
                    start_step=0, input_context=None):
    """The adapter: rows of seq_len consecutive ids; label = first id % 2."""
    seq_len = config.data.seq_len
    ids = np.asarray(caches[split].ids)
    rows = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len).astype("int32")
    table = tf.constant(rows)

    def batch(idx):
        tokens = tf.gather(table, idx)  # (B, seq_len)
        x = {"token_ids": tokens, "padding_mask": tf.ones_like(tokens)}
        return x, tokens[:, 0] % 2, tf.ones([tf.shape(tokens)[0]], tf.float32)

    if training:
        return step_stream.training_stream(len(rows), batch_size, seed, start_step,
                                           input_context, lambda step, row, idx: batch(idx))
    ordered = tf.data.Dataset.range(len(rows)).batch(batch_size)
    return step_stream.finish(ordered, batch)


class CrashOnce(keras.callbacks.Callback):
    """Raises after the batch that ends step CRASH["at_step"] (a killed run), once."""

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step == CRASH["at_step"]:
            CRASH["at_step"] = None
            raise RuntimeError(f"simulated crash at step {step}")


def parity_callbacks(task, context):
    return [CrashOnce()]


@pytest.fixture(scope="module", autouse=True)
def objective():
    registered = register_objective(Objective(
        name=NAME, task=FirstTokenParity, pipeline=parity_pipeline, causal=False,
        callbacks=parity_callbacks, description="toy: parity of the first token"))
    yield registered
    unregister_objective(NAME)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return shared_cache_dir(tmp_path_factory)


def toy_config(cache_dir):
    """The objective's config: base_config(NAME) gives its model section's keys."""
    config = base_config(NAME)
    config.model.backbone.update(vocabulary_size=384, num_layers=1, hidden_dim=16,
                                 num_heads=2, intermediate_dim=32, max_sequence_length=16,
                                 causal=False, pooling="first")
    config.model.num_classes = 2
    config.data.update(seq_len=16, cache_dir=str(cache_dir))
    config.train.update(batch_size=4, steps=10, learning_rate=3e-3, warmup_steps=2,
                        eval_every=5, eval_steps=3, log_every=5, checkpoint_every=5,
                        sample_every=0, precision="float32", jit_compile="off")
    return validate(config)


def _weights(path):
    model, _, _ = load_model_dir(path)
    return [ops.convert_to_numpy(w) for w in model.weights]


def test_config_keys_are_the_tasks_arguments(cache_dir):
    config = toy_config(cache_dir)
    assert set(config.model.keys()) == {"backbone", "num_classes"}
    config = base_config(NAME)
    config.model.num_clases = 3  # a typo beside the backbone
    with pytest.raises(ConfigError, match="num_clases.*Did you mean 'num_classes'"):
        validate(config)


def test_trains_resumes_evaluates_and_loads(tmp_path, cache_dir):
    config = toy_config(cache_dir)
    straight = str(tmp_path / "straight")
    summary = train(config, straight)
    assert summary["final_step"] == 10 and summary["objective"] == NAME
    assert {"validation_loss", "validation_accuracy", "initial_validation_accuracy",
            "train_loss"} <= set(summary)
    assert "validation_perplexity" not in summary  # no LM code ran for this task

    # A run that crashes at step 7 and is started again resumes from its step-5 backup
    # and ends with the weights of the run that was never interrupted.
    resumed = str(tmp_path / "resumed")
    CRASH["at_step"] = 7
    with pytest.raises(RuntimeError, match="simulated crash at step 7"):
        train(config, resumed)
    assert not os.path.exists(os.path.join(resumed, "summary.json"))
    summary_resumed = train(config, resumed)
    assert summary_resumed["resumed_from_step"] == 5
    assert summary_resumed["final_step"] == 10
    for a, b in zip(_weights(os.path.join(straight, "model")),
                    _weights(os.path.join(resumed, "model"))):
        np.testing.assert_array_equal(a, b)

    # `tflm evaluate` on the same validation batches reproduces the trainer's numbers.
    model_dir = os.path.join(straight, "model")
    metrics = evaluate(model_dir, max_batches=3, batch_size=4)
    assert metrics["objective"] == NAME and metrics["batches"] == 3
    np.testing.assert_allclose(metrics["loss"], summary["validation_loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], summary["validation_accuracy"], rtol=1e-6)

    # The model directory round trip, directly and through tflm.load.
    model, _, loaded_config = load_model_dir(model_dir)
    assert isinstance(model, FirstTokenParity) and loaded_config == config
    loaded = tflm.load(model_dir)
    assert isinstance(loaded, LoadedModel)
    x = {"token_ids": np.arange(32, dtype="int32").reshape(2, 16) % 384}
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded.model(x)),
                                  ops.convert_to_numpy(model(x)))
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["train"]["objective"] == NAME
    # A fresh task is not the trained one: the weights really came from the directory.
    assert not np.allclose(ops.convert_to_numpy(build_model(config)(x)),
                           ops.convert_to_numpy(model(x)))
