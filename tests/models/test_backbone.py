"""TransformerBackbone: causality, padding, cache decoding (incl. left padding), saving."""

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


def _run(model, ids, mask=None):
    mask = np.ones_like(ids) if mask is None else mask
    return ops.convert_to_numpy(model({"token_ids": ids, "padding_mask": mask}))


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


def test_config_round_trip_and_keras_save(tmp_path):
    model = _backbone(dropout=0.1, position_embedding="rotary", use_bias=False)
    check_model(model, {"token_ids": _ids(), "padding_mask": np.ones((B, T), "int32")},
                tmp_path=tmp_path)


def test_bad_config_and_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"hidden_dim \(16\) must be divisible .*num_heads \(3\)"):
        _backbone(num_heads=3)
    with pytest.raises(ConfigError, match="alibi"):
        _backbone(position_embedding="alibi")
    model = _backbone()
    with pytest.raises(ValueError, match="cache length 13 exceeds .* max_sequence_length 12"):
        model.init_cache(1, 13)
    with pytest.raises(ValueError, match="sequence length 13 exceeds .* max_sequence_length 12"):
        _run(model, _ids(shape=(1, 13)))
