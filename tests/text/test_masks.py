"""The fill-mask input rule: literal mask tokens survive tokenization, eager == in-graph."""

import pytest
import tensorflow as tf

from tflm.errors import TokenizerError
from tflm.text import train_tokenizer
from tflm.text.masks import encode_with_masks, mask_token, tokenize_with_masks

TEXTS = ["The [MASK] statement defines a [MASK].", "no mask here at all", "[MASK]", "",
         "[MASK][MASK] at the start", "ends with a mask [MASK]", "Café [MASK] naïve"]


@pytest.fixture(scope="module", params=[("wordpiece", 200), ("sentencepiece", 600)])
def tokenizer(request, train_texts):
    kind, size = request.param
    return train_tokenizer(kind, train_texts, size, lowercase=True)


def test_mask_tokens_become_the_mask_id_and_the_rest_is_encoded_as_usual(tokenizer):
    ids = encode_with_masks(tokenizer, TEXTS)
    mask = tokenizer.mask_id
    assert [row.count(mask) for row in ids] == [t.count(mask_token(tokenizer)) for t in TEXTS]
    assert ids[1] == tokenizer.encode(["no mask here at all"])[0]
    assert ids[2] == [mask] and ids[3] == []
    assert ids[4][:2] == [mask, mask] and ids[5][-1] == mask


def test_in_graph_rule_gives_the_same_ids(tokenizer):
    expected = encode_with_masks(tokenizer, TEXTS)
    assert tokenize_with_masks(tokenizer, tf.constant(TEXTS)).to_list() == expected
    graph = tf.function(lambda t: tokenize_with_masks(tokenizer, t))
    assert graph(tf.constant(TEXTS)).to_list() == expected


def test_a_tokenizer_without_a_mask_token_is_refused(train_texts):
    bpe = train_tokenizer("bpe", train_texts[:20], 300)
    with pytest.raises(TokenizerError, match="no mask token"):
        encode_with_masks(bpe, ["a [MASK]"])
