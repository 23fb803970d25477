"""TransformerBlock: causality, padding, cache == full pass, LN variants, precision."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.testing import check_layer
from tflm.errors import ConfigError
from tflm.layers import TransformerBlock

B, T, HIDDEN, HEADS, FFN = 2, 6, 16, 2, 32


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, HIDDEN)).astype("float32")


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_block_ignores_later_tokens(norm_first):
    block = TransformerBlock(HEADS, FFN, norm_first=norm_first)
    x = _x()
    base = _np(block(x, use_causal_mask=True))
    changed = x.copy()
    changed[:, 3:] = _x(1)[:, 3:]
    out = _np(block(changed, use_causal_mask=True))
    np.testing.assert_allclose(out[:, :3], base[:, :3], atol=1e-5)
    bidirectional = _np(block(changed))
    assert not np.allclose(bidirectional[:, :3], _np(block(x))[:, :3])


def test_real_positions_ignore_padding():
    block = TransformerBlock(HEADS, FFN, norm_first=False, activation="gelu")
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * T], "int32")
    x = _x()
    base = _np(block(x, padding_mask=mask))
    changed = x.copy()
    changed[0, 3:] = -7.0
    out = _np(block(changed, padding_mask=mask))
    np.testing.assert_allclose(out[0, :3], base[0, :3], atol=1e-5)
    np.testing.assert_allclose(out[1], base[1], atol=1e-5)


@pytest.mark.parametrize("rotary", [False, True])
def test_cache_equals_full_pass(rotary):
    block = TransformerBlock(HEADS, FFN, rotary=rotary)
    x = _x()
    full = _np(block(x, use_causal_mask=True))
    cache = np.zeros((B, 2, T, HEADS, HIDDEN // HEADS), "float32")
    out, cache = block(x[:, :4], cache=cache, cache_index=0)
    pieces = [_np(out)]
    for t in range(4, T):
        out, cache = block(x[:, t: t + 1], cache=cache, cache_index=t)
        pieces.append(_np(out))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_activations_differ_and_unknown_is_a_config_error():
    exact = TransformerBlock(HEADS, FFN, activation="gelu")
    tanh = TransformerBlock(HEADS, FFN, activation="gelu_approximate")
    x = _x()
    exact(x)
    tanh(x)
    tanh.set_weights(exact.get_weights())
    assert not np.allclose(_np(exact(x)), _np(tanh(x)), atol=1e-7)
    with pytest.raises(ConfigError, match="relu"):
        TransformerBlock(HEADS, FFN, activation="relu")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    reference = TransformerBlock(HEADS, FFN)
    x = _x()
    expected = _np(reference(x, use_causal_mask=True))
    keras.config.set_dtype_policy(policy)
    block = TransformerBlock(HEADS, FFN)
    block.build((B, T, HIDDEN))
    block.set_weights(reference.get_weights())
    assert all(w.dtype == "float32" for w in block.weights)
    out = _np(ops.cast(block(x, use_causal_mask=True), "float32"))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, atol=0.15, rtol=0.05)


def test_layer_checks(tmp_path):
    check_layer(
        TransformerBlock(HEADS, FFN, dropout=0.1, name="block"),
        {"x": _x(), "mask": np.ones((B, T), "int32")},
        call=lambda lyr, i: lyr(i["x"], padding_mask=i["mask"], use_causal_mask=True),
        tmp_path=tmp_path,
    )
