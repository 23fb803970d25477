"""Shared fixtures: a tiny GPT trained for a few dozen steps on real text, as a model dir.

Training on real text (the built-in corpus) makes next-token agreement meaningful: a
random-init model's logits are nearly flat, so any quantization noise flips its argmax.
"""

import os

import keras
import numpy as np
import pytest

from tflm.config import base_config
from tflm.data.builtin import builtin_documents
from tflm.model_dir import save_model_dir
from tflm.models import GPT
from tflm.text import train_tokenizer

WINDOW = 32
TRAIN_DOCS = 400


def _tiny_config(vocabulary_size, corpus_path):
    config = base_config()
    config.model.backbone.update(vocabulary_size=vocabulary_size, num_layers=2, hidden_dim=32,
                                 num_heads=2, intermediate_dim=64, max_sequence_length=WINDOW)
    config.data.corpus = corpus_path
    config.data.seq_len = WINDOW
    config.export.max_new_tokens = 8
    config.export.representative_samples = 16
    return config


@pytest.fixture(scope="session")
def documents():
    """Real English text: the built-in corpus' documents (prose, not random)."""
    docs = [d for d in builtin_documents(None) if len(d) > 200]
    return docs[:TRAIN_DOCS], docs[TRAIN_DOCS:TRAIN_DOCS + 40]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, documents):
    """A model directory of a 2-layer, hidden-32 GPT fitted for 3 x 80 steps."""
    train, held_out = documents
    root = tmp_path_factory.mktemp("tiny_gpt")
    corpus_path = os.path.join(root, "corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(d.replace("\n\n", "\n") for d in train + held_out))
    tokenizer = train_tokenizer("bpe", train, 300)
    keras.utils.set_random_seed(0)
    config = _tiny_config(tokenizer.vocabulary_size, corpus_path)
    model = GPT(**config.model)
    stream = []
    for ids in tokenizer.encode(train):
        stream += [tokenizer.eos_id] + ids
    n = (len(stream) - 1) // WINDOW
    blocks = np.asarray(stream[:n * WINDOW + 1], np.int32)
    x = np.stack([blocks[i * WINDOW:(i + 1) * WINDOW] for i in range(n)])
    y = np.stack([blocks[i * WINDOW + 1:(i + 1) * WINDOW + 1] for i in range(n)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=GPT.default_loss())
    model.fit({"token_ids": x, "padding_mask": np.ones_like(x)}, y, batch_size=32,
              epochs=3, steps_per_epoch=min(80, n // 32), verbose=0)
    return save_model_dir(os.path.join(root, "model"), model, tokenizer, config)


@pytest.fixture(scope="session")
def keras_model(model_dir):
    """``(model, tokenizer, config)`` loaded back from the model directory."""
    from tflm.model_dir import load_model_dir

    return load_model_dir(model_dir)


@pytest.fixture(scope="session")
def saved_model_export(model_dir, tmp_path_factory):
    """``(saved_model_path, report)`` of ``tflm export --format=saved_model``."""
    from tflm.export import export_model

    out = tmp_path_factory.mktemp("saved_model_out")
    report = export_model(model_dir, str(out), format="saved_model")
    return report["path"], report


MLM_PREDICTIONS = 5


@pytest.fixture(scope="session")
def masked_lm_dir(tmp_path_factory, documents):
    """A model directory of a 2-layer, hidden-32 BertPretrainer (WordPiece, NSP head)
    fitted for 120 masked-LM steps, so its predictions are not flat."""
    from tflm.config import validate
    from tflm.model_dir import build_model

    train, held_out = documents
    root = tmp_path_factory.mktemp("tiny_bert")
    corpus_path = os.path.join(root, "corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(d.replace("\n\n", "\n") for d in train + held_out))
    tokenizer = train_tokenizer("wordpiece", train, 200, lowercase=True)
    config = base_config("masked_lm")
    config.model.backbone.update(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=2, hidden_dim=32,
        num_heads=2, intermediate_dim=64, max_sequence_length=WINDOW, causal=False,
        norm_first=False, activation="gelu", num_segments=2)
    config.data.update(corpus=corpus_path, seq_len=WINDOW, tokenizer="wordpiece",
                       lowercase=True, max_predictions=MLM_PREDICTIONS)
    config.export.representative_samples = 16
    config = validate(config)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    x, y = _masked_batches(tokenizer, train, np.random.default_rng(0))
    ones = np.ones(len(x["token_ids"]), np.float32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=model.default_loss())
    model.fit(x, {"mlm": y, "pair": np.zeros_like(ones, np.int32)},
              sample_weight={"mlm": np.ones_like(y, np.float32), "pair": ones},
              batch_size=32, epochs=3, steps_per_epoch=40, verbose=0)
    return save_model_dir(os.path.join(root, "model"), model, tokenizer, config)


def _masked_batches(tokenizer, texts, rng):
    """``[CLS] block [SEP]`` windows with MLM_PREDICTIONS tokens masked in each, and the
    masked ids."""
    stream = [i for ids in tokenizer.encode(texts) for i in [*ids, tokenizer.sep_id]]
    block = WINDOW - 2
    n = len(stream) // block
    content = np.asarray(stream[:n * block], np.int32).reshape(n, block)
    ids = np.concatenate([np.full((n, 1), tokenizer.cls_id), content,
                          np.full((n, 1), tokenizer.sep_id)], axis=1).astype(np.int32)
    positions = np.sort(np.stack([rng.choice(np.arange(1, WINDOW - 1), MLM_PREDICTIONS,
                                             replace=False) for _ in range(n)]), axis=1)
    labels = np.take_along_axis(ids, positions, axis=1)
    np.put_along_axis(ids, positions, tokenizer.mask_id, axis=1)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids),
         "segment_ids": np.zeros_like(ids), "mask_positions": positions.astype(np.int32)}
    return x, labels


@pytest.fixture(scope="session")
def masked_lm_model(masked_lm_dir):
    """``(model, tokenizer, config)`` of ``masked_lm_dir``, loaded back."""
    from tflm.model_dir import load_model_dir

    return load_model_dir(masked_lm_dir)
