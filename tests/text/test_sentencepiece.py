"""SentencePiece: lossless round trips (byte fallback), MLM symbols, both model types."""

import keras
import pytest
import tensorflow as tf

from tflm.errors import TokenizerError
from tflm.text import train_tokenizer


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sp(request, trained, train_texts):
    if request.param == "unigram":
        return trained("sentencepiece")
    return train_tokenizer("sentencepiece", train_texts, 500, model_type="bpe")


def test_round_trip_any_text(sp, real_lines):
    texts = real_lines + ["  leading and trailing  ", "a\n\nb", "\u2603 unseen ☃ \U0001f9ea"]
    ids = sp.tokenize(tf.constant(texts))
    assert ids.to_list() == sp.encode(texts)
    assert [s.decode() for s in sp.detokenize(ids).numpy()] == texts
    assert [sp.decode(row) for row in sp.encode(texts)] == texts


def test_unseen_characters_fall_back_to_bytes(sp):
    pieces = [sp.id_to_token(i) for i in sp.encode(["\u2603"])[0]]
    assert pieces == ["<0xE2>", "<0x98>", "<0x83>"]
    assert sp.unk_id not in sp.encode(["\u2603"])[0]


def test_mlm_symbols_are_single_pieces(sp):
    ids = sp.encode(["[CLS] a [MASK] b [SEP]"])[0]
    assert ids[0] == sp.cls_id and sp.mask_id in ids and ids[-1] == sp.sep_id
    assert sp.options["model_type"] in ("unigram", "bpe")


def test_survives_a_global_seed_reset(sp):
    # keras.utils.set_random_seed clears TF's eager kernel cache, which owned tf-text's
    # SentencePiece resource (tensorflow/text b/318839908).
    before = sp.encode(["seed reset"])
    keras.utils.set_random_seed(1)
    assert sp.encode(["seed reset"]) == before


def test_bad_arguments_raise(train_texts):
    with pytest.raises(TokenizerError, match="at least --vocab_size=263"):
        train_tokenizer("sentencepiece", train_texts, 100)
    with pytest.raises(TokenizerError, match="'unigram' or 'bpe'"):
        train_tokenizer("sentencepiece", train_texts, 500, model_type="char")
    with pytest.raises(TokenizerError, match="smaller --vocab_size"):
        train_tokenizer("sentencepiece", train_texts[:2], 5000)
