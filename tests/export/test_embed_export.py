"""The `embed` signatures: SavedModel and TFLite vectors equal `SentenceEncoder.embed` (same
layout, same pooling rule); `export_sentence_encoder` exports an encoder without an MLM
head; report.json checks them."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.testing import tiny_encoder_dir
from tflm.export import export_model
from tflm.export.encoder import export_sentence_encoder
from tflm.generation import SentenceEncoder
from tflm.model_dir import load_model_dir

HERE = os.path.dirname(os.path.abspath(__file__))


def _texts(documents):
    """Held-out sentences of mixed lengths, an empty text, a literal [MASK] and one whole
    document (longer than the window: cut)."""
    sentences = [s.strip() + "." for d in documents[1][:3] for s in d.split(".") if s.strip()]
    return [*sentences[:10], "", "the [MASK] is here", documents[1][4]]


def _tflite_embed(path, encoder, texts):
    """The ``embed`` signature of the .tflite file at ``path`` on ``encoder.token_ids``."""
    from ai_edge_litert.interpreter import Interpreter

    from tflm.export.encoder_tflite import sentence_windows

    embed = Interpreter(model_path=path).get_signature_runner("embed")
    windows = sentence_windows(encoder, texts)
    return np.concatenate([embed(token_ids=windows["token_ids"][i:i + 1],
                                 padding_mask=windows["padding_mask"][i:i + 1])["embedding"]
                           for i in range(len(texts))])


@pytest.fixture(scope="module")
def encoder(masked_lm_dir):
    return SentenceEncoder.from_model_dir(masked_lm_dir)


def test_masked_lm_saved_model_embed_equals_sentence_encoder(masked_lm_dir, encoder,
                                                              documents, tmp_path):
    report = export_model(masked_lm_dir, str(tmp_path), format="saved_model")
    assert report["signatures"] == ["embed", "encode", "fill_mask", "serving_default"]
    assert report["pooling"] == encoder.pooling == "mean"  # the config says "auto"
    with open(tmp_path / "report.json") as f:
        check = json.load(f)["verification"]
    assert check["embed_max_abs_diff"] <= 1e-4 and check["within_1e-4"]
    texts = _texts(documents)
    served = tf.saved_model.load(report["path"]).signatures["embed"](text=tf.constant(texts))
    vectors = served["embedding"].numpy()
    assert vectors.shape == (len(texts), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, encoder.embed(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_masked_lm_tflite_embed_equals_sentence_encoder(masked_lm_dir, encoder, documents,
                                                        tmp_path):
    report = export_model(masked_lm_dir, str(tmp_path), format="tflite",
                          quantize="dynamic_int8")
    assert report["signatures"] == ["encode", "mlm", "embed"]
    fp32, int8 = report["variants"]["none"], report["variants"]["dynamic_int8"]
    assert fp32["embed_max_abs_diff"] <= 1e-4 and fp32["within_1e-4"]
    assert fp32["embed_mean_cosine"] > 0.9999 and fp32["embed_cosine_ok"]
    assert int8["embed_cosine_ok"] and int8["embed_mean_cosine"] >= int8["embed_cosine_floor"]
    assert not [op for op in int8["ops"] if op.startswith("Flex") or not op.isupper()]
    texts = _texts(documents)
    np.testing.assert_allclose(_tflite_embed(str(tmp_path / "model.tflite"), encoder, texts),
                               encoder.embed(texts), atol=1e-4)


@pytest.fixture(scope="module")
def first_pooling(masked_lm_model):
    """The masked LM's (model, tokenizer, config) with config pooling "first" (as a SimCSE
    config names its pooling)."""
    model, tokenizer, config = masked_lm_model
    config = copy.deepcopy(config)
    config.model.backbone.pooling = "first"
    return model, tokenizer, config


def test_sentence_encoder_saved_model_exports_the_backbone_with_embed(first_pooling,
                                                                      documents, tmp_path):
    model, tokenizer, config = first_pooling
    report = export_sentence_encoder(model, tokenizer, config, str(tmp_path))
    assert report["signatures"] == ["embed", "encode", "serving_default"]
    assert report["pooling"] == "first" and report["verification"]["within_1e-4"]
    assert report["verification"]["encode_lengths_identical"]
    encoder = SentenceEncoder(model.backbone, tokenizer, config)
    assert encoder.pooling == "first"
    texts = _texts(documents)
    saved = tf.train.list_variables(os.path.join(report["path"], "variables", "variables"))
    assert len(saved) - 1 == len(model.backbone.weights)  # no MLM / pair head (+ the graph)
    loaded = tf.saved_model.load(report["path"])
    vectors = loaded.signatures["embed"](text=tf.constant(texts))["embedding"].numpy()
    np.testing.assert_allclose(vectors, encoder.embed(texts), atol=1e-5)
    mean = SentenceEncoder(model.backbone, tokenizer, pooling="mean").embed(texts)
    assert np.abs(vectors - mean).max() > 1e-2  # the config's pooling, not the default

    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps({"serving_default": {"text": texts[:3]}}))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "serving_check.py"),
                           report["path"], str(requests), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["foreign_modules"] == []
    np.testing.assert_allclose(result["outputs"]["serving_default"]["embedding"], vectors[:3],
                               atol=1e-5)


def test_sentence_encoder_tflite_has_embed_only(first_pooling, documents, tmp_path):
    model, tokenizer, config = first_pooling
    report = export_sentence_encoder(model, tokenizer, config, str(tmp_path),
                                     format="tflite", quantize="float16")
    assert report["signatures"] == ["embed"] and report["pooling"] == "first"
    assert report["variants"].keys() == {"none", "float16"}
    assert report["variants"]["none"]["within_1e-4"]
    assert report["variants"]["float16"]["embed_cosine_ok"]
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["variants"]["float16"]["embed_mean_cosine"] > 0.999
    encoder = SentenceEncoder(model.backbone, tokenizer, config)
    texts = _texts(documents)
    np.testing.assert_allclose(_tflite_embed(str(tmp_path / "model.tflite"), encoder, texts),
                               encoder.embed(texts), atol=1e-4)


def test_causal_model_embeds_raw_ids_in_the_saved_model(tmp_path):
    """No [CLS] / [SEP] (BPE): the ids alone, an empty text as the start token."""
    model, tokenizer, config = load_model_dir(tiny_encoder_dir(tmp_path / "gpt",
                                                               objective="causal_lm"))
    report = export_sentence_encoder(model, tokenizer, config, str(tmp_path / "out"))
    assert report["pooling"] == "mean" and report["verification"]["within_1e-4"]
    texts = ["the quick brown fox", "", "a function returns a value " * 10]
    embed = tf.saved_model.load(report["path"]).signatures["embed"]
    np.testing.assert_allclose(embed(text=tf.constant(texts))["embedding"].numpy(),
                               SentenceEncoder(model.backbone, tokenizer, config).embed(texts),
                               atol=1e-5)


def test_electra_discriminator_exports_as_a_sentence_encoder(tmp_path):
    """The hook ELECTRA / SimCSE entries name: only the discriminator is saved."""
    path = tiny_encoder_dir(tmp_path / "electra", objective="electra")
    model, tokenizer, config = load_model_dir(path)
    report = export_sentence_encoder(model, tokenizer, config, str(tmp_path / "out"))
    assert report["pooling"] == "mean" and report["verification"]["within_1e-4"]
    saved = tf.train.list_variables(os.path.join(report["path"], "variables", "variables"))
    assert len(saved) - 1 == len(model.backbone.weights) < len(model.weights)
    texts = ["the quick brown fox", "a function returns a value " * 10]
    served = tf.saved_model.load(report["path"]).signatures["serving_default"]
    np.testing.assert_allclose(served(text=tf.constant(texts))["embedding"].numpy(),
                               SentenceEncoder.from_model_dir(path).embed(texts), atol=1e-5)

