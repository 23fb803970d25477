"""Token classification data: words with one tag each (named entities, part of speech).

Files: CoNLL-style text (`.conll`, `.txt`, `.tsv` read as CoNLL by the
`token_classification` objective: one word per line, its tag in the last
whitespace-separated column, a blank line between sentences, `-DOCSTART-` lines skipped)
or JSONL (`{"tokens": [...], "tags": [...]}`, keys `config.data.text_column` /
`label_column`).

Words are split into the tokenizer's pieces once, eagerly (`encode_words`: the same
function lays out `tflm.load(dir).tag()` inputs); a word's tag sits at its first piece,
which gets weight 1, every other position weight 0. Sequences are `[CLS] pieces [SEP]`
for an encoder; words that do not fit `seq_len` are cut with a counted warning, or refused
with `config.data.too_long="error"`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from tflm.data import step_stream
from tflm.data.blocks import host_gather
from tflm.data.classification import build_labels, layout_ids, split_file
from tflm.data.text_files import json_records, utf8_checked
from tflm.errors import DataError

CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".bio")


def read_tagged(path: str, words_key: str = "tokens", tags_key: str = "tags"):
    """`(sentences: list[list[str]], tags: list[list[str]], lines: list[int])` of a file.

    Raises:
        DataError: missing / empty file, a word line without a tag, a JSONL record whose
            word and tag lists differ in length (naming file and line).
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; check the path in the config.")
    suffix = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8") as f:
        if suffix in (".jsonl", ".json"):
            sentences, tags, lines = _read_jsonl(f, path, words_key, tags_key)
        elif suffix in CONLL_SUFFIXES:
            sentences, tags, lines = _read_conll(utf8_checked(enumerate(f, 1), path), path)
        else:
            raise DataError(f"{path}: unknown format; use a CoNLL file (.conll, .txt, .tsv: "
                            "word and tag per line) or .jsonl.")
    if not sentences:
        raise DataError(f"{path}: no tagged sentences; the file is empty.")
    return sentences, tags, lines


def _read_conll(numbered, path):
    sentences, tags, lines = [], [], []
    words, labels, first = [], [], 0
    for number, text in numbered:
        fields = text.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(words), tags.append(labels), lines.append(first)
            words, labels = [], []
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: {text.strip()!r} has no tag; each line holds a "
                            "word and its tag (the last column), separated by whitespace.")
        if not words:
            first = number
        words.append(fields[0])
        labels.append(fields[-1])
    if words:
        sentences.append(words), tags.append(labels), lines.append(first)
    return sentences, tags, lines


def _read_jsonl(f, path, words_key, tags_key):
    sentences, tags, lines = [], [], []
    for number, record in utf8_checked(json_records(f, path), path):
        missing = [k for k in (words_key, tags_key) if not isinstance(record.get(k), list)]
        if missing:
            raise DataError(f"{path}:{number}: no list under {missing[0]!r}; set "
                            "config.data.text_column / label_column to the keys of the "
                            "words and tags.")
        if len(record[words_key]) != len(record[tags_key]):
            raise DataError(f"{path}:{number}: {len(record[words_key])} words but "
                            f"{len(record[tags_key])} tags.")
        sentences.append([str(w) for w in record[words_key]])
        tags.append([str(t) for t in record[tags_key]])
        lines.append(number)
    return sentences, tags, lines


