"""MultiHeadAttention: causality, padding, cache, parity with Keras, precision, errors."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.testing import check_layer
from tflm.layers import MultiHeadAttention

B, T, HIDDEN, HEADS = 2, 6, 16, 2


def _query(seed=0, shape=(B, T, HIDDEN)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _np(x):
    return ops.convert_to_numpy(x)


def test_causal_outputs_ignore_later_tokens():
    layer = MultiHeadAttention(HEADS)
    x = _query()
    base = _np(layer(x, use_causal_mask=True))
    for t in range(T - 1):
        changed = x.copy()
        changed[:, t + 1:] = _query(seed=t + 1)[:, t + 1:]
        out = _np(layer(changed, use_causal_mask=True))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


def test_outputs_at_real_positions_ignore_padded_positions():
    layer = MultiHeadAttention(HEADS)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")
    x = _query()
    base = _np(layer(x, padding_mask=mask))
    changed = x.copy()
    changed[0, 4:] = 100.0
    out = _np(layer(changed, padding_mask=mask))
    np.testing.assert_allclose(out[0, :4], base[0, :4], atol=1e-6)
    np.testing.assert_allclose(out[1], base[1], atol=1e-6)


def test_fully_masked_rows_are_finite():
    layer = MultiHeadAttention(HEADS)
    mask = np.array([[0] * T, [1] * T], "int32")
    out = _np(layer(_query(), padding_mask=mask, use_causal_mask=True))
    assert np.isfinite(out).all()


def _copy_into_keras_mha(layer, reference):
    """Copies our fused weights into a keras.layers.MultiHeadAttention."""
    heads = (HEADS, HIDDEN // HEADS)
    kernel, bias = layer.qkv_dense.get_weights()  # (hidden, 3*H*D), (3*H*D,)
    kernel, bias = kernel.reshape(HIDDEN, 3, *heads), bias.reshape(3, *heads)
    kernels, biases = [kernel[:, i] for i in range(3)], [bias[i] for i in range(3)]
    dense = [reference._query_dense, reference._key_dense, reference._value_dense]
    for d, k, b in zip(dense, kernels, biases):
        d.set_weights([k, b])
    kernel, bias = layer.output_dense.get_weights()  # (H*D, hidden)
    reference._output_dense.set_weights([kernel.reshape(*heads, HIDDEN), bias])


@pytest.mark.parametrize("causal", [False, True])
def test_matches_keras_multi_head_attention(causal):
    layer = MultiHeadAttention(HEADS)
    reference = keras.layers.MultiHeadAttention(HEADS, HIDDEN // HEADS)
    x = _query(1)
    mask = np.array([[1] * T, [1, 1, 1, 1, 1, 0]], "int32")
    ours = _np(layer(x, padding_mask=mask, use_causal_mask=causal))
    reference(x, x)
    _copy_into_keras_mha(layer, reference)
    attention_mask = np.broadcast_to(mask[:, None, :], (B, T, T)).astype(bool)
    theirs = _np(reference(x, x, attention_mask=attention_mask, use_causal_mask=causal))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("rotary", [False, True])
def test_cache_prefill_then_steps_equals_full_pass(rotary):
    layer = MultiHeadAttention(HEADS, rotary=rotary)
    x = _query()
    full = _np(layer(x, use_causal_mask=True))
    cache = np.zeros((B, 2, 8, HEADS, HIDDEN // HEADS), "float32")
    out, cache = layer(x[:, :3], cache=cache, cache_index=0)
    steps = [_np(out)]
    for t in range(3, T):
        out, cache = layer(x[:, t: t + 1], cache=cache, cache_index=t)
        steps.append(_np(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    assert np.all(_np(cache)[:, :, T:] == 0), "slots past the last token stay empty"


def test_whole_model_cache_with_cache_layer_matches_per_layer_cache():
    """`cache_layer=i` writes only layer i of a (B, L, 2, S, H, D) cache, same outputs."""
    layer = MultiHeadAttention(HEADS)
    x = _query()
    per_layer = np.zeros((B, 2, 8, HEADS, HIDDEN // HEADS), "float32")
    whole = np.zeros((B, 3, 2, 8, HEADS, HIDDEN // HEADS), "float32")
    out_a, per_layer = layer(x[:, :3], cache=per_layer, cache_index=0)
    out_b, whole = layer(x[:, :3], cache=whole, cache_index=0, cache_layer=1)
    for t in range(3, T):
        step_a, per_layer = layer(x[:, t: t + 1], cache=per_layer, cache_index=t)
        step_b, whole = layer(x[:, t: t + 1], cache=whole, cache_index=t, cache_layer=1)
        np.testing.assert_allclose(_np(step_a), _np(step_b), atol=1e-6)
    np.testing.assert_allclose(_np(out_a), _np(out_b), atol=1e-6)
    np.testing.assert_allclose(_np(whole)[:, 1], _np(per_layer), atol=1e-6)
    assert np.all(_np(whole)[:, [0, 2]] == 0), "other layers' slots are untouched"
    with pytest.raises(ValueError, match="init_cache"):
        layer(x[:, :1], cache=whole, cache_index=0, cache_layer=3)


def test_cache_mask_hides_slots():
    layer = MultiHeadAttention(HEADS)
    x = _query()
    cache = np.zeros((B, 2, T, HEADS, HIDDEN // HEADS), "float32")
    cache_mask = np.ones((B, T), "int32")
    cache_mask[:, 1] = 0
    out, _ = layer(x, cache=cache, cache_index=0, cache_mask=cache_mask)
    changed = x.copy()
    changed[:, 1] = 50.0
    out2, _ = layer(changed, cache=cache, cache_index=0, cache_mask=cache_mask)
    keep = [0, 2, 3, 4, 5]
    np.testing.assert_allclose(_np(out)[:, keep], _np(out2)[:, keep], atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_close_to_float32(policy):
    reference = MultiHeadAttention(HEADS, rotary=True)
    x = _query()
    expected = _np(reference(x, use_causal_mask=True))
    keras.config.set_dtype_policy(policy)
    layer = MultiHeadAttention(HEADS, rotary=True)
    layer.build((B, T, HIDDEN))
    layer.set_weights(reference.get_weights())
    out = layer(x, use_causal_mask=True)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert all(w.dtype == "float32" for w in layer.weights)
    out = _np(ops.cast(out, "float32"))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, atol=0.1, rtol=0.05)


def test_layer_checks_self_attention(tmp_path):
    check_layer(
        MultiHeadAttention(HEADS, rotary=True, name="self_attention"),
        {"x": _query(), "mask": np.ones((B, T), "int32")},
        call=lambda lyr, i: lyr(i["x"], padding_mask=i["mask"], use_causal_mask=True),
        tmp_path=tmp_path,
    )


def test_bad_inputs_raise_clear_errors():
    layer = MultiHeadAttention(HEADS)
    with pytest.raises(ValueError, match="rank 3"):
        layer(np.zeros((B, HIDDEN), "float32"))
    with pytest.raises(ValueError, match="not divisible by num_heads 3"):
        MultiHeadAttention(3)(_query())
    with pytest.raises(ValueError, match=r"padding_mask shape \(2, 5\)"):
        layer(_query(), padding_mask=np.ones((B, 5), "int32"))
    with pytest.raises(ValueError, match="init_cache"):
        layer(_query(), cache=np.zeros((B, 2, 8, 4, 4), "float32"), cache_index=0)
    with pytest.raises(ValueError, match="cache_index"):
        layer(_query(), cache=np.zeros((B, 2, 8, HEADS, 8), "float32"))


def test_masked_softmax_is_the_softmax_over_kept_positions():
    from tflm.layers.attention import masked_softmax

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 6)).astype("float32") * 4
    scores[0, 5] = 1e4  # a huge masked score neither leaks nor overflows
    mask = np.array([[1, 1, 0, 1, 0, 0], [1] * 6, [0] * 6], bool)
    probs = _np(masked_softmax(scores, mask))
    for row in range(2):
        kept = np.exp(scores[row][mask[row]] - scores[row][mask[row]].max())
        np.testing.assert_allclose(probs[row][mask[row]], kept / kept.sum(), rtol=1e-6)
    assert np.all(probs[~mask] == 0)  # exactly zero, not just small
    assert np.all(probs[2] == 0)  # a row with nothing to attend to: zeros, not NaN
    np.testing.assert_allclose(_np(masked_softmax(scores[1:2], None)), probs[1:2], rtol=1e-6)
