"""Shared fixtures: every test starts from float32 and a fixed seed."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
