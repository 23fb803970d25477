"""The pad and start ids of every tokenizer kind, and LanguageModel following them."""

import pytest

from tests.generation.conftest import tiny_gpt
from tflm import special_ids
from tflm.generation import LanguageModel
from tflm.text import train_tokenizer

TEXTS = ["the cat sat on the mat", "hello world, the end"] * 5


@pytest.fixture(scope="module", params=[("bpe", 280), ("wordpiece", 80), ("sentencepiece", 280)])
def tokenizer(request):
    kind, size = request.param
    return train_tokenizer(kind, TEXTS, size)


def test_pad_and_start_per_tokenizer_kind(tokenizer):
    # bpe: one end-of-text token, also the pad (GPT-2); wordpiece: [PAD], no end-of-text,
    # so sequences start at [CLS]; sentencepiece: <pad> and </s>.
    expected = {
        "bpe": (tokenizer.eos_id, tokenizer.eos_id),
        "wordpiece": (tokenizer.pad_id, tokenizer.cls_id),
        "sentencepiece": (tokenizer.pad_id, tokenizer.eos_id),
    }[tokenizer.kind]
    assert (special_ids.pad_id(tokenizer), special_ids.start_id(tokenizer)) == expected
    assert None not in expected
    start = special_ids.start_id(tokenizer)
    assert special_ids.prompt_ids(tokenizer, []) == [start]
    assert special_ids.prompt_ids(tokenizer, [7, 8]) == [7, 8]
    assert special_ids.scored_ids(tokenizer, [7, 8]) == [start, 7, 8]


class Specials:
    """A duck-typed tokenizer with only the given special ids."""

    def __init__(self, **ids):
        self.__dict__.update(ids)


@pytest.mark.parametrize(
    "ids, pad, start",
    [
        ({"eos_id": 3}, 3, 3),
        ({"pad_id": 4, "eos_id": 3}, 4, 3),
        ({"pad_id": 4, "cls_id": 5}, 4, 5),
        ({"pad_id": 4}, 4, 4),
        ({}, 0, 0),
    ],
)
def test_fallbacks(ids, pad, start):
    tokenizer = Specials(**ids)
    assert (special_ids.pad_id(tokenizer), special_ids.start_id(tokenizer)) == (pad, start)


def test_language_model_starts_empty_prompts_and_scores_after_the_start_id(tokenizer):
    lm = LanguageModel(tiny_gpt(vocabulary_size=tokenizer.vocabulary_size), tokenizer)
    ids = lm.generate(["", "the cat"], max_new_tokens=3, sampler="greedy", return_ids=True)[1]
    assert all(1 <= len(row) <= 3 for row in ids)
    empty, text = lm.score(["", "the cat"])
    assert empty.num_tokens == 0
    assert text.num_tokens == len(tokenizer.encode(["the cat"])[0])  # the first one too
