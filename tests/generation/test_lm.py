"""LanguageModel: strings in and out, streaming, scoring (tiny GPT, char tokenizer)."""

import math

import numpy as np
import pytest

from tflm.errors import GenerationError
from tflm.generation import LanguageModel, generate_ids


class CharTokenizer:
    """One id per character; 0 = pad, 1 = end of text."""

    pad_id, eos_id = 0, 1
    chars = "abcdefghijklmnopqrstuvwxyz .,"
    vocabulary_size = 64

    def encode(self, texts):
        return [[self.chars.index(c) + 2 for c in text] for text in texts]

    def decode(self, ids):
        return "".join(self.chars[i - 2] if 2 <= i < 2 + len(self.chars) else "#" for i in ids
                       if i not in (self.pad_id, self.eos_id))


@pytest.fixture(scope="module")
def lm(gpt):
    return LanguageModel(gpt, CharTokenizer())


def test_generate_returns_text_and_ids_like_generate_ids(lm, gpt):
    prompts = ["a cat", "dog.", "", "the end of it"]  # "" starts from eos
    texts, ids = lm.generate(prompts, max_new_tokens=10, sampler="greedy", return_ids=True)
    encoded = [ids or [1] for ids in CharTokenizer().encode(prompts)]
    expected = generate_ids(gpt, encoded, max_new_tokens=10, stop_tokens=[1])
    for text, row, full in zip(texts, ids, expected):
        assert row == [t for t in full.tolist() if t != 0]  # up to the stop token, no pads
        assert text == CharTokenizer().decode(row)


def test_stream_pieces_join_to_generate(lm):
    options = {"max_new_tokens": 10, "sampler": "temperature", "temperature": 5.0, "seed": 4}
    pieces = list(lm.stream("the end", **options))
    assert len(pieces) > 1 and "".join(pieces) == lm.generate(["the end"], **options)[0]


def test_bad_prompts_raise(lm):
    with pytest.raises(GenerationError, match="non-empty list of strings"):
        lm.generate([])
    with pytest.raises(GenerationError, match="wrap a single prompt"):
        lm.generate("a cat")
    with pytest.raises(GenerationError, match="unknown sampler"):
        lm.generate(["a"], max_new_tokens=10, sampler="nucleus")
    with pytest.raises(GenerationError, match="non-empty list of strings"):
        lm.score([])


def reference_log_likelihood(model, ids):
    """Sum of log-softmax of each true next token, from one plain forward pass."""
    logits = np.asarray(model({"token_ids": np.array([ids], "int32")}), "float64")[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return sum(logp[i, ids[i + 1]] for i in range(len(ids) - 1))


def test_score_equals_log_softmax_of_a_plain_forward_pass(lm, gpt):
    long = "abcdefghij" * 6  # 61 tokens with eos; the model has 48 positions
    texts = ["a cat sat.", "dog", "", long]
    scores = lm.score(texts)
    for text, score in zip(texts[:2], scores):
        ids = [1] + CharTokenizer().encode([text])[0]
        expected = reference_log_likelihood(gpt, ids)
        assert score.num_tokens == len(ids) - 1
        assert score.log_likelihood == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert score.perplexity == pytest.approx(math.exp(-expected / (len(ids) - 1)), rel=1e-4)
    assert scores[2].num_tokens == 0 and math.isnan(scores[2].perplexity)
    # A long text is cut into windows [0, 48) and [47, 61): every token scored once.
    ids = [1] + CharTokenizer().encode([long])[0]
    expected = sum(reference_log_likelihood(gpt, ids[b : b + 48]) for b in (0, 47))
    assert scores[3].num_tokens == 60
    assert scores[3].log_likelihood == pytest.approx(expected, rel=1e-4)


def test_generate_with_a_trained_bpe_tokenizer(make_gpt):
    from tflm.text import train_tokenizer

    tokenizer = train_tokenizer("bpe", ["the cat sat on the mat", "hello world"] * 5, 280)
    model = make_gpt(vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=24)
    texts, ids = LanguageModel(model, tokenizer).generate(
        ["hello cat", "the"], max_new_tokens=6, sampler="greedy", return_ids=True
    )
    for text, row in zip(texts, ids):
        assert 1 <= len(row) <= 6
        assert text == tokenizer.decode([t for t in row if t != tokenizer.eos_id])
