"""TFLite export of a fine-tuned model: its head on token ids, built-in ops only, batch 1.

Signatures (fixed shapes: batch 1, window S = ``config.data.seq_len``;
``tflm/export/classifier_signatures.py: ids_signature``), inputs {token_ids,
padding_mask[, segment_ids] int32 (1, S)} (``segment_ids`` only for a backbone with
segments) laid out as ``tflm.generation.classifier`` lays them out (``example_windows``):

- ``classify`` -> {probabilities float32 (1, C)} (class i = ``labels.json``'s i-th)
- ``predict`` -> {score float32 (1,)}
- ``tag`` -> {probabilities float32 (1, S, C)}: a word's tag is read at its first piece
  (``tflm.data.token_classification.encode_words``)

Output directory as ``tflm/export/tflite.py``'s, plus ``OUT/labels.json`` (classes and
tags). Verification and the report are ``tflm/export/classifier.py``'s.
"""

from __future__ import annotations

import time

import numpy as np

from tflm.data.classification import save_labels
from tflm.data.token_classification import encode_words
from tflm.export.classifier_signatures import ClassifierModule, head_of, ids_signature
from tflm.export.embedding_tflite import window_representative, write_tflite
from tflm.export.tflite import save_frozen


def example_windows(interface, examples: list) -> tuple[dict, np.ndarray | None]:
    """``(windows, first)``: the TFLite inputs (N, S) of ``examples`` as ``interface`` (a
    ``tflm.generation.classifier`` object) lays them out, and for a ``TokenTagger`` each
    word's first-piece position (N, W) (-1: cut off; else None)."""
    from tflm.generation.classifier import TokenTagger

    if not isinstance(interface, TokenTagger):
        return interface.features(examples), None
    token_ids, mask, first = encode_words(interface.tokenizer, [t.split() for t in examples],
                                          interface.config.data.seq_len)
    windows = {"token_ids": token_ids, "padding_mask": mask}
    if interface.model.backbone.num_segments:
        windows["segment_ids"] = np.zeros_like(token_ids)
    return windows, first


def write_classifier_tflite(model, tokenizer, config, out: str, variants: list[str],
                            calibration: dict | None = None):
    """Writes ``out/model.tflite`` + one file per other variant (``write_variants``),
    ``out/tokenizer/`` and (with labels) ``out/labels.json``; returns ``(files, ops,
    tokenizer_dir)``. ``calibration``: ``example_windows`` of training examples for int8.

    Raises:
        ExportError: a conversion fails or a variant has a non-builtin op.
    """
    head = head_of(model)
    representative = None if calibration is None else window_representative(calibration,
                                                                             head)
    if getattr(model, "labels", ()):
        save_labels(model.labels, out)

    def save(path):
        module = ClassifierModule(model, tokenizer, config)
        try:
            return save_frozen({head: ids_signature(module, batch=1)}, path)
        finally:
            module.cleanup()

    return write_tflite(out, tokenizer, variants, (head,), representative, save)


def run_head(path: str, head: str, windows: dict) -> tuple[np.ndarray, float]:
    """``(outputs, ms)``: the ``head`` signature of the ``.tflite`` file at ``path`` on
    each row of ``windows`` (probabilities (N, C) / (N, S, C), or scores (N,)), and the
    median milliseconds of one call."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner(head)
    key = "score" if head == "predict" else "probabilities"
    outputs, times = [], []
    for i in range(len(windows["token_ids"])):
        start = time.perf_counter()
        outputs.append(runner(**{k: v[i:i + 1] for k, v in windows.items()})[key])
        times.append(time.perf_counter() - start)
    return np.concatenate(outputs), 1e3 * float(np.median(times))
