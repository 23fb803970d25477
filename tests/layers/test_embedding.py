"""TokenAndPositionEmbedding: position kinds, position_ids, tied logits, errors."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.testing import check_layer
from tflm.errors import ConfigError
from tflm.layers import TokenAndPositionEmbedding

VOCAB, MAX_LEN, HIDDEN = 20, 8, 16


def _ids():
    return np.array([[3, 3, 3, 5], [1, 2, 3, 4]], "int32")


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal", "none"])
def test_positions_make_repeated_tokens_differ_unless_none(kind):
    embedding = TokenAndPositionEmbedding(VOCAB, MAX_LEN, HIDDEN, position_embedding=kind)
    out = _np(embedding(_ids()))
    assert out.shape == (2, 4, HIDDEN)
    same = np.allclose(out[0, 0], out[0, 1])
    assert same == (kind == "none")
    shifted = _np(embedding(_ids()[:, 2:], position_ids=np.array([[2, 3]] * 2, "int32")))
    np.testing.assert_allclose(shifted, out[:, 2:], atol=1e-6)


def test_reverse_gives_float32_logits_of_a_compute_dtype_product_with_the_tied_table():
    keras.config.set_dtype_policy("mixed_bfloat16")
    embedding = TokenAndPositionEmbedding(VOCAB, MAX_LEN, HIDDEN)
    hidden = embedding(_ids())
    assert keras.backend.standardize_dtype(hidden.dtype) == "bfloat16"
    logits = embedding(hidden, reverse=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    table = _np(ops.cast(ops.cast(embedding.token_embeddings, "bfloat16"), "float32"))
    expected = _np(ops.cast(hidden, "float32")) @ table.T  # bf16 inputs, exact products
    # the product itself comes out of the matmul in bfloat16: 8 bits of mantissa
    np.testing.assert_allclose(_np(logits), expected, rtol=1e-2, atol=1e-3)
    assert all(w.dtype == "float32" for w in embedding.weights)
    keras.config.set_dtype_policy("float32")
    embedding = TokenAndPositionEmbedding(VOCAB, MAX_LEN, HIDDEN)
    hidden = embedding(_ids())
    expected = _np(hidden) @ _np(embedding.token_embeddings).T
    np.testing.assert_allclose(_np(embedding(hidden, reverse=True)), expected, rtol=1e-5,
                               atol=1e-5)


def test_layer_checks(tmp_path):
    check_layer(
        TokenAndPositionEmbedding(VOCAB, MAX_LEN, HIDDEN, name="embedding"),
        {"ids": _ids()},
        tmp_path=tmp_path,
    )


def test_bad_inputs_raise_clear_errors():
    embedding = TokenAndPositionEmbedding(VOCAB, MAX_LEN, HIDDEN)
    with pytest.raises(ValueError, match="sequence length 9 exceeds the model's "
                       "max_sequence_length 8; shorten the input"):
        embedding(np.zeros((1, 9), "int32"))
    with pytest.raises(ValueError, match="sequence length 9"):
        embedding(keras.Input(shape=(9,), dtype="int32"))
    with pytest.raises(ValueError, match="integer tensor"):
        embedding(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        embedding(np.zeros((4,), "int32"))
    with pytest.raises(ConfigError, match="rotary"):
        TokenAndPositionEmbedding(VOCAB, MAX_LEN, HIDDEN, position_embedding="rotary")
