"""GPT: config keys, tied/untied head, cache == full, XLA, mixed precision, training, metrics."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests.testing import check_model
from tflm.config import model_section
from tflm.models import GPT, Perplexity, flops_per_token

B, T, VOCAB = 2, 8, 40


def _config(**overrides):
    """`config.model` (nested: backbone arguments under "backbone"), with overrides of
    either the backbone's or the head's keys."""
    config = model_section().to_dict()
    config["backbone"].update(vocabulary_size=VOCAB, num_layers=1, hidden_dim=16,
                              num_heads=2, intermediate_dim=32, max_sequence_length=12)
    for key, value in overrides.items():
        (config if key in config else config["backbone"])[key] = value
    return config


def _x(seed=0):
    ids = np.random.default_rng(seed).integers(0, VOCAB, size=(B, T)).astype("int32")
    return {"token_ids": ids, "padding_mask": np.ones((B, T), "int32")}


def _np(x):
    return ops.convert_to_numpy(x)


def _decode(model, ids, prefill=3):
    cache = model.init_cache(ids.shape[0], 12)
    logits, cache = model.call_with_cache(ids[:, :prefill], cache, 0)
    pieces = [_np(logits)]
    for t in range(prefill, ids.shape[1]):
        logits, cache = model.call_with_cache(ids[:, t: t + 1], cache, t)
        pieces.append(_np(logits))
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize(
    "overrides", [{}, {"tie_embeddings": False, "position_embedding": "rotary", "num_layers": 2}]
)
def test_takes_config_model_and_cache_decoding_equals_full_pass(overrides):
    model = GPT(**_config(**overrides))
    x = _x()
    logits = model(x)
    assert logits.shape == (B, T, VOCAB)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert (model.lm_head is None) == model.tie_embeddings
    np.testing.assert_allclose(_decode(model, x["token_ids"]), _np(logits), atol=1e-5)
    np.testing.assert_allclose(_np(model({"token_ids": x["token_ids"]})), _np(logits))


def test_xla_compiled_forward_and_decode_step_match_eager():
    model = GPT(**_config())
    x = _x()
    cache = model.init_cache(B, 12)
    forward = tf.function(lambda x: model(x), jit_compile=True)
    step = tf.function(model.call_with_cache, jit_compile=True)
    np.testing.assert_allclose(_np(forward(x)), _np(model(x)), atol=1e-5)
    eager_logits, eager_cache = model.call_with_cache(x["token_ids"][:, :3], cache, 0)
    xla_logits, xla_cache = step(x["token_ids"][:, :3], cache, tf.constant(0))
    np.testing.assert_allclose(_np(xla_logits), _np(eager_logits), atol=1e-5)
    np.testing.assert_allclose(_np(xla_cache), _np(eager_cache), atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_logits_float32_and_close(policy):
    reference = GPT(**_config())
    x = _x()
    expected = _np(reference(x))
    keras.config.set_dtype_policy(policy)
    model = GPT(**_config())
    model.set_weights(reference.get_weights())
    assert all(w.dtype == "float32" for w in model.weights)
    logits = model(x)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(_np(logits)).all()
    np.testing.assert_allclose(_np(logits), expected, atol=0.05)
    cache = model.init_cache(B, 12)
    assert keras.backend.standardize_dtype(cache.dtype) == policy.split("_")[1]
    np.testing.assert_allclose(_decode(model, x["token_ids"]), _np(logits), atol=0.05)


def test_fit_step_save_and_reload(tmp_path):
    model = GPT(**_config(dropout=0.1))
    x = _x()
    y = np.roll(x["token_ids"], -1, axis=1)
    sample_weight = np.ones((B, T), "float32")
    sample_weight[:, -1] = 0
    before = [w.copy() for w in model.get_weights()]
    check_model(model, x, y, sample_weight, tmp_path=tmp_path)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_default_loss_ignores_zero_weight_labels():
    logits = np.random.default_rng(0).normal(size=(1, 3, 5)).astype("float32")
    y = np.array([[1, 2, 3]])
    w = np.array([[1.0, 1.0, 0.0]], "float32")
    loss = float(GPT.default_loss()(y, logits, sample_weight=w))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(log_probs[0, 0, 1] + log_probs[0, 1, 2]) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_perplexity_is_exp_of_weighted_mean_cross_entropy_over_batches():
    rng = np.random.default_rng(0)
    metric = Perplexity()
    total, count = 0.0, 0.0
    for _ in range(2):
        logits = rng.normal(size=(2, 4, 6)).astype("float32")
        y = rng.integers(0, 6, size=(2, 4))
        w = (rng.random((2, 4)) > 0.3).astype("float32")
        metric.update_state(y, logits, sample_weight=w)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        ce = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
        total, count = total + (ce * w).sum(), count + w.sum()
    np.testing.assert_allclose(float(metric.result()), np.exp(total / count), rtol=1e-5)
    assert Perplexity.from_config(metric.get_config()).get_config() == metric.get_config()


def test_bad_inputs_raise_clear_errors():
    model = GPT(**_config())
    with pytest.raises(ValueError, match="integer tensor"):
        model({"token_ids": np.zeros((1, 4), "float32"), "padding_mask": np.ones((1, 4))})
    with pytest.raises(ValueError, match=r"padding_mask shape \(1, 3\) .* shape \(1, 4\)"):
        model({"token_ids": np.zeros((1, 4), "int32"), "padding_mask": np.ones((1, 3), "int32")})
    with pytest.raises(ValueError, match="integer tensor"):
        model.call_with_cache(np.zeros((1, 1), "float32"), model.init_cache(1, 4), 0)
    with pytest.raises(ValueError, match="sequence length 13 exceeds"):
        model({"token_ids": np.zeros((1, 13), "int32")})


def test_flops_per_token_counts_matmuls_and_attention():
    layers, d, f, t, v = 2, 8, 32, 16, 100
    params = layers * (4 * d * d + 2 * d * f) + d * v
    assert flops_per_token(layers, d, f, t, v) == 6 * params + 12 * layers * t * d
