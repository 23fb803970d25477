"""The learning-rate schedule and the AdamW optimizer built from ``config.train``."""

import keras
import numpy as np
import pytest

from tests.testing import train_config
from tflm.config import train_section
from tflm.errors import ConfigError
from tflm.training.optim import (
    AdamW,
    WarmupDecay,
    decays,
    learning_rate_schedule,
    make_optimizer,
)


def _lr(schedule, step):
    return float(schedule(step))


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_warmup_then_decay_to_the_floor(decay):
    s = learning_rate_schedule(train_config(learning_rate=1e-3, warmup_steps=10, steps=110,
                                      lr_decay=decay, min_lr_ratio=0.1))
    assert _lr(s, 0) == 0.0
    assert _lr(s, 5) == pytest.approx(5e-4)
    assert _lr(s, 10) == pytest.approx(1e-3)
    assert _lr(s, 60) == pytest.approx(5.5e-4)  # half way: (peak + floor) / 2
    assert _lr(s, 110) == pytest.approx(1e-4)
    assert _lr(s, 500) == pytest.approx(1e-4)
    values = [_lr(s, step) for step in range(10, 111, 5)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_and_linear_differ_between_ends():
    config = dict(learning_rate=1.0, warmup_steps=0, steps=100, min_lr_ratio=0.0)
    cosine = learning_rate_schedule(train_config(lr_decay="cosine", **config))
    linear = learning_rate_schedule(train_config(lr_decay="linear", **config))
    assert _lr(linear, 25) == pytest.approx(0.75)
    assert _lr(cosine, 25) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))


def test_constant_after_warmup():
    s = learning_rate_schedule(train_config(learning_rate=2e-3, warmup_steps=4, steps=10,
                                      lr_decay="constant"))
    assert [_lr(s, step) for step in (0, 2, 4, 10, 100)] == pytest.approx(
        [0.0, 1e-3, 2e-3, 2e-3, 2e-3])


def test_schedule_serialization_round_trip():
    s = WarmupDecay(1e-3, 10, 100, decay="linear", min_lr_ratio=0.2)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(s))
    assert isinstance(restored, WarmupDecay)
    assert restored.get_config() == s.get_config()
    assert _lr(restored, 50) == pytest.approx(_lr(s, 50))


def test_unknown_decay_is_a_config_error():
    with pytest.raises(ConfigError, match="lr_decay"):
        WarmupDecay(1e-3, 10, 100, decay="exponential")


def _model():
    inputs = keras.Input((3,), dtype="int32")
    hidden = keras.layers.Embedding(11, 4, name="token_embedding")(inputs)
    hidden = keras.layers.LayerNormalization(name="layer_norm")(hidden)
    outputs = keras.layers.Dense(2, name="dense")(hidden)
    return keras.Model(inputs, outputs)


def test_no_decay_patterns_match_real_variable_paths():
    paths = {v.path: decays(v.path, train_section().no_decay) for v in _model().weights}
    assert paths == {
        "token_embedding/embeddings": False,
        "layer_norm/gamma": False,
        "layer_norm/beta": False,
        "dense/kernel": True,
        "dense/bias": False,
    }


def test_weight_decay_shrinks_only_decayed_variables():
    model = _model()
    optimizer = make_optimizer(
        train_config(learning_rate=0.1, warmup_steps=0, lr_decay="constant", weight_decay=0.5),
        model)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer.apply([keras.ops.zeros_like(v) for v in model.trainable_variables],
                    model.trainable_variables)
    for v in model.trainable_variables:
        factor = 1 - 0.1 * 0.5 if v.path == "dense/kernel" else 1.0
        np.testing.assert_allclose(v.numpy(), before[v.path] * factor, rtol=1e-6)


def _one_update(clip_norm):
    """Update of a 100-element variable by a gradient of norm 100 (Adam ~ SGD: epsilon 1e3)."""
    config = train_config(learning_rate=1.0, warmup_steps=0, lr_decay="constant",
                    weight_decay=0.0, epsilon=1e3, clip_norm=clip_norm)
    variable = keras.Variable(np.zeros(100, "float32"), name="kernel")
    optimizer = make_optimizer(config, _model())
    optimizer.apply([keras.ops.full((100,), 10.0)], [variable])
    return np.linalg.norm(variable.numpy())


