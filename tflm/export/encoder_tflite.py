"""TFLite export of a masked LM's encoder: built-in ops only, quantized variants, verified
against Keras on masked token windows of held-out text.

Signatures (fixed shapes: batch 1, window S = ``max_sequence_length``, P mask positions
= ``config.data.max_predictions``; ``tflm/export/encoder_signatures.py``):

- ``encode`` {token_ids, padding_mask, segment_ids int32 (1, S)} -> {sequence_output
  float32 (1, S, H), pooled_output float32 (1, H)}
- ``mlm`` {token_ids, padding_mask, segment_ids (1, S), mask_positions int32 (1, P)} ->
  {logits float32 (1, P, V)}

Inputs are laid out as in pre-training: ``[CLS] ids [SEP]``, right padding, segment 0,
masked tokens replaced by the mask id. Conversion, the builtin-op check and the op list
are ``tflm/export/tflite.py``'s; the output directory is laid out the same way.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from tflm.errors import ExportError
from tflm.export import encoder_signatures
from tflm.export.saved_model import ModelModule
from tflm.export.tflite import (
    check_variants,
    save_frozen,
    save_tokenizer_copy,
    write_variants,
)

SIGNATURE_KEYS = ("encode", "mlm")
TOLERANCE = 1e-4  # float32 TFLite vs Keras: logits, hidden states
EVAL_WINDOWS = 32
MASK_RATE = 0.15


def save_encoder_signatures(model, predictions: int, path: str) -> str:
    """Writes a SavedModel holding only the frozen, fixed-shape TFLite signatures."""
    module = ModelModule(model)
    return save_frozen({
        "encode": encoder_signatures.encoder_ids_signature(module, 1, module.window),
        "mlm": encoder_signatures.mlm_signature(module, predictions, 1, module.window),
    }, path)


def masked_windows(tokenizer, texts: list[str], window: int, predictions: int,
                   num_windows: int, seed: int = 0) -> dict:
    """Token windows of ``texts`` laid out for the encoder, with masks.

    The texts' ids, joined by ``[SEP]``, are cut into blocks of ``window - 2`` and written
    as ``[CLS] block [SEP]`` (right padding, id 0). In each window ``MASK_RATE`` of the
    block tokens (1 to ``predictions``, drawn from ``seed``) are replaced by the mask id.

    Returns:
        numpy int32: ``token_ids``, ``padding_mask``, ``segment_ids`` (N, window),
        ``mask_positions`` (N, predictions) (unused slots 0), ``num_masks`` (N,).
    """
    stream = []
    for ids in tokenizer.encode(list(texts)):
        stream += [*ids, tokenizer.sep_id]
    rng = np.random.default_rng(seed)
    block = window - 2
    rows = []
    for start in range(0, len(stream), block):
        chunk = stream[start:start + block]
        if len(chunk) < 2 or len(rows) == num_windows:
            break
        rows.append([tokenizer.cls_id, *chunk, tokenizer.sep_id])
    n = len(rows)
    out = {name: np.zeros((n, window), np.int32)
           for name in ("token_ids", "padding_mask", "segment_ids")}
    out["mask_positions"] = np.zeros((n, predictions), np.int32)
    out["num_masks"] = np.zeros(n, np.int32)
    for i, row in enumerate(rows):
        count = int(np.clip(round(MASK_RATE * (len(row) - 2)), 1, predictions))
        positions = np.sort(rng.choice(np.arange(1, len(row) - 1), count, replace=False))
        row = np.asarray(row, np.int32)
        row[positions] = tokenizer.mask_id
        out["token_ids"][i, :len(row)], out["padding_mask"][i, :len(row)] = row, 1
        out["mask_positions"][i, :count], out["num_masks"][i] = positions, count
    return out


def keras_outputs(model, windows: dict, batch: int = 8):
    """The Keras model's float32 (logits (N, P, V), sequence_output (N, S, H), pooled
    (N, H)) on ``masked_windows``."""
    logits, sequence, pooled = [], [], []
    for i in range(0, len(windows["token_ids"]), batch):
        x = {k: windows[k][i:i + batch] for k in ("token_ids", "padding_mask", "segment_ids")}
        out = model.backbone(x)
        logits.append(np.asarray(model.mlm_head(out["sequence_output"],
                                                windows["mask_positions"][i:i + batch])))
        sequence.append(np.asarray(out["sequence_output"]))
        pooled.append(np.asarray(out["pooled_output"]))
    return tuple(np.concatenate(a).astype(np.float32) for a in (logits, sequence, pooled))


def representative_dataset(windows: dict):
    """A calibration generator for full int8: ``(signature_key, inputs)`` per window."""
    def generate():
        for i in range(len(windows["token_ids"])):
            x = {k: windows[k][i:i + 1] for k in ("token_ids", "padding_mask", "segment_ids")}
            yield "encode", x
            yield "mlm", {**x, "mask_positions": windows["mask_positions"][i:i + 1]}

    return generate


def run_tflite(path: str, windows: dict):
    """(logits (N, P, V), sequence_output (N, S, H), pooled (N, H), median ``mlm`` ms) of
    the ``.tflite`` file at ``path``, one window at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    encode, mlm = (interpreter.get_signature_runner(k) for k in SIGNATURE_KEYS)
    logits, sequence, pooled, times = [], [], [], []
    for i in range(len(windows["token_ids"])):
        x = {k: windows[k][i:i + 1] for k in ("token_ids", "padding_mask", "segment_ids")}
        start = time.perf_counter()
        logits.append(mlm(**x, mask_positions=windows["mask_positions"][i:i + 1])["logits"])
        times.append(time.perf_counter() - start)
        out = encode(**x)
        sequence.append(out["sequence_output"])
        pooled.append(out["pooled_output"])
    return (*(np.concatenate(a) for a in (logits, sequence, pooled)),
            1e3 * float(np.median(times)))


