"""The compiled KV-cache decode loop on token ids (tiny GPT, random weights)."""

import numpy as np
import pytest
from keras import ops

from tflm.errors import GenerationError
from tflm.generation import decode, samplers
from tflm.generation.decoder import generate_ids, get_decoder

PROMPTS = [[5], [7, 1, 9], [3, 4, 5, 6, 7, 8, 9, 10], [11, 2, 40, 33, 21, 8, 1, 0, 5, 62, 13, 4]]
NEW = 10


def greedy_without_cache(model, prompt, steps):
    """Reference: a full forward pass over the whole sequence for every new token."""
    ids = list(prompt)
    for _ in range(steps):
        logits = model({"token_ids": np.array([ids], "int32")})
        ids.append(int(np.argmax(np.asarray(logits)[0, -1])))
    return ids[len(prompt) :]


@pytest.fixture(scope="module")
def decoder(gpt):
    return get_decoder(gpt)


@pytest.fixture(scope="module")
def batch_greedy(decoder):
    """Greedy output for PROMPTS as one left-padded batch (lengths 1..12, bucket 16)."""
    return decoder.generate(PROMPTS, max_new_tokens=NEW)


def test_cached_batch_equals_uncached_greedy_alone(gpt, batch_greedy):
    # Each row matches a full recomputation of its prompt alone: the cache is exact and
    # left padding (positions, cache_mask) leaves every prompt independent of the others.
    assert batch_greedy.shape == (len(PROMPTS), NEW)
    for row, prompt in enumerate(PROMPTS):
        assert batch_greedy[row].tolist() == greedy_without_cache(gpt, prompt, NEW)


def test_prompt_alone_equals_prompt_in_batch_and_bucket_reuses_compilation(
    decoder, batch_greedy
):
    before = decoder.traces
    alone = [decoder.generate([PROMPTS[i]], max_new_tokens=NEW)[0] for i in (1, 2)]
    assert decoder.traces == before + 1  # lengths 3 and 8 share the bucket 8
    np.testing.assert_array_equal(np.stack(alone), batch_greedy[1:3])


def test_bucket_length():
    # Generation caps buckets at max_sequence_length - max_new_tokens, scoring at the window.
    assert [decode.bucket_length(n, 118) for n in (1, 8, 9, 16, 17, 100)] == [
        8, 8, 16, 16, 32, 118
    ]
    assert decode.bucket_length(120, 118) == 120  # never below the length itself


@pytest.mark.parametrize("end", [4, np.int32(4)])  # static (generation), tensor (export)
def test_left_pad_puts_each_row_before_end(end):
    tokens, lengths = decode.stack_prompts([[5], [7, 1, 9], []], 4)
    padded, mask = decode.left_pad(tokens, lengths, ops.convert_to_tensor(end), 6, 63)
    np.testing.assert_array_equal(ops.convert_to_numpy(padded), [
        [63, 63, 63, 5, 63, 63],
        [63, 7, 1, 9, 63, 63],
        [63, 63, 63, 63, 63, 63],
    ])
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), [
        [0, 0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ])


def test_prompts_ending_inside_a_longer_window_decode_the_same(gpt, batch_greedy):
    """The export's layout (prompts end at slot P of a window S, cache S) gives the tokens
    of the bucketed one (prompts end the window, cache P + N)."""
    window = gpt.max_sequence_length
    tokens, lengths = decode.stack_prompts(PROMPTS, window)
    end = ops.convert_to_tensor(max(lengths), "int32")
    padded, mask = decode.left_pad(tokens, lengths, end, window, 0)
    state = decode.prefill(gpt, padded, mask, window, end)
    out = decode.sample_loop(gpt, samplers.greedy, state, 0, np.zeros(64, bool), 0, NEW, window)
    np.testing.assert_array_equal(ops.convert_to_numpy(out)[:, :NEW], batch_greedy)


def test_stop_token_ends_each_sequence_with_padding(decoder, batch_greedy):
    stop = int(batch_greedy[0, 2])
    out = decoder.generate(PROMPTS, max_new_tokens=NEW, stop_tokens=[stop], pad_id=63)
    for row, expected in zip(out, batch_greedy):
        hits = np.flatnonzero(expected == stop)
        if len(hits) == 0:
            np.testing.assert_array_equal(row, expected)
            continue
        end = hits[0] + 1
        np.testing.assert_array_equal(row[:end], expected[:end])  # ends at the stop token
        assert (row[end:] == 63).all()  # then padding, never extended
    assert (out == 63).any()


def test_beam_width_one_is_greedy(decoder, batch_greedy):
    beams = decoder.generate(PROMPTS, max_new_tokens=NEW, num_beams=1)
    np.testing.assert_array_equal(beams, batch_greedy)


def test_tiny_temperature_equals_greedy_and_seeds(decoder):
    prompt = [PROMPTS[1]]
    greedy = decoder.generate(prompt, max_new_tokens=NEW)
    before = decoder.traces
    cold = decoder.generate(prompt, max_new_tokens=NEW, sampler="temperature",
                            temperature=1e-6, seed=3)
    np.testing.assert_array_equal(cold, greedy)
    hot = [decoder.generate(prompt, max_new_tokens=NEW, sampler="temperature",
                            temperature=5.0, seed=s) for s in (1, 1, 2)]
    np.testing.assert_array_equal(hot[0], hot[1])  # same seed, same output
    assert (hot[0] != hot[2]).any()  # a near-flat distribution: another seed differs
    assert decoder.traces == before + 1  # seed and temperature are inputs, not constants


def test_truncate_drops_the_oldest_prompt_tokens():
    prompt = list(range(1, 46))  # 45 tokens + 10 new > 48 positions
    with pytest.raises(GenerationError, match="45 tokens.*max_sequence_length 48"):
        decode.check_prompts([prompt], NEW, 48, 64)
    assert decode.check_prompts([prompt, [1]], NEW, 48, 64, truncate=True) == [prompt[-38:], [1]]


@pytest.mark.parametrize(
    "prompts, options, message",
    [
        ([], {}, "non-empty list"),
        ([[1], []], {}, "prompt 1 is empty"),
        ([[1]], {"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ([[1]], {"max_new_tokens": 48}, "max_sequence_length 48"),
        ([[1, 64]], {}, r"outside the vocabulary \[0, 64\)"),
        ([[1]], {"sampler": "nucleus"}, "unknown sampler 'nucleus'"),
        ([[1]], {"num_beams": 0}, "num_beams must be >= 1"),
        ([[1]], {"stop_tokens": [99]}, "stop token 99"),
    ],
)
def test_bad_requests_raise_generation_error(gpt, prompts, options, message):
    options = {"max_new_tokens": NEW, **options}
    with pytest.raises(GenerationError, match=message):
        generate_ids(gpt, prompts, **options)