def encode_words(tokenizer, sentences, seq_len: int):
    """`(token_ids, padding_mask, first_piece)` int32 arrays of word lists.

    `token_ids` / `padding_mask` (N, seq_len) hold `[CLS] pieces [SEP]` (a tokenizer
    without [CLS] / [SEP]: the pieces and the end-of-text token); `first_piece` (N, W)
    is the position of each word's first piece, -1 for words cut off (W = the most
    words in a sentence). BPE words after the first are encoded with their leading space,
    as they appear in running text.
    """
    cls_id, sep_id, pad_id = layout_ids(tokenizer)
    spaced = tokenizer.kind == "bpe"
    flat = [(" " + w if spaced and i else w) for words in sentences for i, w in enumerate(words)]
    pieces = tokenizer.encode(flat) if flat else []
    budget = seq_len - (cls_id is not None) - (sep_id is not None)
    width = max((len(words) for words in sentences), default=0)
    token_ids = np.full((len(sentences), seq_len), pad_id, np.int32)
    mask = np.zeros((len(sentences), seq_len), np.int32)
    first = np.full((len(sentences), max(width, 1)), -1, np.int32)
    k = 0
    for row, words in enumerate(sentences):
        ids = [cls_id] if cls_id is not None else []
        for i in range(len(words)):
            word = pieces[k] or [tokenizer.unk_id if tokenizer.unk_id is not None else pad_id]
            k += 1
            if len(ids) - (cls_id is not None) + len(word) <= budget:
                first[row, i] = len(ids)
                ids.extend(word)
        if sep_id is not None:
            ids.append(sep_id)
        token_ids[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    return token_ids, mask, first


def tagged_arrays(path, tokenizer, config, labels):
    """`(x dict of (N, seq_len) int32, y (N, seq_len) int32, weights (N, seq_len) float32)`
    of a tagged file; a tag outside `labels` raises DataError naming its sentence's line."""
    d = config.data
    sentences, tags, lines = read_tagged(path, d.text_column, d.label_column)
    index = {label: i for i, label in enumerate(labels)}
    token_ids, mask, first = encode_words(tokenizer, sentences, d.seq_len)
    y = np.zeros_like(token_ids)
    weights = np.zeros(token_ids.shape, np.float32)
    cut, first_cut = 0, None
    for row, sentence_tags in enumerate(tags):
        for i, tag in enumerate(sentence_tags):
            if tag not in index:
                raise DataError(f"{path}:{lines[row]}: tag {tag!r} is not in the tag "
                                f"vocabulary {list(labels)}, read from the training file.")
            if first[row, i] < 0:
                cut += 1
                first_cut = row if first_cut is None else first_cut
                continue
            y[row, first[row, i]], weights[row, first[row, i]] = index[tag], 1.0
    if cut and d.too_long == "error":
        raise DataError(f"{path}:{lines[first_cut]}: the sentence does not fit config.data.seq_len="
                        f"{d.seq_len} tokens ({cut} words in the file are cut); shorten it, "
                        "raise seq_len or set config.data.too_long='truncate'.")
    if cut:
        logging.warning("%s: %d words do not fit config.data.seq_len=%d and are not scored "
                        "(config.data.too_long='error' to refuse them).", path, cut, d.seq_len)
    x = {"token_ids": token_ids, "padding_mask": mask}
    if config.model.backbone.num_segments:
        x["segment_ids"] = np.zeros_like(token_ids)
    return x, y, weights


def token_classification_pipeline(caches, tokenizer, config, batch_size: int, *, split: str,
                                  training: bool, seed: int, start_step: int = 0,
                                  input_context=None) -> tf.data.Dataset:
    """The `token_classification` objective's adapter: `(x, y, sample_weight)` with `y`
    int32 (B, seq_len) tag indices in `config.model.labels` and `sample_weight` 1 at each
    word's first piece; `caches` is unused (the examples are files)."""
    x, y, weights = tagged_arrays(split_file(config.data, split), tokenizer, config,
                                  config.model.labels)
    tables = tf.nest.map_structure(host_gather, (x, y, weights))

    def make(idx):
        return tf.nest.map_structure(lambda gather: gather(idx), tables)

    if training:
        return step_stream.training_stream(len(y), batch_size, seed, start_step,
                                           input_context, lambda step, row, idx: make(idx))
    return step_stream.finish(tf.data.Dataset.range(len(y)).batch(batch_size), make)


def configure_tags(config) -> dict:
    """The `token_classification` objective's `configure` hook: `model.labels` = the
    sorted tags of `config.data.train` (kept when the config names them)."""
    d = config.data
    path = split_file(d, "train")
    _, tags, lines = read_tagged(path, d.text_column, d.label_column)
    found = build_labels([t for sentence in tags for t in sentence])
    labels = list(config.model.labels) or found
    unknown = sorted(set(found) - set(labels))
    if unknown:
        raise DataError(f"{path}: tags {unknown} are not in config.model.labels {labels}.")
    if len(labels) < 2:
        raise DataError(f"{path}: every word has the tag {labels[0]!r}; a tagger needs at "
                        "least 2 tags.")
    return {"model.labels": tuple(labels)}
