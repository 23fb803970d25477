"""The pipelines read the token cache (or a labelled file's rows) per batch: their graph
does not grow with the corpus or the file."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.data import pipelines
from tflm.data.contrastive import supervised_contrastive_dataset, unsupervised_contrastive_dataset

MASKING = pipelines.MaskingSpec(3, 60, (0, 1, 2, 4))


class WordTokenizer:
    """Whitespace split + vocabulary lookup, in-graph."""

    WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]

    def __init__(self):
        init = tf.lookup.KeyValueTensorInitializer(
            self.WORDS, tf.range(4, 4 + len(self.WORDS), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(init, 3)

    def tokenize(self, strings):
        return tf.cast(
            tf.ragged.map_flat_values(self.table.lookup, tf.strings.split(strings)), tf.int32)


def make_cache(num_documents):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, num_documents)
    ids = rng.integers(5, 60, lengths.sum()).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids, offsets=offsets)


BUILDERS = {
    "causal": lambda c: pipelines.causal_lm_dataset(c, 16, 8, 0, eos_id=4),
    "causal_eval": lambda c: pipelines.causal_lm_eval_dataset(c, 16, 8, 4),
    "masked_lm": lambda c: pipelines.masked_lm_dataset(c, 20, 8, 0, MASKING, 1, 2),
    "nsp": lambda c: pipelines.sentence_pair_dataset(c, 19, 8, 0, "nsp", 1, 2, masking=MASKING),
    "sop_eval": lambda c: pipelines.sentence_pair_eval_dataset(c, 19, 8, "sop", 1, 2),
    "simcse": lambda c: unsupervised_contrastive_dataset(c, 12, 8, 0, cls_id=1, sep_id=2),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_graph_size_does_not_depend_on_the_corpus_size(name):
    small, large = make_cache(50), make_cache(5000)  # ~5k and ~500k tokens
    sizes = [len(BUILDERS[name](c)._as_serialized_graph().numpy()) for c in (small, large)]
    # Only the varints of a few counts and the numpy_function names may differ; an
    # embedded table of the 100x larger corpus would add ~2 MB.
    assert abs(sizes[1] - sizes[0]) < 100, sizes


def _write_examples(path, rows):
    """A TSV of `rows` labelled pairs / triples of made-up sentences."""
    rng = np.random.default_rng(1)
    words = np.array(WordTokenizer.WORDS)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tpair\tlabel\n")
        for _ in range(rows):
            a, b = (" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(2))
            f.write(f"{a}\t{b}\t{rng.choice(['pos', 'neg'])}\n")


FILE_BUILDERS = {
    "classification": lambda p, tok: pipelines.classification_dataset(
        p, tok, 16, 8, 0, cls_id=1, sep_id=2)[0],
    "classification_pairs": lambda p, tok: pipelines.classification_dataset(
        p, tok, 16, 8, 0, text_pair_column="pair", cls_id=1, sep_id=2)[0],
    "classification_eval": lambda p, tok: pipelines.classification_eval_dataset(
        p, tok, 16, 8, ["neg", "pos"], cls_id=1, sep_id=2),
    "supervised_simcse": lambda p, tok: supervised_contrastive_dataset(
        p, tok, 12, 8, 0, columns=("text", "pair", "label"), cls_id=1, sep_id=2),
}


@pytest.mark.parametrize("name", sorted(FILE_BUILDERS))
def test_graph_size_does_not_depend_on_the_labelled_file(name, tmp_path):
    sizes = []
    for rows in (20, 2000):  # ~1 KB and ~100 KB of text
        path = str(tmp_path / f"{rows}.tsv")
        _write_examples(path, rows)
        dataset = FILE_BUILDERS[name](path, WordTokenizer())
        sizes.append(len(dataset._as_serialized_graph().numpy()))
        next(iter(dataset))  # and it reads its examples
    assert abs(sizes[1] - sizes[0]) < 100, sizes
