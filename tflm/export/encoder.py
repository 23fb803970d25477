"""Encoder export: a TF Serving SavedModel with ``fill_mask`` / ``encode`` / ``embed`` on
strings, or a TFLite encoder, each verified against the Keras model and
``SentenceEncoder``.

SavedModel layout and rules as ``tflm/export/saved_model.py`` (``OUT/<name>/<version>/``,
versions immutable, tokenizer in the graph, loads with only ``tensorflow`` +
``tensorflow_text``); signatures in ``tflm/export/encoder_signatures.py``:

- ``fill_mask`` {text (B,), top_k ()} -> {token_ids (B, M, K), scores (B, M, K),
  mask_count (B,)} (masked LM)
- ``encode`` {text (B,)} -> {pooled (B, H), sequence_output (B, S, H), lengths (B,)}
  (``serving_default`` of a masked LM)
- ``embed`` {text (B,)} -> {embedding (B, H)}: L2-normalised sentence vectors, pooled by
  ``tflm.generation.embedding.sentence_pooling`` of ``config.model.backbone.pooling``
  (``serving_default`` of ``export_sentence_encoder``)

TFLite (``tflm/export/encoder_tflite.py``): ``encode``, ``mlm`` and ``embed`` on token ids,
batch 1 (``export_sentence_encoder``: ``embed`` only).

Two export hooks: ``export_masked_lm`` (``masked_lm``) and ``export_sentence_encoder``
(any task with a ``backbone`` and no masked-LM head: ELECTRA's discriminator, SimCSE).
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tflm.errors import ExportError
from tflm.export import encoder_signatures
from tflm.export.api import verification_texts
from tflm.export.encoder_signatures import EncoderModule, SentenceModule
from tflm.export.encoder_tflite import (
    export_embedding_tflite,
    export_encoder_tflite,
    probe_sentences,
)
from tflm.export.saved_model import save_serving, version_path
from tflm.generation.embedding import SentenceEncoder, sentence_normalize, sentence_pooling

TOLERANCE = 1e-4  # float32 export vs Keras: probabilities, hidden states, logits, vectors
VERIFY_TOP_K = 5
MASKED_LM_SIGNATURES = ("embed", "encode", "fill_mask", "serving_default")
SENTENCE_SIGNATURES = ("embed", "encode", "serving_default")


def export_masked_lm(model, tokenizer, config, out: str, format: str = "saved_model",
                     quantize: str = "none") -> dict:
    """The ``masked_lm`` objective's export hook (see ``tflm.export.api.export_model``).

    ``format="saved_model"`` writes ``out/<config.export.name>/<config.export.version>/``
    (``fill_mask``, ``encode``, ``embed``, ``serving_default`` = ``encode``);
    ``format="tflite"`` writes ``out/model.tflite`` (+ ``out/model_<quantize>.tflite``)
    with ``encode``, ``mlm`` (``config.data.max_predictions`` mask positions) and
    ``embed`` signatures and ``out/tokenizer/``. Both verify against the Keras model and
    ``SentenceEncoder`` on held-out texts of the training corpus and write
    ``out/report.json``.

    Raises:
        ExportError: the version directory exists, int8 without a readable corpus, or an
            export that does not match the Keras model.
    """
    train_texts, held_out = verification_texts(config, quantize)
    pooling = sentence_pooling(config.model.backbone.pooling)
    os.makedirs(out, exist_ok=True)
    if format == "tflite":
        return export_encoder_tflite(
            model, tokenizer, out, predictions=int(config.data.max_predictions),
            quantize=(quantize,), calibration_texts=train_texts, eval_texts=held_out,
            representative_samples=int(config.export.representative_samples),
            pooling=pooling,
        )
    path = export_encoder_saved_model(model, tokenizer, out, name=config.export.name,
                                      version=config.export.version, pooling=pooling)
    check = verify_encoder_saved_model(path, model, tokenizer, held_out, pooling=pooling)
    return _saved_model_report(out, path, pooling, MASKED_LM_SIGNATURES, check,
                               check["fill_mask_ids_identical"]
                               and check["encode_lengths_identical"] and check["within_1e-4"])


def export_sentence_encoder(model, tokenizer, config, out: str, format: str = "saved_model",
                            quantize: str = "none") -> dict:
    """The export hook of encoders without a masked-LM head (ELECTRA's discriminator,
    SimCSE): only ``model.backbone`` is exported (see ``tflm.export.api.export_model``).

    ``format="saved_model"`` writes ``out/<config.export.name>/<config.export.version>/``
    with ``embed`` (= ``serving_default``) and ``encode``; ``format="tflite"`` writes
    ``out/model.tflite`` (+ ``out/model_<quantize>.tflite``) with ``embed`` and
    ``out/tokenizer/``. The pooling is ``sentence_pooling(config.model.backbone.pooling)``,
    as ``SentenceEncoder.from_model_dir``'s. Both verify against ``SentenceEncoder`` (and
    ``encode`` against the backbone) on held-out texts and write ``out/report.json``.

    Raises:
        ExportError: the version directory exists, int8 without a readable corpus, or an
            export that does not match the Keras model.
    """
    train_texts, held_out = verification_texts(config, quantize)
    pooling = sentence_pooling(config.model.backbone.pooling)
    normalize = sentence_normalize(config)
    os.makedirs(out, exist_ok=True)
    if format == "tflite":
        return export_embedding_tflite(
            model.backbone, tokenizer, out, pooling=pooling, quantize=(quantize,),
            calibration_texts=train_texts, eval_texts=held_out,
            representative_samples=int(config.export.representative_samples),
            normalize=normalize)
    path = version_path(out, config.export.name, config.export.version)
    save_serving(SentenceModule(model.backbone, tokenizer, pooling, normalize), path,
                 sentence_signatures_of)
    check = verify_sentence_saved_model(path, model.backbone, tokenizer, held_out, pooling,
                                        normalize)
    return _saved_model_report(out, path, pooling, SENTENCE_SIGNATURES, check,
                               check["encode_lengths_identical"] and check["within_1e-4"])


def _saved_model_report(out: str, path: str, pooling: str, signatures: tuple[str, ...],
                        check: dict, ok: bool) -> dict:
    """Writes ``out/report.json``; raises ExportError unless ``ok``."""
    report = {"format": "saved_model", "path": path, "pooling": pooling,
              "signatures": list(signatures), "verification": check}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    if not ok:
        raise ExportError(f"the SavedModel at {path} does not match the Keras model: "
                          f"{ {k: v for k, v in check.items() if 'texts' not in k} }")
    return report


def encoder_signatures_of(module: EncoderModule) -> dict:
    """Signature name -> ``tf.function`` for a masked LM."""
    encode = encoder_signatures.encode_signature(module)
    return {"serving_default": encode, "encode": encode,
            "fill_mask": encoder_signatures.fill_mask_signature(module),
            "embed": encoder_signatures.embed_signature(module)}


def sentence_signatures_of(module: SentenceModule) -> dict:
    """Signature name -> ``tf.function`` for an encoder without a masked-LM head."""
    embed = encoder_signatures.embed_signature(module)
    return {"serving_default": embed, "embed": embed,
            "encode": encoder_signatures.encode_signature(module)}


def export_encoder_saved_model(model, tokenizer, out: str, name: str = "tflm",
                               version: int = 1, pooling: str | None = None) -> str:
    """Writes the masked LM's SavedModel to ``out/<name>/<version>/``; returns the path.
    ``pooling``: ``embed``'s (None: ``sentence_pooling`` of the backbone's).

    Raises:
        ExportError: the version directory is not empty, or saving fails.
    """
    path = version_path(out, name, version)
    return save_serving(EncoderModule(model, tokenizer, pooling), path,
                        encoder_signatures_of)


def masked_probe_texts(texts: list[str], token: str, count: int = 6,
                       words: int = 8) -> list[str]:
    """Fill-mask probes from ``texts``: the first ``words`` words of ``count`` texts with
    1, 2 or 3 of them replaced by the mask token ``token``, plus one whole text (longer
    than most windows) with its second word masked."""
    texts = [t.split() for t in texts if len(t.split()) >= 4]
    probes = []
    for i, text in enumerate(texts[:count]):
        chosen = text[:words]
        for index in (1, 3, 6)[:i % 3 + 1]:
            if index < len(chosen):
                chosen[index] = token
        probes.append(" ".join(chosen))
    if texts:
        probes.append(" ".join([texts[0][0], token, *texts[0][2:]]))
    return probes or [f"The {token} is here ."]


def verify_encoder_saved_model(path: str, model, tokenizer, texts: list[str],
                               top_k: int = VERIFY_TOP_K, pooling: str | None = None) -> dict:
    """Loads the SavedModel at ``path`` and compares ``fill_mask`` and ``encode`` with
    ``tflm.generation.masked_lm.MaskedLanguageModel`` on probes of ``texts``, ``embed``
    with ``SentenceEncoder.embed`` (``pooling``) on the probes and sentences of ``texts``.

    Returns a dict: ``fill_mask_ids_identical`` (top-k ids and mask counts),
    ``fill_mask_scores_max_abs_diff``, ``encode_pooled_max_abs_diff``,
    ``encode_hidden_max_abs_diff`` (real tokens), ``encode_lengths_identical``,
    ``embed_max_abs_diff``, ``within_1e-4`` (every difference), the ``probe_texts`` and
    ``embed_texts``.
    """
    from tflm.generation.masked_lm import MaskedLanguageModel
    from tflm.text.masks import mask_token

    probes = masked_probe_texts(texts, mask_token(tokenizer))
    lm = MaskedLanguageModel(model, tokenizer)
    loaded = tf.saved_model.load(path)
    text = tf.constant(probes)
    served = {k: v.numpy() for k, v in loaded.signatures["fill_mask"](
        text=text, top_k=tf.constant(top_k)).items()}
    identical, score_diff = True, 0.0
    for row, masks in enumerate(lm.fill_mask(probes, top_k)):
        identical &= int(served["mask_count"][row]) == len(masks)
        for slot, best in enumerate(masks):
            identical &= served["token_ids"][row, slot].tolist() == [b["token_id"] for b in best]
            scores = np.asarray([b["score"] for b in best])
            score_diff = max(score_diff, float(np.max(np.abs(
                served["scores"][row, slot, :len(scores)] - scores))))
    encoded = lm.encode(probes)
    out = {k: v.numpy() for k, v in loaded.signatures["encode"](text=text).items()}
    check = {"fill_mask_ids_identical": bool(identical),
             "fill_mask_scores_max_abs_diff": score_diff,
             **_encode_check(out, encoded.token_ids, encoded.hidden_states, encoded.pooled)}
    encoder = SentenceEncoder(model.backbone, tokenizer, pooling=pooling)
    check.update(embed_check(loaded, encoder, probes + probe_sentences(texts, 8)))
    return within_tolerance(check, probe_texts=probes)


def verify_sentence_saved_model(path: str, backbone, tokenizer, texts: list[str],
                                pooling: str | None = None, normalize: bool = True) -> dict:
    """Loads the SavedModel at ``path`` and compares ``embed`` with
    ``SentenceEncoder.embed`` (``pooling``) and ``encode`` with the backbone called on the
    same ids, on sentences of ``texts`` and one whole text (cut to the window).

    Returns a dict: ``encode_pooled_max_abs_diff``, ``encode_hidden_max_abs_diff``,
    ``encode_lengths_identical``, ``embed_max_abs_diff``, ``within_1e-4`` and the
    ``embed_texts``.
    """
    encoder = SentenceEncoder(backbone, tokenizer, pooling=pooling, normalize=normalize)
    probes = probe_sentences(texts, 16) + list(texts[:1])
    loaded = tf.saved_model.load(path)
    out = {k: v.numpy() for k, v in loaded.signatures["encode"](
        text=tf.constant(probes)).items()}
    sequences = encoder.token_ids(probes)
    hidden, pooled = [], []
    for ids in sequences:  # one unpadded call per text
        direct = backbone({"token_ids": np.asarray([ids], np.int32)})
        hidden.append(np.asarray(direct["sequence_output"], np.float32)[0])
        pooled.append(np.asarray(direct["pooled_output"], np.float32)[0])
    check = _encode_check(out, sequences, hidden, np.stack(pooled))
    check.update(embed_check(loaded, encoder, probes))
    return within_tolerance(check)


def _encode_check(out: dict, sequences, hidden_states, pooled) -> dict:
    """``encode``'s outputs ``out`` against the hidden states and pooled vectors of the
    laid-out ``sequences``."""
    lengths = [len(ids) for ids in sequences]
    hidden_diff = max(float(np.max(np.abs(out["sequence_output"][row, :n] - hidden)))
                      for row, (n, hidden) in enumerate(zip(lengths, hidden_states)))
    return {"encode_pooled_max_abs_diff": float(np.max(np.abs(out["pooled"] - pooled))),
            "encode_hidden_max_abs_diff": hidden_diff,
            "encode_lengths_identical": out["lengths"].tolist() == lengths}


def embed_check(loaded, encoder: SentenceEncoder, texts: list[str]) -> dict:
    """``embed`` of the loaded SavedModel against ``encoder.embed`` on ``texts``."""
    served = loaded.signatures["embed"](text=tf.constant(texts))["embedding"].numpy()
    return {"embed_max_abs_diff": float(np.max(np.abs(served - encoder.embed(texts)))),
            "embed_pooling": encoder.pooling, "embed_texts": texts}


def within_tolerance(check: dict, **extra) -> dict:
    """``check`` with ``within_1e-4`` (every ``*_max_abs_diff``) and ``extra`` added."""
    diffs = [v for k, v in check.items() if k.endswith("max_abs_diff")]
    return {**check, "within_1e-4": max(diffs) <= TOLERANCE, **extra}
