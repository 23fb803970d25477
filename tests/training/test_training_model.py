"""TrainingModel: Keras' train/test steps plus grad_norm, perplexity derived from the loss."""

import keras
import numpy as np
import tensorflow as tf

from tflm.models import GPT, Perplexity
from tflm.training.training_model import TrainingModel

VOCAB, SEQ = 23, 6


def _model():
    keras.utils.set_random_seed(0)
    task = GPT(backbone=dict(vocabulary_size=VOCAB, num_layers=1, hidden_dim=16, num_heads=2,
                             intermediate_dim=32, max_sequence_length=SEQ))
    model = TrainingModel(task)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=task.default_loss(),
                  weighted_metrics=task.default_metrics(), jit_compile=False)
    return task, model


def _batch(seed, real):
    """(x, y, w): 2 rows whose first ``real`` labels have weight 1, the rest 0."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(2, SEQ + 1)).astype("int32")
    w = np.zeros((2, SEQ), "float32")
    w[:, :real] = 1.0
    x = {"token_ids": ids[:, :-1], "padding_mask": (w > 0).astype("int32")}
    return x, ids[:, 1:], w


def test_perplexity_is_not_computed_twice():
    _, model = _model()
    model.test_on_batch(*_batch(0, 3))  # builds the compiled metrics
    compiled = model._compile_metrics.metrics
    assert not any(isinstance(m, Perplexity) for m in compiled)
    assert "accuracy" in [m.name for m in compiled]


def test_evaluated_perplexity_is_token_weighted_over_batches():
    task, model = _model()
    batches = [_batch(0, SEQ), _batch(1, 2)]  # 12 and 4 real labels
    reference, hits = Perplexity(), []
    for x, y, w in batches:
        logits = task(x)
        reference.update_state(y, logits, sample_weight=w)
        hits.extend((np.argmax(logits, -1) == y)[w > 0])
    dataset = tf.data.Dataset.from_tensors(batches[0]).concatenate(
        tf.data.Dataset.from_tensors(batches[1]))
    logs = model.evaluate(dataset, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["perplexity"], float(reference.result()), rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], np.mean(hits), rtol=1e-6)  # real labels only
    # not exp(mean of the two batch losses): the batch with 3x the labels counts 3x
    batch_losses = [float(task.default_loss()(y, task(x), sample_weight=w))
                    for x, y, w in batches]
    assert abs(logs["perplexity"] - np.exp(np.mean(batch_losses))) > 1e-3


def test_train_step_logs_grad_norm_and_perplexity_of_the_step():
    task, model = _model()
    x, y, w = _batch(2, 4)
    with tf.GradientTape() as tape:
        loss = task.default_loss()(y, task(x, training=True), sample_weight=w)
    expected_norm = float(tf.linalg.global_norm(tape.gradient(loss, task.trainable_variables)))
    logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-5)
    np.testing.assert_allclose(logs["perplexity"], np.exp(float(loss)), rtol=1e-5)
    np.testing.assert_allclose(logs["grad_norm"], expected_norm, rtol=1e-4)
    assert set(logs) >= {"loss", "perplexity", "accuracy", "grad_norm"}


def test_without_perplexity_from_loss_the_compiled_metric_is_kept():
    keras.utils.set_random_seed(0)
    task = GPT(backbone=dict(vocabulary_size=VOCAB, num_layers=1, hidden_dim=16, num_heads=2,
                             intermediate_dim=32, max_sequence_length=SEQ))
    model = TrainingModel(task, perplexity_from_loss=False)
    model.compile(optimizer="sgd", loss=task.default_loss(),
                  weighted_metrics=task.default_metrics(), jit_compile=False)
    x, y, w = _batch(3, 3)
    logs = model.test_on_batch(x, y, sample_weight=w, return_dict=True)
    np.testing.assert_allclose(logs["perplexity"], np.exp(logs["loss"]), rtol=1e-5)
