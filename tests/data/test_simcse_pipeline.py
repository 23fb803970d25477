"""The simcse objective's adapter: corpus sentences or files, laid out as SentenceEncoder
embeds them."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.config import base_config
from tflm.data.contrastive import layout_ids, simcse_pipeline
from tflm.errors import DataError

PAD, UNK, CLS, SEP = 0, 1, 2, 3
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


class WordTokenizer:
    """Whitespace split + lookup, ids 4.. for WORDS; [CLS] / [SEP] unless `framed` False
    (then end-of-text 0 pads, as byte-level BPE)."""

    def __init__(self, framed=True):
        init = tf.lookup.KeyValueTensorInitializer(
            WORDS, tf.range(4, 4 + len(WORDS), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(init, UNK)
        self.cls_id, self.sep_id = (CLS, SEP) if framed else (None, None)
        self.pad_id, self.eos_id = (PAD, None) if framed else (None, 0)

    def tokenize(self, strings):
        return tf.cast(tf.ragged.map_flat_values(self.table.lookup,
                                                 tf.strings.split(strings)), tf.int32)


def ids(text):
    return [4 + WORDS.index(w) for w in text.split()]


def _config(seq_len=6, **data):
    config = base_config("simcse")
    config.data.seq_len = seq_len
    config.data.update(data)
    return config


def _cache(documents):
    lengths = [len(d) for d in documents]
    return types.SimpleNamespace(ids=np.array([i for d in documents for i in d], np.int32),
                                 offsets=np.cumsum([0, *lengths]).astype(np.int64))


def _batches(dataset, n=None):
    dataset = dataset if n is None else dataset.take(n)
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]


def _row(tokens, seq_len=6, pad=PAD):
    return list(tokens) + [pad] * (seq_len - len(tokens))


DOCS = [ids("a b c"), ids("d e f g h a b"), ids("h"), ids("b c d"), ids("e f")]


def test_corpus_sentences_are_their_own_positives():
    caches = {"train": _cache(DOCS), "validation": _cache(DOCS[:3])}
    ds = simcse_pipeline(caches, WordTokenizer(), _config(), 4, split="train",
                         training=True, seed=0)
    x, y = _batches(ds, 1)[0]
    assert sorted(x) == ["anchor", "positive"]
    np.testing.assert_array_equal(x["anchor"]["token_ids"], x["positive"]["token_ids"])
    expected = {tuple(_row([CLS, *d[:4], SEP])) for d in DOCS}
    assert {tuple(r) for r in x["anchor"]["token_ids"]} <= expected  # cut to seq_len
    np.testing.assert_array_equal(x["anchor"]["padding_mask"],
                                  (x["anchor"]["token_ids"] != PAD).astype(np.int32))
    assert y.tolist() == [0, 0, 0, 0] and y.dtype == np.int32
    # Validation: the split in order, no last batch smaller than batch_size ...
    batches = _batches(simcse_pipeline(caches, WordTokenizer(), _config(), 2,
                                       split="validation", training=False, seed=0))
    assert len(batches) == 1
    assert batches[0][0]["anchor"]["token_ids"].tolist() == [
        _row([CLS, *DOCS[0], SEP]), _row([CLS, *DOCS[1][:4], SEP])]
    # ... unless it is the only one.
    (x, _), = _batches(simcse_pipeline(caches, WordTokenizer(), _config(), 8,
                                       split="validation", training=False, seed=0))
    assert len(x["anchor"]["token_ids"]) == 3


def test_a_tokenizer_without_cls_and_sep_gives_the_ids_alone():
    tokenizer = WordTokenizer(framed=False)
    assert layout_ids(tokenizer) == (None, None, 0)
    ds = simcse_pipeline({"validation": _cache(DOCS)}, tokenizer, _config(), 5,
                         split="validation", training=False, seed=0)
    (x, _), = _batches(ds)
    assert x["anchor"]["token_ids"].tolist()[:2] == [_row(DOCS[0]), _row(DOCS[1][:6])]


def test_workers_slice_the_global_batch():
    caches = {"train": _cache(DOCS)}
    config, tokenizer = _config(), WordTokenizer()
    whole = _batches(simcse_pipeline(caches, tokenizer, config, 4, split="train",
                                     training=True, seed=3, start_step=2), 1)[0][0]
    parts = [_batches(simcse_pipeline(
        caches, tokenizer, config, 4, split="train", training=True, seed=3, start_step=2,
        input_context=tf.distribute.InputContext(2, i, 2)), 1)[0][0] for i in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([p["anchor"]["token_ids"] for p in parts]),
        whole["anchor"]["token_ids"])


def test_supervised_triples_and_pairs_from_files(tmp_path):
    train = tmp_path / "nli.csv"
    train.write_text("sent0,sent1,hard_neg\na b,c d,e\nf,g h,a a a\nb,c,d\n")
    validation = tmp_path / "dev.jsonl"
    validation.write_text('{"q": "a", "p": "b"}\n{"q": "c", "p": "d e"}\n')
    config = _config(train=str(train))
    x, y = _batches(simcse_pipeline({}, WordTokenizer(), config, 3, split="train",
                                    training=True, seed=0), 1)[0]
    assert sorted(x) == ["anchor", "negative", "positive"]
    rows = {tuple(r) for r in x["negative"]["token_ids"]}
    assert rows == {tuple(_row([CLS, *ids(t), SEP])) for t in ("e", "a a a", "d")}
    config = _config(train=str(train), validation=str(validation), columns=("q", "p"))
    (x, y), = _batches(simcse_pipeline({}, WordTokenizer(), config, 2, split="validation",
                                       training=False, seed=0))
    assert sorted(x) == ["anchor", "positive"]
    assert x["positive"]["token_ids"].tolist() == [_row([CLS, 5, SEP]),
                                                   _row([CLS, 7, 8, SEP])]


def test_missing_data_is_named():
    with pytest.raises(DataError, match="validation"):
        simcse_pipeline({"train": _cache(DOCS)}, WordTokenizer(), _config(), 2,
                        split="validation", training=False, seed=0)
    with pytest.raises(DataError, match="columns"):
        simcse_pipeline({}, WordTokenizer(), _config(train="x.tsv", columns=("a",)), 2,
                        split="train", training=True, seed=0)
