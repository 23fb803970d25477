"""Imported tokenizers give the checkpoint's own ids (its tokenizer.json loaded with the
`tokenizers` library) on the eager and the in-graph path, and survive save / load and a
SavedModel."""

import os
import random
import shutil

import pytest
import tensorflow as tf
from tokenizers import Tokenizer as HFTokenizer

from tests.convert import hf_dirs
from tflm.convert.checkpoint import CheckpointError
from tflm.convert.tokenizer import import_tokenizer
from tflm.text import load_tokenizer
from tflm.text.masks import encode_with_masks, tokenize_with_masks

TEXTS = hf_dirs.TEXTS + [
    "the [MASK] sat on [SEP] the mat [CLS]",
    "a <mask> sat <s>on</s> the <|endoftext|> mat <pad>",
    "x" * 120 + " long word",
    "ÉCOLE École ÎLE Straße ΣΟΦΊΑ ﬁne Ａ１",
]


def _directory(root, kind, **options):
    path = os.path.join(root, kind + "".join(f"_{k}{v}" for k, v in options.items()))
    if not os.path.isdir(path):
        os.makedirs(path)
        if kind == "bert":
            hf_dirs.write_wordpiece_tokenizer(path, **options)
        else:
            hf_dirs.write_bpe_tokenizer(path, kind)
    return path


CASES = [("bert", {"lowercase": True}), ("bert", {"lowercase": False}), ("roberta", {}),
         ("gpt2", {})]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenizers"))


@pytest.mark.parametrize("kind,options", CASES, ids=["uncased", "cased", "roberta", "gpt2"])
def test_eager_and_in_graph_ids_equal_the_checkpoint_tokenizer(root, kind, options):
    path = _directory(root, kind, **options)
    reference = HFTokenizer.from_file(os.path.join(path, "tokenizer.json"))
    expected = [e.ids for e in reference.encode_batch(TEXTS, add_special_tokens=False)]
    size = reference.get_vocab_size()
    tokenizer, report = import_tokenizer(path, kind, size)
    assert tokenizer.encode(TEXTS) == expected
    assert tokenizer.tokenize(tf.constant(TEXTS)).to_list() == expected
    graph = tf.function(lambda t: tokenizer.tokenize(t))  # traced, as in tf.data / export
    assert graph(tf.constant(TEXTS)).to_list() == expected
    assert report["vocabulary_size"] == size and report["padding_tokens"] == 0
    # Framed as tflm frames encoder inputs ([CLS] ... [SEP] / <s> ... </s>): the
    # checkpoint's own template.
    if kind != "gpt2":
        with_specials = reference.encode(TEXTS[0]).ids
        assert [tokenizer.cls_id, *expected[0], tokenizer.sep_id] == with_specials
    # Saved and loaded (tflm's tokenizer.json): the same ids and fingerprint.
    saved = load_tokenizer(tokenizer.save(os.path.join(root, f"saved_{kind}_{len(options)}"
                                                       f"{options.get('lowercase')}")))
    assert saved.encode(TEXTS) == expected
    assert saved.fingerprint == tokenizer.fingerprint


# Characters where TensorFlow's Unicode tables differ from the tokenizers library's, or
# where BERT's normaliser and GPT-2's split have special cases.
POOL = [*"aAzZ éÉüÜñßİıΣσς'!?…—-_12٣½²", "\u4e00", "\uf900", "漢", "😀", "\U0001F970",
        "\u200d", "\u200b", "\ufeff", "\x00", "\x01", "\ue000", "\ufffd", "\u00a0",
        "\u3000", "\t", "\n", "\r", "\v", "\f", "\x85", "\u0301", "\u0308", "\u1c89",
        "\u2c2f", "\u2e43", "\u166d", "\u0378", "ﬁ", "Ａ", "'s", "'ll", "  ", "   ",
        "[MASK]", "<mask>", " <mask>", "<s>", "<|endoftext|>"]


@pytest.mark.parametrize("kind,options", CASES, ids=["uncased", "cased", "roberta", "gpt2"])
def test_random_strings_of_awkward_characters(root, kind, options):
    rng = random.Random(0)
    texts = ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 12)))
             for _ in range(400)]
    path = _directory(root, kind, **options)
    reference = HFTokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tokenizer, _ = import_tokenizer(path, kind, reference.get_vocab_size())
    expected = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert tokenizer.encode(texts) == expected
    assert tokenizer.tokenize(tf.constant(texts)).to_list() == expected


