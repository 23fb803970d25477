"""The interface every kind shares: determinism, save / load, in-graph use, errors."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tflm.errors import TokenizerError
from tflm.text import Tokenizer, check_vocabulary, load_tokenizer, train_tokenizer

KINDS = ["bpe", "wordpiece", "sentencepiece"]


@pytest.fixture(scope="module", params=KINDS)
def tokenizer(request, trained):
    return trained(request.param)


def test_training_is_deterministic(tokenizer, train_texts):
    again = train_tokenizer(tokenizer.kind, train_texts, 500)
    assert again.fingerprint == tokenizer.fingerprint
    assert again.assets == tokenizer.assets


_TRAIN_ALL_KINDS = """
import pydoc_data.topics
from tflm.text import train_tokenizer
texts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)][:8]
print(" ".join(train_tokenizer(kind, texts, 400).fingerprint for kind in {kinds}))
"""


def test_training_is_deterministic_across_processes():
    code = _TRAIN_ALL_KINDS.format(kinds=KINDS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    here = {}
    exec(code.replace("print(", "here['fingerprints'] = ("), {"here": here})
    assert out.stdout.split()[-3:] == here["fingerprints"].split()


def test_save_load_round_trip(tokenizer, real_lines, tmp_path):
    tokenizer.save(str(tmp_path))
    with open(tmp_path / "tokenizer.json") as f:
        meta = json.load(f)
    assert meta["kind"] == tokenizer.kind and meta["vocabulary_size"] == 500
    loaded = load_tokenizer(str(tmp_path))
    assert isinstance(loaded, Tokenizer) and loaded.directory == str(tmp_path)
    assert loaded.fingerprint == tokenizer.fingerprint
    assert loaded.encode(real_lines[:50]) == tokenizer.encode(real_lines[:50])
    assert loaded.special_ids == tokenizer.special_ids


def test_specials_have_documented_ids(tokenizer):
    expected = {
        "bpe": {"eos": 0, "pad": 0},
        "wordpiece": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
        "sentencepiece": {"pad": 0, "unk": 1, "eos": 2, "cls": 3, "sep": 4, "mask": 5},
    }[tokenizer.kind]
    assert tokenizer.special_ids == expected
    for role in ("pad", "eos", "unk", "cls", "sep", "mask"):
        assert getattr(tokenizer, f"{role}_id") == expected.get(role)
    for token_id in expected.values():
        assert tokenizer.token_to_id(tokenizer.id_to_token(token_id)) == token_id


def test_tokenize_in_tf_data_and_tf_function(tokenizer, real_lines):
    lines = [line[:50] for line in real_lines[-6:]]
    expected = tokenizer.encode(lines)
    ds = tf.data.Dataset.from_tensor_slices(lines).map(tokenizer.tokenize)
    assert [ids.numpy().tolist() for ids in ds] == expected  # scalar string -> 1-D ids

    @tf.function
    def round_trip(strings):
        ids = tokenizer.tokenize(strings)
        return ids, tokenizer.detokenize(ids)

    ids, text = round_trip(tf.constant(lines))
    assert ids.dtype == tf.int32 and isinstance(ids, tf.RaggedTensor)
    assert ids.to_list() == expected
    assert text.dtype == tf.string and text.shape == (len(lines),)
    one = tokenizer.tokenize("one string")  # eager, scalar
    assert one.shape.rank == 1 and one.numpy().tolist() == tokenizer.encode(["one string"])[0]


def test_check_vocabulary(tokenizer, tmp_path):
    check_vocabulary(tokenizer, 500)
    tokenizer.save(str(tmp_path))
    message = (
        f"tokenizer in {tmp_path} has 500 tokens but the model expects 512; retrain the "
        "tokenizer with --vocab_size=512 or set config.model.backbone.vocabulary_size=500"
    )
    with pytest.raises(TokenizerError, match=message.replace("-", r"\-")):
        check_vocabulary(tokenizer, 512)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_corpus_raises(kind):
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_tokenizer(kind, iter(["", ""]), 500)


def test_unknown_kind_raises():
    with pytest.raises(TokenizerError, match="use one of"):
        train_tokenizer("char", ["text"], 500)


def test_missing_files_raise(tokenizer, tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.json is missing"):
        load_tokenizer(str(tmp_path))
    tokenizer.save(str(tmp_path))
    os.remove(tmp_path / tokenizer.files[-1])
    with pytest.raises(TokenizerError, match=f"{tokenizer.files[-1]} is missing"):
        load_tokenizer(str(tmp_path))