def verify_encoder_variants(files: dict, ops: dict, model, windows: dict) -> dict:
    """Per variant (quantize -> path): size, ops, max |difference| of logits (real mask
    slots), hidden states (real tokens) and pooled output against Keras, top-1 agreement
    at the masked positions, and the median latency of one ``mlm`` call."""
    keras_logits, keras_sequence, keras_pooled = keras_outputs(model, windows)
    slots = np.arange(keras_logits.shape[1]) < windows["num_masks"][:, None]  # (N, P)
    tokens = windows["padding_mask"].astype(bool)  # (N, S)
    keras_top1 = keras_logits.argmax(-1)[slots]
    fp32_size = os.path.getsize(files["none"])
    report = {}
    for q, path in files.items():
        logits, sequence, pooled, ms = run_tflite(path, windows)
        diffs = {
            "logits_max_abs_diff": float(np.max(np.abs(logits - keras_logits)[slots])),
            "sequence_output_max_abs_diff": float(np.max(
                np.abs(sequence - keras_sequence)[tokens])),
            "pooled_max_abs_diff": float(np.max(np.abs(pooled - keras_pooled))),
        }
        report[q] = {
            "file": os.path.basename(path),
            "size_bytes": os.path.getsize(path),
            "size_ratio_to_float32": os.path.getsize(path) / fp32_size,
            "ops": ops[q],
            "flex_ops": [],
            **diffs,
            "within_1e-4": max(diffs.values()) <= TOLERANCE,
            "top1_agreement": float(np.mean(logits.argmax(-1)[slots] == keras_top1)),
            "positions": int(slots.sum()),
            "mlm_ms": ms,
        }
    return report


def export_encoder_tflite(
    model,
    tokenizer,
    out: str,
    predictions: int,
    quantize: tuple[str, ...] | list[str] = ("none",),
    calibration_texts: list[str] | None = None,
    eval_texts: list[str] | None = None,
    representative_samples: int = 64,
) -> dict:
    """Writes the float32 encoder plus each ``quantize`` variant, verifies them on
    ``masked_windows`` of ``eval_texts``, writes ``out/report.json``; returns the report.

    Args:
        model, tokenizer: a ``tflm.models.BertPretrainer`` and its tokenizer.
        out: output directory.
        predictions: P, the mask positions of the ``mlm`` signature.
        quantize: variants among ``tflm.export.tflite.QUANTIZATIONS`` (float32 always).
        calibration_texts: training-corpus texts for the int8 representative dataset.
        eval_texts: held-out texts for the comparison with Keras.
        representative_samples: calibration windows for int8.

    Raises:
        ExportError: conversion fails, a Flex op appears, or float32 does not match Keras.
    """
    variants = check_variants(quantize)
    eval_texts = eval_texts or calibration_texts
    if not eval_texts:
        raise ExportError("TFLite verification needs held-out texts (eval_texts)")
    window = int(model.max_sequence_length)
    tokenizer_dir = save_tokenizer_copy(tokenizer, out)
    with tempfile.TemporaryDirectory(prefix="tflm_tflite_") as tmp:
        saved = save_encoder_signatures(model, predictions, os.path.join(tmp, "saved_model"))
        representative = None
        if "int8" in variants:
            representative = representative_dataset(masked_windows(
                tokenizer, calibration_texts or eval_texts, window, predictions,
                representative_samples, seed=1))
        files, ops = write_variants(saved, out, variants, SIGNATURE_KEYS, representative)
    windows = masked_windows(tokenizer, eval_texts, window, predictions, EVAL_WINDOWS)
    report = {
        "format": "tflite",
        "window": window,
        "predictions": predictions,
        "signatures": list(SIGNATURE_KEYS),
        "supported_ops": "TFLITE_BUILTINS (+ TFLITE_BUILTINS_INT8 for int8); no Flex",
        "tokenizer_dir": tokenizer_dir,
        "variants": verify_encoder_variants(files, ops, model, windows),
    }
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    fp32 = report["variants"]["none"]
    if not fp32["within_1e-4"]:
        raise ExportError(
            f"the float32 TFLite encoder does not match Keras (max |logit diff| "
            f"{fp32['logits_max_abs_diff']:.2e}, hidden "
            f"{fp32['sequence_output_max_abs_diff']:.2e}); see {out}/report.json"
        )
    return report
