"""Byte-level BPE: in-graph ids == fast ids, lossless round trips, GPT-2 specials."""

import pytest
import tensorflow as tf
from tokenizers import Regex, pre_tokenizers

from tflm.errors import TokenizerError
from tflm.text import train_tokenizer
from tflm.text.bpe import EOS, SPLIT_PATTERN


@pytest.fixture(scope="module")
def bpe(trained):
    return trained("bpe")


def test_in_graph_ids_equal_fast_ids_on_real_text(bpe, real_lines):
    texts = real_lines + ["a\n\n  b  \n", "x  \t\r\n y\v, z ", " lead", "end  "]
    assert bpe.tokenize(tf.constant(texts)).to_list() == bpe.encode(texts)


def test_split_pattern_matches_keras_hub_split():
    from keras_hub.src.tokenizers.byte_pair_tokenizer import split_strings_for_bpe

    texts = ["a\n\nb", "end  ", "x \n\t y", "it's 12 o'clock,\v", "\t\t a\xa0b\u3000 c "]
    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")
    ours = [[w for w, _ in split.pre_tokenize_str(t)] for t in texts]
    theirs = split_strings_for_bpe(tf.constant(texts)).to_list()
    assert ours == [[w.decode() for w in row] for row in theirs]


def test_round_trip_any_text(bpe, real_lines):
    ids = bpe.tokenize(tf.constant(real_lines))
    assert [s.decode() for s in bpe.detokenize(ids).numpy()] == real_lines
    assert [bpe.decode(ids) for ids in bpe.encode(real_lines)] == real_lines


def test_eos_is_id_zero_and_never_split(bpe):
    assert bpe.eos_id == bpe.pad_id == 0
    assert bpe.special_ids == {"eos": 0, "pad": 0}
    assert bpe.unk_id is None and bpe.mask_id is None and bpe.cls_id is None
    text = f"one{EOS}two"
    assert EOS not in [bpe.id_to_token(i) for i in bpe.encode(["one two"])[0]]
    assert 0 in bpe.encode([text])[0]
    assert bpe.tokenize(tf.constant([text])).to_list() == bpe.encode([text])


def test_vocabulary_size_and_lookups(bpe):
    assert bpe.vocabulary_size == 500
    assert bpe.id_to_token(bpe.token_to_id("Ġthe")) == "Ġthe"
    assert bpe.token_to_id("not-a-token") is None
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        bpe.id_to_token(500)


def test_too_small_vocabulary_and_lowercase_raise(train_texts):
    with pytest.raises(TokenizerError, match="at least --vocab_size=257"):
        train_tokenizer("bpe", train_texts, 100)
    with pytest.raises(TokenizerError, match="lowercase=False"):
        train_tokenizer("bpe", train_texts, 300, lowercase=True)
