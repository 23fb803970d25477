"""The SavedModel's generate loop and prompt rules are tflm.generation's (tiny random GPT,
no export): same tokens for the same options and seed, same start and pad ids."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.generation.conftest import tiny_gpt
from tflm import special_ids
from tflm.export.saved_model import ServingModule
from tflm.export.signatures import decode_window, window_ids
from tflm.generation import generate_ids

PROMPTS = [[5], [7, 1, 9], [3, 4, 5, 6, 7, 8, 9, 10]]
NEW, PAD = 8, 63


@pytest.fixture(scope="module")
def gpt():
    return tiny_gpt()


def served_tokens(model, eos_id, temperature=0.0, top_k=0, top_p=1.0, seed=0):
    """`decode_window` on PROMPTS, as the generate signature calls it (one XLA function)."""
    module = SimpleNamespace(model=model, window=int(model.max_sequence_length),
                             pad_id=PAD, eos_id=eos_id)
    ids = np.zeros((len(PROMPTS), module.window), "int32")
    for row, prompt in enumerate(PROMPTS):
        ids[row, :len(prompt)] = prompt
    lengths = np.asarray([len(p) for p in PROMPTS], "int32")
    compiled = tf.function(lambda *args: decode_window(module, *args), jit_compile=True)
    out = compiled(ids, lengths, max(lengths), NEW, np.float32(temperature), np.int32(top_k),
                   np.float32(top_p), np.int32(seed))
    return out.numpy()[:, :NEW]


def test_greedy_window_loop_equals_generate_ids_with_its_stop_token(gpt):
    greedy = generate_ids(gpt, PROMPTS, NEW)
    eos = int(greedy[0, 2])
    expected = generate_ids(gpt, PROMPTS, NEW, stop_tokens=[eos], pad_id=PAD)
    assert (expected == PAD).any()
    np.testing.assert_array_equal(served_tokens(gpt, eos), expected)
    np.testing.assert_array_equal(served_tokens(gpt, None), greedy)


@pytest.mark.parametrize(
    "options, runtime",
    [
        ({"sampler": "top_p", "top_p": 0.9, "temperature": 0.8}, (0.8, 0, 0.9)),
        ({"sampler": "top_k", "top_k": 5, "temperature": 1.5}, (1.5, 5, 1.0)),
    ],
)
def test_sampled_window_loop_equals_generate_ids_for_the_same_seed(gpt, options, runtime):
    temperature, top_k, top_p = runtime
    for seed in (1, 2):
        expected = generate_ids(gpt, PROMPTS, NEW, seed=seed, **options)
        np.testing.assert_array_equal(
            served_tokens(gpt, None, temperature, top_k, top_p, seed), expected
        )


@pytest.mark.parametrize("always_start", [False, True])
def test_window_ids_follow_the_start_rule_of_generation_and_scoring(bpe_module, always_start):
    module, tokenizer = bpe_module
    texts = ["the cat sat", "", "hello world, the end"]
    rule = special_ids.scored_ids if always_start else special_ids.prompt_ids
    traced = tf.function(lambda text: window_ids(module, text, 4, always_start))
    got = traced(tf.constant(texts)).to_list()  # in a graph, as the signatures run it
    assert got == [rule(tokenizer, ids)[-4:] for ids in tokenizer.encode(texts)]
    assert module.start_id == special_ids.start_id(tokenizer)
    assert module.pad_id == special_ids.pad_id(tokenizer)


@pytest.fixture(scope="module")
def bpe_module():
    from tflm.text import train_tokenizer

    tokenizer = train_tokenizer("bpe", ["the cat sat on the mat", "hello world"] * 5, 280)
    module = ServingModule(tiny_gpt(vocabulary_size=tokenizer.vocabulary_size), tokenizer)
    yield module, tokenizer
    module.cleanup()
