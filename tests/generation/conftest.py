"""Tiny GPT models shared by the generation tests."""

import numpy as np
import pytest

from tflm.models import GPT


def tiny_gpt(vocabulary_size=64, max_sequence_length=48, seed=0):
    """A 2-layer GPT with random weights scaled up so its next-token choices are clear."""
    model = GPT(backbone={
        "vocabulary_size": vocabulary_size, "num_layers": 2, "hidden_dim": 16, "num_heads": 2,
        "intermediate_dim": 32, "max_sequence_length": max_sequence_length,
    })
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    return model


@pytest.fixture(scope="session")
def gpt():
    """One model for the whole session, so compiled decode functions are shared."""
    return tiny_gpt()


@pytest.fixture(scope="session")
def make_gpt():
    """`tiny_gpt` as a fixture, for tests that need another shape."""
    return tiny_gpt
