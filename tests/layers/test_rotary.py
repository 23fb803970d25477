"""RotaryEmbedding: norm-preserving rotation whose q.k depends only on relative position."""

import numpy as np
import pytest
from keras import ops

from tests.testing import check_config_round_trip
from tflm.layers import RotaryEmbedding


def test_dot_products_depend_only_on_position_difference():
    rotary = RotaryEmbedding(max_wavelength=100)
    rng = np.random.default_rng(0)
    # The same query (and key) vector at 4 positions.
    q = np.repeat(rng.normal(size=(1, 1, 2, 8)), 4, axis=1).astype("float32")
    k = np.repeat(rng.normal(size=(1, 1, 2, 8)), 4, axis=1).astype("float32")
    positions = np.arange(4, dtype="int32")[None]
    dots = []
    for offset in (0, 5):
        rq = ops.convert_to_numpy(rotary(q, positions + offset))
        rk = ops.convert_to_numpy(rotary(k, positions + offset))
        dots.append(np.einsum("bthd,bshd->bhts", rq, rk))
    np.testing.assert_allclose(dots[0], dots[1], atol=1e-5)
    rq = ops.convert_to_numpy(rotary(q, positions))
    np.testing.assert_allclose(np.linalg.norm(rq, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(rq[:, 0], q[:, 0], atol=1e-6)  # position 0 is not rotated


def test_config_round_trip_and_odd_head_dim():
    check_config_round_trip(RotaryEmbedding(max_wavelength=500))
    with pytest.raises(ValueError, match="even head_dim; got 5"):
        RotaryEmbedding()(np.zeros((1, 2, 1, 5), "float32"), np.arange(2)[None])
