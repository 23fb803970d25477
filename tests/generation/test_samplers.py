"""Samplers on known logits: allowed sets, reproducibility, limits, errors."""

import keras
import numpy as np
import pytest
from keras import ops

from tflm.errors import GenerationError
from tflm.generation import samplers


def draw(name, logits, rows=2000, seed=0, step=0, **options):
    """`rows` draws of one sampler from the same logits row (one call, one per row)."""
    batch = np.tile(np.asarray(logits, "float32")[None], (rows, 1))
    sampler = samplers.make_sampler(name, **options)
    ids = sampler(ops.convert_to_tensor(batch), samplers.seed_tensor(seed), step)
    return np.asarray(ops.convert_to_numpy(ids))


LOGITS = np.log([0.05, 0.4, 0.02, 0.25, 0.15, 0.08, 0.05])  # sorted: 1, 3, 4, 5, 0|6, 2


def test_greedy_is_argmax():
    logits = np.random.default_rng(0).normal(size=(5, 11)).astype("float32")
    ids = samplers.greedy(ops.convert_to_tensor(logits))
    np.testing.assert_array_equal(ops.convert_to_numpy(ids), logits.argmax(-1))


def test_first_argmax_is_argmax_with_ties_to_the_first_index_eager_and_compiled():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 300)).astype("float32")
    logits[1, [7, 40, 299]] = 9.0  # a tie for the largest: the first index wins
    logits[2] = -3.0  # all equal
    logits[3, -1] = 50.0  # the largest in the last column
    expected = logits.argmax(-1)
    assert list(expected[1:4]) == [7, 0, 299]
    eager = ops.convert_to_numpy(samplers.first_argmax(ops.convert_to_tensor(logits)))
    np.testing.assert_array_equal(eager, expected)
    assert str(eager.dtype) == "int32"
    from tflm.generation.decode import compile_fn

    compiled = compile_fn(samplers.first_argmax, keras.Model())
    np.testing.assert_array_equal(ops.convert_to_numpy(compiled(logits)), expected)


def test_first_argmax_of_a_nan_row_stays_in_the_vocabulary():
    logits = np.zeros((2, 9), "float32")
    logits[0, 3] = np.nan
    ids = ops.convert_to_numpy(samplers.first_argmax(ops.convert_to_tensor(logits)))
    assert 0 <= ids[0] < 9 and ids[1] == 0


def test_top_k_only_emits_the_k_most_likely():
    ids = draw("top_k", LOGITS, top_k=3)
    assert set(ids) == {1, 3, 4}  # never outside, and every allowed token shows up


@pytest.mark.parametrize("top_p, allowed", [(0.3, {1}), (0.6, {1, 3}), (0.85, {1, 3, 4, 5})])
def test_top_p_only_emits_the_nucleus(top_p, allowed):
    ids = draw("top_p", LOGITS, top_p=top_p)
    assert set(ids) == allowed


def test_temperature_sampling_follows_softmax():
    ids = draw("temperature", LOGITS, rows=20000)
    freq = np.bincount(ids, minlength=len(LOGITS)) / len(ids)
    np.testing.assert_allclose(freq, np.exp(LOGITS) / np.exp(LOGITS).sum(), atol=0.015)


@pytest.mark.parametrize("name", ["temperature", "top_k", "top_p"])
def test_tiny_temperature_equals_greedy(name):
    logits = np.random.default_rng(1).normal(size=(64, 50)).astype("float32")
    sampler = samplers.make_sampler(name, temperature=1e-6, top_k=5, top_p=0.9)
    ids = sampler(ops.convert_to_tensor(logits), samplers.seed_tensor(3), 0)
    np.testing.assert_array_equal(ops.convert_to_numpy(ids), logits.argmax(-1))


@pytest.mark.parametrize(
    "name, options, runtime",
    [
        ("greedy", {}, (0.0, 3, 0.5)),
        ("temperature", {"temperature": 0.7}, (0.7, 0, 1.0)),
        ("top_k", {"top_k": 3, "temperature": 1.3}, (1.3, 3, 1.0)),
        ("top_p", {"top_p": 0.6, "temperature": 0.9}, (0.9, 0, 0.6)),
    ],
)
def test_runtime_options_sampler_draws_what_the_named_samplers_draw(name, options, runtime):
    """`sample` (the SavedModel's sampler, options as tensors) composes the same rules."""
    logits = ops.convert_to_tensor(np.random.default_rng(2).normal(size=(512, 40)) * 2, "float32")
    key = samplers.seed_tensor(11)
    named = samplers.make_sampler(name, **options)(logits, key, 4)
    temperature, top_k, top_p = runtime
    ours = samplers.sample(
        logits, key, 4, ops.convert_to_tensor(temperature, "float32"),
        ops.convert_to_tensor(top_k, "int32"), ops.convert_to_tensor(top_p, "float32"),
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(ours), ops.convert_to_numpy(named))
    assert len(set(ops.convert_to_numpy(ours).tolist())) > (1 if name == "top_p" else 2)


def test_same_seed_same_draws_and_seed_or_step_changes_them():
    flat = np.zeros(32, "float32")
    first = draw("temperature", flat, rows=64, seed=7)
    np.testing.assert_array_equal(first, draw("temperature", flat, rows=64, seed=7))
    assert (first != draw("temperature", flat, rows=64, seed=8)).mean() > 0.5
    assert (first != draw("temperature", flat, rows=64, seed=7, step=1)).mean() > 0.5


def test_uniform_noise_in_open_interval():
    noise = ops.convert_to_numpy(samplers.uniform_noise((8, 1000), samplers.seed_tensor(-5), 2))
    assert 0.0 < noise.min() and noise.max() < 1.0
    assert abs(noise.mean() - 0.5) < 0.01


def test_unknown_sampler_names_the_valid_ones():
    with pytest.raises(GenerationError, match="greedy.*top_k.*top_p"):
        samplers.get_sampler("nucleus")


@pytest.mark.parametrize(
    "name, options",
    [
        ("temperature", {"temperature": 0.0}),
        ("top_k", {"top_k": None}),
        ("top_k", {"top_k": 0}),
        ("top_p", {"top_p": 1.5}),
    ],
)
def test_bad_sampler_options_raise(name, options):
    with pytest.raises(GenerationError):
        samplers.make_sampler(name, **options)
