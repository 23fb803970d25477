"""Masked-LM (encoder) export: a TF Serving SavedModel with ``fill_mask`` / ``encode`` on
strings, or a TFLite encoder, each verified against the Keras model.

SavedModel layout and rules as ``tflm/export/saved_model.py`` (``OUT/<name>/<version>/``,
versions immutable, tokenizer in the graph, loads with only ``tensorflow`` +
``tensorflow_text``); signatures in ``tflm/export/encoder_signatures.py``:

- ``fill_mask`` {text (B,), top_k ()} -> {token_ids (B, M, K), scores (B, M, K),
  mask_count (B,)}
- ``encode`` = ``serving_default`` {text (B,)} -> {pooled (B, H), sequence_output (B, S, H),
  lengths (B,)}

TFLite (``tflm/export/encoder_tflite.py``): ``encode`` and ``mlm`` on token ids, batch 1.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tflm.errors import ExportError
from tflm.export import encoder_signatures
from tflm.export.api import verification_texts
from tflm.export.encoder_signatures import EncoderModule
from tflm.export.encoder_tflite import export_encoder_tflite
from tflm.export.saved_model import save_serving, version_path

TOLERANCE = 1e-4  # float32 export vs Keras: probabilities, hidden states, logits
VERIFY_TOP_K = 5


def export_masked_lm(model, tokenizer, config, out: str, format: str = "saved_model",
                     quantize: str = "none") -> dict:
    """The ``masked_lm`` objective's export hook (see ``tflm.export.api.export_model``).

    ``format="saved_model"`` writes ``out/<config.export.name>/<config.export.version>/``
    (``fill_mask``, ``encode``, ``serving_default`` = ``encode``); ``format="tflite"``
    writes ``out/model.tflite`` (+ ``out/model_<quantize>.tflite``) with ``encode`` and
    ``mlm`` signatures (``config.data.max_predictions`` mask positions) and
    ``out/tokenizer/``. Both verify against the Keras model on held-out texts of the
    training corpus and write ``out/report.json``.

    Raises:
        ExportError: the version directory exists, int8 without a readable corpus, or an
            export that does not match the Keras model.
    """
    train_texts, held_out = verification_texts(config, quantize)
    os.makedirs(out, exist_ok=True)
    if format == "tflite":
        return export_encoder_tflite(
            model, tokenizer, out, predictions=int(config.data.max_predictions),
            quantize=(quantize,), calibration_texts=train_texts, eval_texts=held_out,
            representative_samples=int(config.export.representative_samples),
        )
    path = export_encoder_saved_model(model, tokenizer, out, name=config.export.name,
                                      version=config.export.version)
    report = {"format": "saved_model", "path": path,
              "signatures": ["encode", "fill_mask", "serving_default"],
              "verification": verify_encoder_saved_model(path, model, tokenizer, held_out)}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    check = report["verification"]
    if not (check["fill_mask_ids_identical"] and check["encode_lengths_identical"]
            and check["within_1e-4"]):
        raise ExportError(f"the SavedModel at {path} does not match the Keras model: "
                          f"{ {k: v for k, v in check.items() if k != 'probe_texts'} }")
    return report


def encoder_signatures_of(module: EncoderModule) -> dict:
    """Signature name -> ``tf.function`` for a masked LM."""
    encode = encoder_signatures.encode_signature(module)
    return {"serving_default": encode, "encode": encode,
            "fill_mask": encoder_signatures.fill_mask_signature(module)}


def export_encoder_saved_model(model, tokenizer, out: str, name: str = "tflm",
                               version: int = 1) -> str:
    """Writes the masked LM's SavedModel to ``out/<name>/<version>/``; returns the path.

    Raises:
        ExportError: the version directory is not empty, or saving fails.
    """
    path = version_path(out, name, version)
    return save_serving(EncoderModule(model, tokenizer), path, encoder_signatures_of)


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
                               top_k: int = VERIFY_TOP_K) -> dict:
    """Loads the SavedModel at ``path`` and compares ``fill_mask`` and ``encode`` with
    ``tflm.generation.masked_lm.MaskedLanguageModel`` on probes of ``texts``.

    Returns a dict: ``fill_mask_ids_identical`` (top-k ids and mask counts),
    ``fill_mask_scores_max_abs_diff``, ``encode_pooled_max_abs_diff``,
    ``encode_hidden_max_abs_diff`` (real tokens), ``encode_lengths_identical``,
    ``within_1e-4`` (every difference) and the ``probe_texts``.
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
    lengths = [len(ids) for ids in encoded.token_ids]
    hidden_diff = max(float(np.max(np.abs(out["sequence_output"][row, :n] - hidden)))
                      for row, (n, hidden) in enumerate(zip(lengths, encoded.hidden_states)))
    pooled_diff = float(np.max(np.abs(out["pooled"] - encoded.pooled)))
    return {
        "fill_mask_ids_identical": bool(identical),
        "fill_mask_scores_max_abs_diff": score_diff,
        "encode_pooled_max_abs_diff": pooled_diff,
        "encode_hidden_max_abs_diff": hidden_diff,
        "encode_lengths_identical": out["lengths"].tolist() == lengths,
        "within_1e-4": max(score_diff, hidden_diff, pooled_diff) <= TOLERANCE,
        "probe_texts": probes,
    }
