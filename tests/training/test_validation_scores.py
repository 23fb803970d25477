"""ValidationScores: task scores in fit's logs, History and TensorBoard, and by evaluate()."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tflm.training.task_metrics import scores
from tflm.training.validation_scores import ValidationScores

FEATURES, CLASSES = 4, 3


def _dense_model(shape, units):
    return keras.Sequential([keras.Input(shape), keras.layers.Dense(units)])


def _classification_data(seed, n=24):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = np.argmax(x[:, :CLASSES], axis=-1).astype("int32")
    w = (rng.random(n) < 0.8).astype("float32")
    return x, y, w


def test_fit_logs_the_scores_of_the_model_at_each_validation(tmp_path):
    keras.utils.set_random_seed(0)
    train = tf.data.Dataset.from_tensor_slices(_classification_data(0)).batch(8)
    x, y, w = _classification_data(1, n=20)
    eval_ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8)  # last batch of 4
    model = _dense_model((FEATURES,), CLASSES)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = ValidationScores("classification", eval_ds, num_classes=CLASSES,
                                log_dir=str(tmp_path))
    history = model.fit(train, epochs=2, validation_data=eval_ds, callbacks=[callback],
                        shuffle=False, verbose=0).history

    expected = scores("classification", y, model.predict(x, verbose=0), weights=w)
    for name in ("accuracy", "macro_f1", "mcc"):
        assert len(history[f"val_{name}"]) == 2, name
        assert history[f"val_{name}"][-1] == pytest.approx(expected[name]), name
    assert callback.evaluate(model) == pytest.approx(expected)

    accumulator = event_accumulator.EventAccumulator(
        os.path.join(tmp_path, "validation"), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    series = {e.step: float(tf.make_ndarray(e.tensor_proto))
              for e in accumulator.Tensors("epoch_macro_f1")}
    assert sorted(series) == [3, 6]  # optimizer steps: 3 batches per epoch
    assert series[6] == pytest.approx(expected["macro_f1"])


def test_epochs_without_validation_are_left_alone():
    x, y, _ = _classification_data(2, n=8)
    callback = ValidationScores("classification", tf.data.Dataset.from_tensor_slices(
        (x, y)).batch(4))
    callback.set_model(_dense_model((FEATURES,), CLASSES))
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0}


def test_evaluate_regression_without_sample_weights():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, FEATURES)).astype("float32")
    y = x.sum(axis=-1)
    model = _dense_model((FEATURES,), 1)
    callback = ValidationScores("regression",
                                tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    result = callback.evaluate(model)
    assert set(result) == {"pearson", "spearman", "mse"}
    assert result == pytest.approx(scores("regression", y, model.predict(x, verbose=0)))


def test_evaluate_token_classification_scores_weighted_tokens():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, (6, 5)).astype("int32")
    w = np.ones((6, 5), "float32")
    w[:, -2:] = 0  # padding
    model = _dense_model((5, FEATURES), CLASSES)
    callback = ValidationScores("token_classification",
                                tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4),
                                outside_id=0)
    result = callback.evaluate(model)
    expected = scores("token_classification", y, model.predict(x, verbose=0), weights=w,
                      outside_id=0)
    assert set(result) == {"accuracy", "token_f1", "token_precision", "token_recall"}
    assert result == pytest.approx(expected)


def test_construction_checks_the_kind():
    dataset = tf.data.Dataset.from_tensor_slices(([[0.0]], [0])).batch(1)
    with pytest.raises(ValueError, match="Unknown task kind"):
        ValidationScores("ner", dataset)
    with pytest.raises(ValueError, match="outside_id"):
        ValidationScores("token_classification", dataset)
