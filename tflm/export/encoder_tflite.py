"""TFLite export of an encoder: built-in ops only, quantized variants, verified against
Keras on masked token windows of held-out text and against ``SentenceEncoder.embed`` on
held-out sentences.

Signatures (fixed shapes: batch 1, window S = ``max_sequence_length``, P mask positions
= ``config.data.max_predictions``; ``tflm/export/encoder_signatures.py``):

- ``encode`` {token_ids, padding_mask, segment_ids int32 (1, S)} -> {sequence_output
  float32 (1, S, H), pooled_output float32 (1, H)} (masked LM)
- ``mlm`` {token_ids, padding_mask, segment_ids (1, S), mask_positions int32 (1, P)} ->
  {logits float32 (1, P, V)} (masked LM)
- ``embed`` {token_ids, padding_mask int32 (1, S)} -> {embedding float32 (1, H)}: the
  L2-normalised sentence vector (every encoder: ``tflm/export/embedding_tflite.py``,
  which also holds the output directory and report helpers used here)

Inputs are laid out as in pre-training: ``[CLS] ids [SEP]``, right padding, segment 0
(``mlm``: masked tokens replaced by the mask id; ``embed``:
``SentenceEncoder.token_ids``). Conversion, the builtin-op check and the op list are
``tflm/export/tflite.py``'s; the output directory is laid out the same way.
"""

from __future__ import annotations

import time

import numpy as np

from tflm.export import encoder_signatures
from tflm.export.embedding_tflite import (
    SUPPORTED_OPS,
    TOLERANCE,
    held_out_texts,
    probe_sentences,
    variant_files,
    verify_embed_variants,
    write_report,
    write_tflite,
)

# Re-exported: tflm.export.encoder and tests import them from here.
from tflm.export.embedding_tflite import export_embedding_tflite as export_embedding_tflite
from tflm.export.embedding_tflite import sentence_windows as sentence_windows
from tflm.export.saved_model import ModelModule
from tflm.export.tflite import check_variants, save_frozen
from tflm.generation.embedding import SentenceEncoder

SIGNATURE_KEYS = ("encode", "mlm", "embed")
EVAL_WINDOWS = 32
MASK_RATE = 0.15


def save_encoder_signatures(model, predictions: int, path: str, pooling: str) -> str:
    """Writes a SavedModel holding only the frozen, fixed-shape TFLite signatures."""
    module = ModelModule(model)
    return save_frozen({
        "encode": encoder_signatures.encoder_ids_signature(module, 1, module.window),
        "mlm": encoder_signatures.mlm_signature(module, predictions, 1, module.window),
        "embed": encoder_signatures.embed_ids_signature(module, pooling, 1, module.window),
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


def representative_dataset(windows: dict, keys: tuple[str, ...] = SIGNATURE_KEYS):
    """A calibration generator for full int8: ``(signature_key, inputs)`` per window and
    signature of ``keys``."""
    def generate():
        for i in range(len(windows["token_ids"])):
            x = {k: windows[k][i:i + 1] for k in ("token_ids", "padding_mask", "segment_ids")
                 if k in windows}
            if "encode" in keys:
                yield "encode", x
            if "mlm" in keys:
                yield "mlm", {**x, "mask_positions": windows["mask_positions"][i:i + 1]}
            if "embed" in keys:
                yield "embed", {k: x[k] for k in ("token_ids", "padding_mask")}

    return generate


def run_tflite(path: str, windows: dict):
    """(logits (N, P, V), sequence_output (N, S, H), pooled (N, H), median ``mlm`` ms) of
    the ``.tflite`` file at ``path``, one window at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    encode, mlm = (interpreter.get_signature_runner(k) for k in ("encode", "mlm"))
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
            **variant_files(files, ops, q),
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
    pooling: str | None = None,
) -> dict:
    """Writes the float32 masked-LM encoder (``encode``, ``mlm``, ``embed``) plus each
    ``quantize`` variant, verifies them on ``masked_windows`` and ``probe_sentences`` of
    ``eval_texts``, writes ``out/report.json``; returns the report.

    Args:
        model, tokenizer: a ``tflm.models.BertPretrainer`` and its tokenizer.
        out: output directory.
        predictions: P, the mask positions of the ``mlm`` signature.
        quantize: variants among ``tflm.export.tflite.QUANTIZATIONS`` (float32 always).
        calibration_texts: training-corpus texts for the int8 representative dataset.
        eval_texts: held-out texts for the comparison with Keras.
        representative_samples: calibration windows for int8.
        pooling: ``embed``'s pooling (None: ``sentence_pooling`` of the backbone's).

    Raises:
        ExportError: conversion fails, a Flex op appears, or float32 does not match Keras.
    """
    variants = check_variants(quantize)
    eval_texts = held_out_texts(eval_texts, calibration_texts)
    window = int(model.max_sequence_length)
    encoder = SentenceEncoder(model.backbone, tokenizer, pooling=pooling)
    representative = None
    if "int8" in variants:
        representative = representative_dataset(masked_windows(
            tokenizer, calibration_texts or eval_texts, window, predictions,
            representative_samples, seed=1))
    files, ops, tokenizer_dir = write_tflite(
        out, tokenizer, variants, SIGNATURE_KEYS, representative,
        lambda path: save_encoder_signatures(model, predictions, path, encoder.pooling))
    windows = masked_windows(tokenizer, eval_texts, window, predictions, EVAL_WINDOWS)
    checks = verify_encoder_variants(files, ops, model, windows)
    embeds = verify_embed_variants(files, encoder, probe_sentences(eval_texts))
    for q, check in checks.items():
        check.update(embeds[q])
        check["within_1e-4"] &= check["embed_max_abs_diff"] <= TOLERANCE
    return write_report(out, {
        "format": "tflite",
        "window": window,
        "predictions": predictions,
        "pooling": encoder.pooling,
        "signatures": list(SIGNATURE_KEYS),
        "supported_ops": SUPPORTED_OPS,
        "tokenizer_dir": tokenizer_dir,
        "variants": checks,
    })
