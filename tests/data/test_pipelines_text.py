"""Contrastive pairs and classification from files, with a tiny in-graph tokenizer."""

import json
import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.data import pipelines
from tflm.errors import DataError

PAD, CLS, SEP, UNK = 0, 1, 2, 3
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


class WordTokenizer:
    """Whitespace split + vocabulary lookup; ids 4.. for WORDS, UNK otherwise."""

    def __init__(self):
        init = tf.lookup.KeyValueTensorInitializer(
            WORDS, tf.range(4, 4 + len(WORDS), dtype=tf.int64)
        )
        self.table = tf.lookup.StaticHashTable(init, UNK)

    def tokenize(self, strings):
        return tf.cast(
            tf.ragged.map_flat_values(self.table.lookup, tf.strings.split(strings)), tf.int32
        )


def ids(text):
    return [4 + WORDS.index(w) for w in text.split()]


def take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


def test_unsupervised_pairs_from_strings_and_from_a_cache():
    sentences = ["a b c", "d e", "f g h a b c d e", "h"]
    ds = pipelines.unsupervised_contrastive_dataset(
        sentences, 6, 4, seed=0, tokenizer=WordTokenizer(), cls_id=CLS, sep_id=SEP
    )
    x = take(ds, 1)[0]
    np.testing.assert_array_equal(x["anchor"]["token_ids"], x["positive"]["token_ids"])
    rows = {tuple(r) for r in x["anchor"]["token_ids"]}
    expected = {
        tuple(np.pad([CLS] + ids(s)[:4] + [SEP], (0, 6 - min(len(ids(s)), 4) - 2)))
        for s in sentences
    }
    assert rows == expected
    assert (x["anchor"]["padding_mask"].sum(1) == (x["anchor"]["token_ids"] != PAD).sum(1)).all()
    cache = types.SimpleNamespace(
        ids=np.arange(10, 22, dtype=np.int32), offsets=np.array([0, 5, 12], np.int64)
    )
    x = take(pipelines.unsupervised_contrastive_dataset(cache, 4, 2, seed=0), 1)[0]
    assert {tuple(r) for r in x["positive"]["token_ids"]} == {(10, 11, 12, 13), (15, 16, 17, 18)}


def test_supervised_triples_from_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "nli.tsv"
    tsv.write_text("sent0\tsent1\thard_neg\na b\tc\td e f\ng\th a\tb\n")
    ds = pipelines.supervised_contrastive_dataset(
        str(tsv), WordTokenizer(), 5, 2, seed=1, columns=("sent0", "sent1", "hard_neg")
    )
    x = take(ds, 1)[0]
    assert set(x) == {"anchor", "positive", "negative"}
    order = [0, 1] if x["anchor"]["token_ids"][0][0] == ids("a")[0] else [1, 0]
    np.testing.assert_array_equal(x["negative"]["token_ids"][order[0]], ids("d e f") + [0, 0])
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"anchor": "a", "positive": "b"}\n\n{"anchor": "c"}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:3: no value for column 'positive'"):
        pipelines.supervised_contrastive_dataset(
            str(jsonl), WordTokenizer(), 5, 2, 0, columns=("anchor", "positive")
        )


def test_classification_labels_round_trip_and_batches(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [
        {"text": "a b", "label": "pos"},
        {"text": "c", "label": "neg"},
        {"text": "d e f", "label": "mixed"},
        {"text": "g", "label": "pos"},
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, labels = pipelines.classification_dataset(
        str(train), WordTokenizer(), 6, 4, seed=0, cls_id=CLS, sep_id=SEP
    )
    assert labels == ["mixed", "neg", "pos"]
    assert pipelines.save_labels(labels, tmp_path) == str(tmp_path / "labels.json")
    assert pipelines.load_labels(tmp_path) == labels
    x, y = take(ds, 1)[0]
    by_text = {
        tuple(t[1 : m.sum() - 1]): label
        for t, m, label in zip(x["token_ids"], x["padding_mask"], y)
    }
    assert by_text == {tuple(ids(r["text"])): labels.index(r["label"]) for r in rows}
    assert (x["segment_ids"] == 0).all()


def test_text_pairs_and_eval_errors(tmp_path):
    dev = tmp_path / "dev.csv"
    dev.write_text("premise,hypothesis,label\na b c d,e f,yes\ng,h,maybe\n")
    labels = ["no", "yes"]
    with pytest.raises(DataError, match=r"dev.csv:3: label 'maybe' \(column 'label'\) is not in"):
        pipelines.classification_eval_dataset(
            str(dev), WordTokenizer(), 6, 2, labels, text_column="premise", cls_id=CLS, sep_id=SEP
        )
    dev.write_text("premise,hypothesis,label\na b c d,e f,yes\ng,h,no\nh,a,yes\n")
    ds = pipelines.classification_eval_dataset(
        str(dev),
        WordTokenizer(),
        7,
        2,
        labels,
        text_column="premise",
        text_pair_column="hypothesis",
        cls_id=CLS,
        sep_id=SEP,
    )
    batches = take(ds, 5)
    assert [len(y) for _, y in batches] == [2, 1]
    x, y = batches[0]
    np.testing.assert_array_equal(y, [1, 0])
    # 4 + 2 tokens > 7 - 3: the longer premise is trimmed first, to 2.
    np.testing.assert_array_equal(
        x["token_ids"][0], [CLS] + ids("a b") + [SEP] + ids("e f") + [SEP]
    )
    np.testing.assert_array_equal(x["segment_ids"][0], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(x["segment_ids"][1], [0, 0, 0, 1, 1, 0, 0])
    with pytest.raises(DataError, match="labels.json"):
        pipelines.load_labels(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no such file"):
        pipelines.classification_eval_dataset(
            str(tmp_path / "x.tsv"), WordTokenizer(), 6, 2, labels
        )
