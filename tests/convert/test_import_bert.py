"""BERT imports: hidden states, MLM and NSP logits equal a float64 reference of the Hugging
Face computation and keras-hub's load of the same directory; bare encoders and
sentence-transformers directories embed as their model does; fine-tuning starts from an
import."""

import functools
import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import tflm
from tests.convert import hf_dirs
from tflm.config import base_config
from tflm.convert import import_hf
from tflm.model_dir import load_model_dir
from tflm.training.finetune import finetune

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def pretraining(root):
    """A BertForPreTraining directory (MLM + NSP heads, a tied decoder copy stored)."""
    source = hf_dirs.bert_dir(os.path.join(root, "hf"), nsp=True, tied_decoder=True)
    report = import_hf(source, os.path.join(root, "out"))
    return source, os.path.join(root, "out"), report


def _batch(tokenizer, texts, length=16):
    """[CLS] text [SEP] rows, right-padded; segment 1 on the second half of each row."""
    rows = [[tokenizer.cls_id, *ids[:length - 2], tokenizer.sep_id]
            for ids in tokenizer.encode(texts)]
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    types = (np.arange(length) >= length // 2).astype(np.int32)[None].repeat(len(rows), 0)
    return ids, mask, types


def test_pretraining_checkpoint_matches_float64_reference(pretraining):
    source, out, report = pretraining
    assert report["objective"] == "masked_lm" and report["head"] == {"pair_task": "nsp"}
    assert report["missing_heads"] == [] and report["tensors_not_imported"] == []
    model, tokenizer, config = load_model_dir(out)
    b = config.model.backbone
    assert (b.activation, b.norm_first, b.num_segments, b.layer_norm_epsilon) == (
        "gelu", False, 2, 1e-12)
    tensors, hf_config = hf_dirs.load_tensors(source), json.load(
        open(os.path.join(source, "config.json")))
    ids, mask, types = _batch(tokenizer, ["The cat sat on the mat.", "Über café"])
    outputs = model({"token_ids": ids, "padding_mask": mask, "segment_ids": types,
                     "mask_positions": np.tile(np.arange(ids.shape[1]), (2, 1))})
    hidden = model.backbone({"token_ids": ids, "padding_mask": mask,
                             "segment_ids": types})["sequence_output"]
    reference = hf_dirs.encoder_reference(tensors, hf_config, ids, types, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], reference[real], atol=TOLERANCE)
    mlm = hf_dirs.mlm_reference(tensors, hf_config, reference)
    scale = np.abs(mlm).max()  # logits reach ~10: compare relative to their scale
    np.testing.assert_allclose(np.asarray(outputs["mlm"])[real] / scale, mlm[real] / scale,
                               atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(outputs["pair"]),
                               hf_dirs.nsp_reference(tensors, reference), atol=TOLERANCE)


def test_pretraining_checkpoint_matches_keras_hub(pretraining):
    source, out, _ = pretraining
    model, tokenizer, _ = load_model_dir(out)
    reference = keras_hub.models.Backbone.from_preset(source)
    ids, mask, types = _batch(tokenizer, ["The cat sat on the mat.", "東京 and 😀"])
    inputs = {"token_ids": ids, "padding_mask": mask, "segment_ids": types}
    real = mask.astype(bool)
    ours = np.asarray(model.backbone(inputs)["sequence_output"])[real]
    theirs = np.asarray(reference(inputs)["sequence_output"])[real]
    # keras-hub builds every BERT with the tanh GELU; this checkpoint says "gelu" (erf).
    assert np.abs(ours - theirs).max() > 1e-4
    exact = functools.partial(keras.activations.gelu, approximate=False)
    for layer in reference.transformer_layers:
        layer._feedforward_intermediate_dense.activation = exact
    theirs = np.asarray(reference(inputs)["sequence_output"])[real]
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE)