def test_global_clipnorm_bounds_the_update():
    clipped, unclipped = _one_update(1.0), _one_update(0.0)
    assert clipped <= 1.0 / 1e3 * 1.001  # lr * clip_norm / epsilon
    assert unclipped > 50 * clipped


def _dense_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))


def test_gradient_accumulation_equals_one_big_batch():
    rng = np.random.RandomState(0)
    x, y = rng.rand(8, 4).astype("float32"), rng.rand(8, 2).astype("float32")
    common = dict(learning_rate=0.1, warmup_steps=0, lr_decay="constant")
    big, small = _dense_model(), _dense_model()
    small.set_weights(big.get_weights())
    start = big.get_weights()
    big.compile(make_optimizer(train_config(**common), big), "mse")
    small.compile(make_optimizer(train_config(grad_accum_steps=2, **common), small), "mse")

    small.train_on_batch(x[:4], y[:4])
    for a, b in zip(small.get_weights(), start):
        np.testing.assert_array_equal(a, b)  # no update on the first of 2 batches
    small.train_on_batch(x[4:], y[4:])
    big.train_on_batch(x, y)
    for a, b, s in zip(small.get_weights(), big.get_weights(), start):
        assert not np.allclose(a, s)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_optimizer_config_round_trip():
    optimizer = make_optimizer(train_config(grad_accum_steps=4, clip_norm=0.5), _model())
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, AdamW)
    assert restored.no_decay == ("bias", "norm", "embedding")
    assert restored.global_clipnorm == 0.5
    assert restored.gradient_accumulation_steps == 4
    assert isinstance(restored._learning_rate, WarmupDecay)


@pytest.fixture
def policy():
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_variables(policy, name):
    policy(name)
    model = _model()
    assert all(v.dtype == "float32" for v in model.weights)
    optimizer = make_optimizer(train_section(), model)
    is_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == (name == "mixed_float16")


def _tiny_classifier():
    from tflm.models.classifier import SequenceClassifier

    keras.utils.set_random_seed(0)
    return SequenceClassifier(
        dict(vocabulary_size=20, num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16,
             max_sequence_length=6, causal=False), labels=("a", "b"))


def _step(model, optimizer):
    """One optimizer update with all-ones gradients; the change of every variable."""
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply([keras.ops.ones_like(v) for v in model.trainable_variables],
                    model.trainable_variables)
    return {v.path: np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)}


def test_layer_decay_scales_each_depths_learning_rate():
    model = _tiny_classifier()
    optimizer = make_optimizer(train_config(learning_rate=1e-2, warmup_steps=0, lr_decay="constant",
                                            weight_decay=0.0, clip_norm=0.0, layer_decay=0.5),
                               model)
    change = _step(model, optimizer)
    # Adam's first update is lr * sign(g): top (head) 1, block 1: 0.5, block 0: 0.25,
    # embeddings 0.125 (2 blocks: the head is depth 3).
    assert change["head/kernel"] == pytest.approx(1e-2, rel=1e-3)
    assert change["block_1/mlp_in/kernel"] == pytest.approx(5e-3, rel=1e-3)
    assert change["block_0/mlp_in/kernel"] == pytest.approx(2.5e-3, rel=1e-3)
    assert change["embedding/token_embeddings"] == pytest.approx(1.25e-3, rel=1e-3)


def test_frozen_backbone_moves_only_after_its_steps():
    model = _tiny_classifier()
    optimizer = make_optimizer(train_config(learning_rate=1e-2, warmup_steps=0, lr_decay="constant",
                                            weight_decay=0.1, clip_norm=0.0,
                                            freeze_backbone_steps=2), model)
    for _ in range(2):
        change = _step(model, optimizer)
        assert change["head/kernel"] > 0
        assert all(v == 0 for k, v in change.items() if not k.startswith("head"))
    change = _step(model, optimizer)
    assert all(v > 0 for k, v in change.items() if "gamma" in k or "kernel" in k)
