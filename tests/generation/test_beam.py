"""Beam search: width vocab ** length is exhaustive search (width 1: test_decode.py)."""

import itertools

import numpy as np
import pytest

from tflm.generation.decoder import generate_ids

VOCAB, STOP, NEW = 5, 4, 3


def exhaustive(model, prompt, alpha):
    """(score, ids) of every hypothesis: stop token at its end only, or NEW tokens long."""
    tails = np.array(list(itertools.product(range(VOCAB), repeat=NEW)), "int32")
    ids = np.concatenate([np.tile(np.array(prompt, "int32"), (len(tails), 1)), tails], axis=1)
    logits = np.asarray(model({"token_ids": ids}), "float64")[:, len(prompt) - 1 : -1]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_logp = np.take_along_axis(logp, tails[..., None], axis=-1)[..., 0]  # (V^N, N)
    found = {}
    for tail, lp in zip(tails.tolist(), token_logp):
        end = tail.index(STOP) + 1 if STOP in tail else NEW
        hypothesis = tuple(tail[:end] + [0] * (NEW - end))  # pad_id 0 after the stop
        found[hypothesis] = lp[:end].sum() / end**alpha
    return found


@pytest.fixture(scope="module")
def small_vocab_gpt(make_gpt):
    return make_gpt(vocabulary_size=VOCAB, max_sequence_length=12, seed=1)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_full_width_equals_exhaustive_search(small_vocab_gpt, alpha):
    model = small_vocab_gpt
    prompts = [[1, 2, 3], [2]]
    out = generate_ids(
        model, prompts, max_new_tokens=NEW, num_beams=VOCAB**NEW, length_penalty=alpha,
        stop_tokens=[STOP], pad_id=0,
    )
    for prompt, row in zip(prompts, out):
        scores = exhaustive(model, prompt, alpha)
        best = max(scores, key=scores.get)
        assert scores[tuple(row.tolist())] == pytest.approx(scores[best], abs=1e-5)
        runner_up = sorted(scores.values())[-2]
        if scores[best] - runner_up > 1e-4:
            assert tuple(row.tolist()) == best
