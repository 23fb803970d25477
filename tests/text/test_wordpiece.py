"""WordPiece: case / accent handling per option, BERT specials, deterministic vocabulary."""

import pytest
import tensorflow as tf

from tflm.errors import TokenizerError
from tflm.text import train_tokenizer

TEXT = ["Café NAÏVE Résumé, the Straße!"]


@pytest.fixture(scope="module")
def uncased(train_texts):
    return train_tokenizer("wordpiece", train_texts + TEXT * 20, 500, lowercase=True)


def pieces(tokenizer, text):
    return [tokenizer.id_to_token(i) for i in tokenizer.encode([text])[0]]


def test_lowercase_folds_case_and_strips_accents(uncased):
    assert uncased.options == {"lowercase": True}
    assert pieces(uncased, "CAFÉ Naïve") == pieces(uncased, "cafe naive")
    # Unicode case folding (tf-text's case_fold_utf8): ß -> ss.
    assert uncased.decode(uncased.encode(TEXT)[0]) == "cafe naive resume , the strasse !"
    vocab = [uncased.id_to_token(i) for i in range(uncased.vocabulary_size)]
    assert not any(t != t.lower() for t in vocab if not t.startswith("["))


def test_cased_keeps_case_and_accents(trained):
    cased = trained("wordpiece")
    assert cased.options == {"lowercase": False}
    assert pieces(cased, "The") != pieces(cased, "the")
    assert "".join(pieces(cased, "Café")).replace("##", "") == "Café"


def test_vocabulary_is_bert_style(trained):
    wp = trained("wordpiece")
    vocab = [wp.id_to_token(i) for i in range(wp.vocabulary_size)]
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "the" in vocab and any(t.startswith("##") and len(t) > 3 for t in vocab)
    assert len(set(vocab)) == len(vocab)
    # Punctuation and CJK are split off; an unknown character becomes [UNK].
    assert pieces(wp, "the,") == ["the", ","]
    assert pieces(wp, "the \u2603") == ["the", "[UNK]"]


def test_in_graph_equals_encode(trained, real_lines):
    wp = trained("wordpiece")
    assert wp.tokenize(tf.constant(real_lines)).to_list() == wp.encode(real_lines)


def test_too_small_vocabulary_raises(train_texts):
    with pytest.raises(TokenizerError, match="use at least --vocab_size="):
        train_tokenizer("wordpiece", train_texts, 50)
