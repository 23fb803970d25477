"""TransformerBackbone: causality, padding, cache decoding (incl. left padding), segments,
pooling, saving."""

import numpy as np
import pytest
from keras import ops

from tests.testing import check_model
from tflm.errors import ConfigError
from tflm.models import TransformerBackbone

B, T, VOCAB = 2, 8, 30


def _backbone(**overrides):
    args = dict(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
        max_sequence_length=12,
    )
    args.update(overrides)
    return TransformerBackbone(**args)


def _ids(seed=0, shape=(B, T)):
    return np.random.default_rng(seed).integers(1, VOCAB, size=shape).astype("int32")


def _run(model, ids, mask=None, output="sequence_output", **inputs):
    mask = np.ones_like(ids) if mask is None else mask
    return ops.convert_to_numpy(model({"token_ids": ids, "padding_mask": mask, **inputs})[output])


@pytest.mark.parametrize("position_embedding", ["learned", "rotary"])
def test_changing_later_tokens_never_changes_earlier_outputs(position_embedding):
    model = _backbone(position_embedding=position_embedding)
    ids = _ids()
    base = _run(model, ids)
    for t in (0, 3, 6):
        changed = ids.copy()
        changed[:, t + 1:] = _ids(t + 1)[:, t + 1:]
        out = _run(model, changed)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)


def test_bidirectional_post_ln_sees_later_tokens():
    model = _backbone(causal=False, norm_first=False, activation="gelu")
    ids = _ids()
    changed = ids.copy()
    changed[:, -1] = (ids[:, -1] % (VOCAB - 1)) + 1
    assert not np.allclose(_run(model, ids)[:, 0], _run(model, changed)[:, 0])


@pytest.mark.parametrize("causal", [True, False])
def test_real_positions_ignore_padded_positions(causal):
    model = _backbone(causal=causal, position_embedding="sinusoidal")
    mask = np.ones((B, T), "int32")
    mask[0, 5:] = 0
    ids = _ids()
    changed = ids.copy()
    changed[0, 5:] = _ids(9)[0, 5:]
    base, out = _run(model, ids, mask), _run(model, changed, mask)
    np.testing.assert_allclose(out[0, :5], base[0, :5], atol=1e-5)
    np.testing.assert_allclose(out[1], base[1], atol=1e-5)


def _decode(model, ids, prefill, cache_length=None, cache_mask=None, position_ids=None):
    """Prefills `prefill` tokens, then feeds the rest one by one; returns all hidden states."""
    cache = model.init_cache(ids.shape[0], cache_length or ids.shape[1])
    pieces, start = [], 0
    for end in [prefill] + list(range(prefill + 1, ids.shape[1] + 1)):
        pos = None if position_ids is None else position_ids[:, start:end]
        hidden, cache = model.call_with_cache(
            ids[:, start:end], cache, start, cache_mask=cache_mask, position_ids=pos
        )
        pieces.append(ops.convert_to_numpy(hidden))
        start = end
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize("position_embedding", ["learned", "sinusoidal", "rotary"])
def test_cache_decoding_equals_full_pass(position_embedding):
    model = _backbone(position_embedding=position_embedding)
    ids = _ids()
    full = _run(model, ids)
    for prefill in (1, 4):  # token by token; several prompt tokens at once, then steps
        decoded = _decode(model, ids, prefill, cache_length=12)
        np.testing.assert_allclose(decoded, full, atol=1e-5)


@pytest.mark.parametrize("position_embedding", ["learned", "rotary"])
def test_left_padded_cache_decoding_equals_unpadded_run(position_embedding):
    """What batched generation does: left-pad prompts, mask the pad slots, shift positions."""
    model = _backbone(position_embedding=position_embedding)
    ids = _ids(shape=(1, 6))
    pads = 2
    padded = np.concatenate([np.zeros((1, pads), "int32"), ids], axis=1)  # (1, 8)
    cache_mask = np.ones((1, 8), "int32")
    cache_mask[:, :pads] = 0
    positions = np.maximum(np.arange(8) - pads, 0)[None].astype("int32")
    out = _decode(model, padded, prefill=5, cache_mask=cache_mask, position_ids=positions)
    np.testing.assert_allclose(out[:, pads:], _run(model, ids), atol=1e-5)