def test_fill_mask_and_embed(pretraining):
    source, out, _ = pretraining
    lm = tflm.load(out)
    text = "the cat [MASK] on the mat."
    [[candidates]] = lm.fill_mask([text], top_k=3)
    ids = [lm.tokenizer.cls_id, *lm.tokenizer.encode([text])[0], lm.tokenizer.sep_id]
    tensors, hf_config = hf_dirs.load_tensors(source), json.load(
        open(os.path.join(source, "config.json")))
    hidden = hf_dirs.encoder_reference(tensors, hf_config, np.array([ids]))
    logits = hf_dirs.mlm_reference(tensors, hf_config, hidden)[0, ids.index(103)]
    assert [c["token_id"] for c in candidates] == list(np.argsort(-logits)[:3])
    vectors = lm.embed(["the cat", "a dog"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_bare_encoder_is_a_sentence_encoder(root):
    # BertModel: no "bert." prefix, no heads, a pooler tflm has no place for.
    source = hf_dirs.bert_dir(os.path.join(root, "bare"), mlm=False, prefix="")
    report = import_hf(source, os.path.join(root, "bare_out"))
    assert report["objective"] == "simcse" and report["head"] == {"projection": False}
    assert report["missing_heads"] == ["masked-LM (cls.predictions)"]
    assert report["tensors_not_imported"] == ["pooler.dense.bias", "pooler.dense.weight"]
    assert any("pooler" in note for note in report["notes"])
    encoder = tflm.load(os.path.join(root, "bare_out"))
    texts = ["the cat sat on the mat.", "東京 é"]
    ids, mask, _ = _batch(encoder.tokenizer, texts)
    tensors, hf_config = hf_dirs.load_tensors(source), json.load(
        open(os.path.join(source, "config.json")))
    hidden = hf_dirs.encoder_reference(tensors, hf_config, ids, mask=mask, prefix="")
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.embed(texts), expected, atol=TOLERANCE)


@pytest.mark.parametrize("mode,normalize", [("mean", True), ("cls", False), ("max", True)])
def test_sentence_transformers_pooling(root, mode, normalize):
    # A sentence-transformers directory: modules.json, 1_Pooling/config.json,
    # sentence_bert_config.json (max_seq_length 12 < the 64 positions).
    path = os.path.join(root, f"st_{mode}")
    source = hf_dirs.bert_dir(path, mlm=False, prefix="")
    os.makedirs(os.path.join(path, "1_Pooling"))
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    json.dump(modules, open(os.path.join(path, "modules.json"), "w"))
    json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": mode == "cls",
               "pooling_mode_mean_tokens": mode == "mean",
               "pooling_mode_max_tokens": mode == "max",
               "pooling_mode_mean_sqrt_len_tokens": False},
              open(os.path.join(path, "1_Pooling", "config.json"), "w"))
    json.dump({"max_seq_length": 12, "do_lower_case": False},
              open(os.path.join(path, "sentence_bert_config.json"), "w"))
    report = import_hf(source, os.path.join(root, f"st_{mode}_out"))
    pooling = {"mean": "mean", "cls": "first", "max": "max"}[mode]
    assert report["backbone"]["pooling"] == pooling
    assert report["backbone"]["max_sequence_length"] == 12
    texts = ["the cat sat on the mat and the dog sat on the log too.", "é 東京"]
    encoder = tflm.load(os.path.join(root, f"st_{mode}_out"))
    # sentence-transformers: tokenize with truncation to max_seq_length, then pool.
    ids, mask, _ = _batch(encoder.tokenizer, texts, length=12)
    tensors, hf_config = hf_dirs.load_tensors(source), json.load(
        open(os.path.join(source, "config.json")))
    hidden = hf_dirs.encoder_reference(tensors, hf_config, ids, mask=mask, prefix="")
    if mode == "mean":
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    elif mode == "cls":
        pooled = hidden[:, 0]
    else:
        pooled = np.where(mask[..., None] > 0, hidden, -1e9).max(1)
    # The model's own vectors: L2-normalised only when it has a Normalize module.
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True) if normalize else pooled
    np.testing.assert_allclose(encoder.embed(texts), expected, atol=TOLERANCE)
    assert any("normalise" in note for note in report["notes"]) is not normalize
    if not normalize:  # the exported embed keeps the lengths too, checked on export
        from tflm.export import export_model

        served = export_model(os.path.join(root, f"st_{mode}_out"),
                              os.path.join(root, f"st_{mode}_serving"))
        assert served["verification"]["within_1e-4"]
        loaded = tf.saved_model.load(served["path"])
        vectors = loaded.signatures["embed"](text=tf.constant(texts))["embedding"].numpy()
        np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_finetune_from_an_imported_bert(pretraining, root):
    _, out, _ = pretraining
    for split, count in (("train", 32), ("dev", 16)):
        with open(os.path.join(root, f"{split}.tsv"), "w") as f:
            f.write("text\tlabel\n")
            for i in range(count):
                f.write(f"{'the cat sat' if i % 2 else 'the dog ran'} on the mat\t{i % 2}\n")
    config = base_config("classification")
    config.init_from = out
    config.data.update(train=os.path.join(root, "train.tsv"),
                       validation=os.path.join(root, "dev.tsv"), seq_len=16)
    config.train.update(batch_size=8, steps=2, warmup_steps=1, eval_every=2,
                        checkpoint_every=2, eval_steps=1, log_every=1, jit_compile="off")
    summary = finetune(config, os.path.join(root, "finetuned"))
    assert np.isfinite(summary["train_loss"])
    classifier = tflm.load(summary["model_dir"])
    assert len(classifier.classify(["the cat sat on the mat"])) == 1