def test_special_ids_are_the_checkpoints(root):
    bert, _ = import_tokenizer(_directory(root, "bert", lowercase=True), "bert",
                               len(hf_dirs.wordpiece_vocab(True)))
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == (
        0, 100, 101, 102, 103)
    assert bert.eos_id is None
    roberta_dir = _directory(root, "roberta")
    size = HFTokenizer.from_file(os.path.join(roberta_dir, "tokenizer.json")).get_vocab_size()
    roberta, _ = import_tokenizer(roberta_dir, "roberta", size)
    assert (roberta.cls_id, roberta.pad_id, roberta.sep_id, roberta.unk_id) == (0, 1, 2, 3)
    assert roberta.mask_id == size - 1 and roberta.eos_id == 2
    gpt2_dir = _directory(root, "gpt2")
    size = HFTokenizer.from_file(os.path.join(gpt2_dir, "tokenizer.json")).get_vocab_size()
    gpt2, _ = import_tokenizer(gpt2_dir, "gpt2", size)
    # GPT-2's tokenizer_config.json names <|endoftext|> its unknown token too; no pad.
    assert gpt2.special_ids == {"eos": size - 1, "unk": size - 1}


def test_mask_rule_follows_the_checkpoint(root):
    # RoBERTa's <mask> takes the space before it (lstrip), as its tokenizer.json says.
    path = _directory(root, "roberta")
    reference = HFTokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tokenizer, _ = import_tokenizer(path, "roberta", reference.get_vocab_size())
    texts = ["The cat <mask> on the mat.", "<mask> and<mask>  <mask>"]
    expected = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert encode_with_masks(tokenizer, texts) == expected
    assert tokenize_with_masks(tokenizer, tf.constant(texts)).to_list() == expected
    assert expected[0].count(tokenizer.mask_id) == 1


def test_vocab_txt_without_tokenizer_json(root):
    # Only vocab.txt + tokenizer_config.json (do_lower_case): BertTokenizer's rules.
    full = _directory(root, "bert", lowercase=True)
    bare = os.path.join(root, "vocab_only")
    os.makedirs(bare, exist_ok=True)
    hf_dirs.write_wordpiece_tokenizer(bare, lowercase=True, tokenizer_json=False)
    reference = HFTokenizer.from_file(os.path.join(full, "tokenizer.json"))
    tokenizer, report = import_tokenizer(bare, "bert", reference.get_vocab_size())
    expected = [e.ids for e in reference.encode_batch(TEXTS, add_special_tokens=False)]
    assert tokenizer.encode(TEXTS) == expected
    assert tokenizer.tokenize(tf.constant(TEXTS)).to_list() == expected
    assert report["files"] == ["vocab.txt"] and report["options"]["lowercase"] is True


@pytest.mark.parametrize("kind", ["roberta", "gpt2"])
def test_vocab_json_and_merges_without_tokenizer_json(root, kind):
    # vocab.json + merges.txt + tokenizer_config.json: RobertaTokenizer / GPT2Tokenizer.
    full = _directory(root, kind)
    bare = os.path.join(root, f"{kind}_files_only")
    os.makedirs(bare, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(full, name), bare)
    reference = HFTokenizer.from_file(os.path.join(full, "tokenizer.json"))
    tokenizer, report = import_tokenizer(bare, kind, reference.get_vocab_size())
    expected = [e.ids for e in reference.encode_batch(TEXTS, add_special_tokens=False)]
    assert tokenizer.encode(TEXTS) == expected
    assert tokenizer.tokenize(tf.constant(TEXTS)).to_list() == expected
    assert report["files"] == ["vocab.json", "merges.txt"]


def test_smaller_vocabulary_is_padded_and_larger_refused(root):
    path = _directory(root, "bert", lowercase=True)
    size = len(hf_dirs.wordpiece_vocab(True))
    tokenizer, report = import_tokenizer(path, "bert", size + 3)
    assert tokenizer.vocabulary_size == size + 3 and report["padding_tokens"] == 3
    # No text reaches a padding token.
    assert max(max(ids, default=0) for ids in tokenizer.encode(TEXTS + ["[tflm_unused_0]"])) \
        < size
    with pytest.raises(CheckpointError, match=f"{size} tokens but the model's token "
                                              f"embedding only {size - 1} rows"):
        import_tokenizer(path, "bert", size - 1)


def _padded_ids(layer):
    return tf.function(lambda texts: layer.tokenize(texts).to_tensor(-1),
                       input_signature=[tf.TensorSpec([None], tf.string)])


def test_saved_model_keeps_the_in_graph_tokenizer(root, tmp_path):
    expected, modules = {}, {}
    for kind, options in (CASES[0], CASES[2]):
        path = _directory(root, kind, **options)
        reference = HFTokenizer.from_file(os.path.join(path, "tokenizer.json"))
        tokenizer, _ = import_tokenizer(path, kind, reference.get_vocab_size())
        module = tf.Module()
        module.layer = tokenizer.layer
        module.ids = _padded_ids(tokenizer.layer)
        tf.saved_model.save(module, str(tmp_path / kind))
        modules[kind] = str(tmp_path / kind)
        expected[kind] = [e.ids for e in reference.encode_batch(TEXTS,
                                                               add_special_tokens=False)]
    for kind, path in modules.items():
        ids = tf.saved_model.load(path).ids(tf.constant(TEXTS)).numpy().tolist()
        assert [[i for i in row if i != -1] for row in ids] == expected[kind]