def test_per_layer_caches_equal_the_whole_model_cache():
    """The TFLite form (a list of 5-D caches) runs the same path as the 6-D cache."""
    model = _backbone(position_embedding="rotary")
    ids = _ids()
    whole, cache = model.call_with_cache(ids[:, :5], model.init_cache(B, 12), 0)
    caches = [model.init_cache(B, 12)[:, i] for i in range(model.num_layers)]
    split, caches = model.call_with_cache(ids[:, :5], caches, 0)
    np.testing.assert_allclose(ops.convert_to_numpy(split), ops.convert_to_numpy(whole), atol=1e-6)
    for i, layer_cache in enumerate(caches):
        np.testing.assert_allclose(ops.convert_to_numpy(layer_cache),
                                   ops.convert_to_numpy(cache[:, i]), atol=1e-6)


def test_segment_embeddings_change_outputs_and_default_to_segment_zero():
    model = _backbone(causal=False, num_segments=2)
    assert "segment_ids" in model.input
    ids = _ids()
    zeros, ones = np.zeros_like(ids), np.ones_like(ids)
    base = _run(model, ids, segment_ids=zeros)
    assert not np.allclose(_run(model, ids, segment_ids=ones), base)
    np.testing.assert_allclose(_run(model, ids), base, atol=1e-6)  # missing = segment 0
    # Without segments there is neither the input nor the weights.
    plain = _backbone(causal=False)
    assert "segment_ids" not in plain.input
    assert not [w for w in plain.weights if "segment" in w.path]
    assert len(model.weights) == len(plain.weights) + 1


@pytest.mark.parametrize("causal", [True, False])
def test_pooled_output_is_first_mean_or_last_real_token(causal):
    mask = np.ones((B, T), "int32")
    mask[0, 5:] = 0  # right padding in row 0
    ids = _ids()
    reference = _backbone(causal=causal)
    hidden = _run(reference, ids, mask)
    expected = {
        "first": hidden[:, 0],
        "mean": np.stack([hidden[0, :5].mean(0), hidden[1].mean(0)]),
        "last": np.stack([hidden[0, 4], hidden[1, -1]]),
    }
    for pooling, vector in expected.items():
        model = _backbone(causal=causal, pooling=pooling)
        model.set_weights(reference.get_weights())  # pooling has no weights of its own
        pooled = _run(model, ids, mask, output="pooled_output")
        np.testing.assert_allclose(pooled, vector, atol=1e-5, err_msg=pooling)
    auto = _run(reference, ids, mask, output="pooled_output")
    np.testing.assert_allclose(auto, expected["last" if causal else "first"], atol=1e-5)


def test_last_token_pooling_finds_the_last_real_token_under_left_padding():
    mask = np.ones((B, T), "int32")
    mask[0, :3] = 0  # left padding (generation's layout)
    model = _backbone(pooling="last")
    ids = _ids()
    pooled = _run(model, ids, mask, output="pooled_output")
    np.testing.assert_allclose(pooled, _run(model, ids, mask)[:, -1], atol=1e-6)


def test_config_round_trip_and_keras_save(tmp_path):
    model = _backbone(dropout=0.1, position_embedding="rotary", use_bias=False)
    check_model(model, {"token_ids": _ids(), "padding_mask": np.ones((B, T), "int32")},
                tmp_path=tmp_path)
    encoder = _backbone(causal=False, num_segments=2, pooling="mean")
    check_model(encoder, {"token_ids": _ids(), "padding_mask": np.ones((B, T), "int32"),
                          "segment_ids": np.zeros((B, T), "int32")}, tmp_path=tmp_path)


def test_bad_config_and_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"hidden_dim \(16\) must be divisible .*num_heads \(3\)"):
        _backbone(num_heads=3)
    with pytest.raises(ConfigError, match="alibi"):
        _backbone(position_embedding="alibi")
    with pytest.raises(ConfigError, match=r"pooling 'median' is not one of"):
        _backbone(pooling="median")
    model = _backbone()
    with pytest.raises(ValueError, match="cache length 13 exceeds .* max_sequence_length 12"):
        model.init_cache(1, 13)
    with pytest.raises(ValueError, match="sequence length 13 exceeds .* max_sequence_length 12"):
        _run(model, _ids(shape=(1, 13)))
