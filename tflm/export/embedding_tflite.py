"""TFLite ``embed`` export of any encoder, and what every fixed-shape TFLite export of an
encoder-style model shares: the output directory, per-variant file facts, the report.

Signature (batch 1, window S = ``max_sequence_length``;
``tflm/export/encoder_signatures.py``):

- ``embed`` {token_ids, padding_mask int32 (1, S)} -> {embedding float32 (1, H)}: the
  L2-normalised sentence vector, laid out as ``SentenceEncoder.token_ids`` (``[CLS] ids
  [SEP]`` or the ids, right padding)

``export_embedding_tflite`` writes it alone (encoders without a masked-LM head: ELECTRA's
discriminator, SimCSE); ``tflm/export/encoder_tflite.py`` adds it to the masked LM's
``encode`` / ``mlm``. Conversion, the builtin-op check and the op list are
``tflm/export/tflite.py``'s; the output directory is laid out the same way.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np
from absl import logging

from tflm.errors import ExportError
from tflm.export import encoder_signatures
from tflm.export.saved_model import ModelModule
from tflm.export.tflite import check_variants, save_frozen, save_tokenizer_copy, write_variants
from tflm.generation.embedding import SentenceEncoder

EMBED_KEYS = ("embed",)
TOLERANCE = 1e-4  # float32 TFLite vs Keras: logits, hidden states, embeddings
EVAL_SENTENCES = 32
# Mean cosine of a variant's embeddings to float32 Keras below which it is reported
# (``embed_cosine_ok`` false) and warned about.
EMBED_COSINE_FLOOR = {"none": 0.9999, "float16": 0.999, "dynamic_int8": 0.99, "int8": 0.95}
SUPPORTED_OPS = "TFLITE_BUILTINS (+ TFLITE_BUILTINS_INT8 for int8); no Flex"


def probe_sentences(texts: list[str], count: int = EVAL_SENTENCES) -> list[str]:
    """Up to ``count`` sentences of ``texts`` (split after . ! ? and at line ends): texts
    of mixed lengths, as embedding inputs are; whole texts if none splits."""
    pieces = [p.strip() for t in texts for p in re.split(r"(?<=[.!?])\s+|\n", t)]
    return [p for p in pieces if p][:count] or list(texts)[:count]


def sentence_windows(encoder: SentenceEncoder, texts: list[str]) -> dict:
    """``{token_ids, padding_mask}`` int32 (N, S) of ``encoder.token_ids(texts)``, right
    padded with the pad id to the model's window S."""
    from tflm import special_ids

    sequences = encoder.token_ids(texts)
    window = int(encoder.backbone.max_sequence_length)
    tokens = np.full((len(sequences), window), special_ids.pad_id(encoder.tokenizer), np.int32)
    mask = np.zeros((len(sequences), window), np.int32)
    for row, ids in enumerate(sequences):
        tokens[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    return {"token_ids": tokens, "padding_mask": mask}


def window_representative(windows: dict, key: str):
    """A calibration generator for full int8: ``(key, inputs)`` per row of ``windows``
    (name -> (N, ...) array), each input a batch of 1."""
    def generate():
        for i in range(len(windows["token_ids"])):
            yield key, {name: values[i:i + 1] for name, values in windows.items()}

    return generate


def run_embed(path: str, windows: dict) -> np.ndarray:
    """(N, H) ``embed`` outputs of the ``.tflite`` file at ``path``, one row at a time."""
    from ai_edge_litert.interpreter import Interpreter

    embed = Interpreter(model_path=path).get_signature_runner("embed")
    return np.concatenate([embed(**{k: v[i:i + 1] for k, v in windows.items()})["embedding"]
                           for i in range(len(windows["token_ids"]))])


def verify_embed_variants(files: dict, encoder: SentenceEncoder, texts: list[str]) -> dict:
    """Per variant: ``embed_max_abs_diff`` and ``embed_mean_cosine`` / ``embed_min_cosine``
    of its ``embed`` against ``encoder.embed`` (float32 Keras) on ``texts``,
    ``embed_cosine_floor`` (``EMBED_COSINE_FLOOR``) and ``embed_cosine_ok``."""
    expected = encoder.embed(texts)
    windows = sentence_windows(encoder, texts)
    report = {}
    for q, path in files.items():
        got = run_embed(path, windows)
        cosine = np.sum(got * expected, axis=1) / np.maximum(
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-12)
        report[q] = {
            "embed_max_abs_diff": float(np.max(np.abs(got - expected))),
            "embed_mean_cosine": float(np.mean(cosine)),
            "embed_min_cosine": float(np.min(cosine)),
            "embed_cosine_floor": EMBED_COSINE_FLOOR[q],
            "embed_cosine_ok": bool(np.mean(cosine) >= EMBED_COSINE_FLOOR[q]),
            "embed_sentences": len(texts),
        }
        if not report[q]["embed_cosine_ok"]:
            logging.warning("the %s TFLite embeddings have mean cosine %.4f to float32 "
                            "Keras, below the floor %s; prefer another variant.", q,
                            report[q]["embed_mean_cosine"], EMBED_COSINE_FLOOR[q])
    return report


def variant_files(files: dict, ops: dict, q: str) -> dict:
    """Variant ``q``'s ``file``, ``size_bytes``, ``size_ratio_to_float32``, ``ops`` and
    ``flex_ops`` (none: ``write_variants`` rejects them)."""
    size = os.path.getsize(files[q])
    return {"file": os.path.basename(files[q]), "size_bytes": size,
            "size_ratio_to_float32": size / os.path.getsize(files["none"]), "ops": ops[q],
            "flex_ops": []}


def held_out_texts(eval_texts, calibration_texts) -> list:
    """``eval_texts``, else ``calibration_texts``.

    Raises:
        ExportError: neither holds a text.
    """
    texts = eval_texts or calibration_texts
    if not texts:
        raise ExportError("TFLite verification needs held-out texts (eval_texts)")
    return texts


def write_tflite(out: str, tokenizer, variants: list[str], keys: tuple[str, ...],
                 representative, save):
    """``(files, ops, tokenizer_dir)``: the tokenizer copied to ``out/tokenizer``, the
    signatures ``save(path)`` writes converted once per variant (``write_variants``;
    ``representative`` calibrates int8: None without it)."""
    tokenizer_dir = save_tokenizer_copy(tokenizer, out)
    with tempfile.TemporaryDirectory(prefix="tflm_tflite_") as tmp:
        saved = save(os.path.join(tmp, "saved_model"))
        files, ops = write_variants(saved, out, variants, keys, representative)
    return files, ops, tokenizer_dir


def write_report(out: str, report: dict, what: str = "encoder",
                 required: tuple[str, ...] = ("within_1e-4",)) -> dict:
    """Writes ``out/report.json``; returns ``report``.

    Raises:
        ExportError: a ``required`` check of the float32 variant is false (float32 does
            not match Keras); the message names ``what`` was exported.
    """
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    fp32 = report["variants"]["none"]
    failed = [key for key in required if not fp32[key]]
    if failed:
        diffs = {k: f"{v:.2e}" for k, v in fp32.items() if k.endswith("max_abs_diff")}
        raise ExportError(f"the float32 TFLite {what} does not match Keras (max |diff| "
                          f"{diffs}; failed {failed}); see {out}/report.json")
    return report


def export_embedding_tflite(
    backbone,
    tokenizer,
    out: str,
    pooling: str | None = None,
    quantize: tuple[str, ...] | list[str] = ("none",),
    calibration_texts: list[str] | None = None,
    eval_texts: list[str] | None = None,
    representative_samples: int = 64,
    normalize: bool = True,
) -> dict:
    """Writes a float32 ``embed``-only TFLite model of ``backbone`` plus each ``quantize``
    variant, verifies them against ``SentenceEncoder.embed`` on ``probe_sentences`` of
    ``eval_texts``, writes ``out/report.json``; returns the report.

    Args:
        backbone, tokenizer: a ``tflm.models.TransformerBackbone`` (e.g. an ELECTRA
            discriminator, a SimCSE encoder) and its tokenizer.
        out: output directory.
        pooling: ``embed``'s pooling (None: ``sentence_pooling`` of the backbone's).
        quantize: variants among ``tflm.export.tflite.QUANTIZATIONS`` (float32 always).
        calibration_texts: training-corpus texts for the int8 representative dataset.
        eval_texts: held-out texts for the comparison with Keras.
        representative_samples: calibration sentences for int8.
        normalize: ``embed`` L2-normalises its vectors.

    Raises:
        ExportError: conversion fails, a Flex op appears, or float32 does not match Keras.
    """
    variants = check_variants(quantize)
    eval_texts = held_out_texts(eval_texts, calibration_texts)
    window = int(backbone.max_sequence_length)
    encoder = SentenceEncoder(backbone, tokenizer, pooling=pooling, normalize=normalize)
    representative = None
    if "int8" in variants:
        representative = window_representative(sentence_windows(encoder, probe_sentences(
            calibration_texts or eval_texts, representative_samples)), "embed")

    def save(path):
        module = ModelModule(backbone)
        return save_frozen({"embed": encoder_signatures.embed_ids_signature(
            module, encoder.pooling, 1, window, encoder.normalize)}, path)

    files, ops, tokenizer_dir = write_tflite(out, tokenizer, variants, EMBED_KEYS,
                                             representative, save)
    embeds = verify_embed_variants(files, encoder, probe_sentences(eval_texts))
    checks = {q: {**variant_files(files, ops, q), **embeds[q],
                  "within_1e-4": embeds[q]["embed_max_abs_diff"] <= TOLERANCE}
              for q in files}
    return write_report(out, {
        "format": "tflite",
        "window": window,
        "pooling": encoder.pooling,
        "signatures": list(EMBED_KEYS),
        "supported_ops": SUPPORTED_OPS,
        "tokenizer_dir": tokenizer_dir,
        "variants": checks,
    })
