"""Export of fine-tuned models (``classification``, ``regression``,
``token_classification``): a TF Serving SavedModel on raw text or a TFLite model on token
ids, each verified against ``tflm.load(dir)`` (``tflm.generation.classifier``).

SavedModel (``OUT/<name>/<version>/``, rules as ``tflm/export/saved_model.py``;
signatures in ``tflm/export/classifier_signatures.py``):

- ``classify`` (= ``serving_default``) {text (B,)[, text_pair (B,)]} -> {label (B,)
  string, label_id (B,) int32, probabilities (B, C) float32} (classification)
- ``predict`` (= ``serving_default``) {text[, text_pair]} -> {score (B,) float32}
  (regression)
- ``tag`` (= ``serving_default``) {text (B,)} -> {words, label (B, W) string, label_id
  (B, W) int32, score (B, W) float32, word_count (B,) int32} (token classification)
- ``embed`` {text (B,)} -> {embedding (B, H)}: the fine-tuned backbone's L2-normalised
  sentence vectors (``tflm/export/encoder_signatures.py``)

``text_pair`` is an input of models fine-tuned on pairs (``config.data.text_pair_column``).
TFLite: ``tflm/export/classifier_tflite.py``.

Both are checked on held-out examples (``labelled_texts``: ``config.data.validation``,
else ``config.data.train``) plus an empty and an over-long text: labels identical to
Keras and probabilities / scores within 1e-4 (else ``ExportError``), and for each
quantized TFLite variant its label agreement with float32 Keras (regression: max |diff|
and correlation); ``OUT/report.json`` holds the result.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tflm.errors import DataError, ExportError
from tflm.export.api import verification_texts
from tflm.export.classifier_signatures import SIGNATURES, ClassifierModule, head_of
from tflm.export.classifier_tflite import example_windows, run_head, write_classifier_tflite
from tflm.export.embedding_tflite import SUPPORTED_OPS, probe_sentences, variant_files, write_report
from tflm.export.encoder import embed_check, within_tolerance
from tflm.export.encoder_signatures import embed_signature
from tflm.export.saved_model import save_serving, version_path
from tflm.export.tflite import check_variants
from tflm.generation.embedding import SentenceEncoder, sentence_pooling
from tflm.models.tasks import get_objective

TOLERANCE = 1e-4  # float32 export vs Keras: probabilities, scores
MAX_EXAMPLES = 200  # examples read from each labelled file
VERIFY_EXAMPLES = 64  # held-out examples each export is checked on


def export_classifier(model, tokenizer, config, out: str, format: str = "saved_model",
                      quantize: str = "none") -> dict:
    """The export hook of the fine-tuning objectives (see ``tflm.export.api.export_model``):
    the task (``SequenceClassifier``, ``SequenceRegressor`` or ``TokenClassifier``) picks
    the signature (``classify``, ``predict`` or ``tag``).

    ``format="saved_model"`` writes ``out/<config.export.name>/<config.export.version>/``
    with that signature (also ``serving_default``) and ``embed``; ``format="tflite"``
    writes ``out/model.tflite`` (+ ``out/model_<quantize>.tflite``), ``out/tokenizer/`` and
    ``out/labels.json``. Both are verified against ``tflm.load(dir)``'s interface on
    ``labelled_texts`` and write ``out/report.json``.

    Raises:
        ExportError: the version directory exists, int8 without a readable training file,
            or an export whose labels differ from Keras or whose probabilities / scores
            differ by more than 1e-4.
    """
    head = head_of(model)
    train, held_out = labelled_texts(config, quantize)
    # What tflm.load(dir) returns: TextClassifier, TextRegressor or TokenTagger.
    interface = get_objective(config.train.objective).resolve("interface")(
        model, tokenizer, config)
    examples = verification_examples(held_out, interface)
    expected = reference_outputs(interface, head, examples)
    os.makedirs(out, exist_ok=True)
    if format == "tflite":
        return _export_tflite(interface, head, out, quantize, train, examples, expected)
    pooling = sentence_pooling(config.model.backbone.pooling)
    path = version_path(out, config.export.name, config.export.version)
    save_serving(ClassifierModule(model, tokenizer, config, pooling), path, signatures_of)
    loaded = tf.saved_model.load(path)
    check = compare(head, saved_model_outputs(loaded, head, examples), expected)
    singles = [e[0] if isinstance(e, tuple) else e for e in examples]
    check.update(embed_check(loaded, SentenceEncoder(model.backbone, tokenizer,
                                                      pooling=pooling), singles))
    check = within_tolerance(check, examples=len(examples))
    report = {"format": "saved_model", "path": path, "head": head,
              "signatures": sorted(loaded.signatures.keys()), **_facts(interface),
              "pooling": pooling, "verification": check}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    if not all(check[key] for key in _required(check)):
        raise ExportError(f"the SavedModel at {path} does not match the Keras model: "
                          f"{ {k: v for k, v in check.items() if 'texts' not in k} }")
    return report


def signatures_of(module: ClassifierModule) -> dict:
    """Signature name -> ``tf.function``: the head's (also ``serving_default``) and
    ``embed``."""
    head = SIGNATURES[module.head](module)
    return {"serving_default": head, module.head: head, "embed": embed_signature(module)}


def _facts(interface) -> dict:
    """What a client needs to know besides the signatures."""
    return {"labels": interface.labels, "pairs": interface.pairs,
            "seq_len": int(interface.config.data.seq_len)}


def labelled_texts(config, quantize: str = "none") -> tuple[list, list]:
    """``(train, held_out)`` examples (texts, ``(text, text_pair)`` tuples for a pair
    model) of ``config.data.train`` / ``config.data.validation`` (held-out: validation,
    else train; at most ``MAX_EXAMPLES`` each), labels left out. Without a readable file,
    held-out are sentences of ``verification_texts`` (the corpus, else built-in probes;
    warned).

    Raises:
        ExportError: ``quantize="int8"`` (calibration needs the training examples) and no
            readable training file.
    """
    train = _file_examples(config, "train")
    held_out = _file_examples(config, "validation") or train
    if quantize == "int8" and not train:
        raise ExportError("int8 calibration needs the training examples: "
                          f"config.data.train={config.data.train!r} cannot be read")
    if not held_out:
        logging.warning("no readable labelled file (config.data.train / validation); "
                        "verifying on corpus sentences")
        sentences = probe_sentences(verification_texts(config)[1], 2 * VERIFY_EXAMPLES)
        pairs = config.data.text_pair_column and config.train.objective != "token_classification"
        held_out = list(zip(sentences[::2], sentences[1::2])) if pairs else sentences
    return train, held_out


def _file_examples(config, split: str) -> list:
    """The examples of ``config.data[split]`` ([] when empty or unreadable, warned)."""
    from tflm.data.classification import read_examples
    from tflm.data.token_classification import read_tagged

    d = config.data
    path = os.path.expanduser(d[split])
    if not path:
        return []
    try:
        if config.train.objective == "token_classification":
            sentences, _, _ = read_tagged(path, d.text_column, d.label_column)
            return [" ".join(words) for words in sentences][:MAX_EXAMPLES]
        texts, pairs, _, _ = read_examples(path, None, d.text_column,
                                           d.text_pair_column or None, d.label_column,
                                           header=d.header)
    except (DataError, OSError) as e:
        logging.warning("config.data.%s is not readable (%s); not verifying on it", split, e)
        return []
    examples = list(zip(texts, pairs)) if pairs is not None else list(texts)
    return examples[:MAX_EXAMPLES]


def verification_examples(held_out: list, interface) -> list:
    """The first ``VERIFY_EXAMPLES`` of ``held_out`` plus an empty and an over-long text
    (cut to the window; pair models: each side of a pair over-long in turn)."""
    examples = list(held_out[:VERIFY_EXAMPLES])
    texts = [t for e in examples for t in (e if isinstance(e, tuple) else (e,))]
    words = " ".join(texts).split() or ["text"]
    seq_len = int(interface.config.data.seq_len)
    long = " ".join((words * (2 * seq_len))[:2 * seq_len])  # > seq_len tokens
    if interface.pairs:
        return [*examples, ("", ""), (long, words[0]), (words[0], long)]
    return [*examples, "", long]


def reference_outputs(interface, head: str, examples: list) -> dict:
    """The Python interface's answers on ``examples`` in ``compare``'s form."""
    if head == "classify":
        results = interface.classify(examples)
        return {"label": [r["label"] for r in results],
                "probabilities": np.asarray([[r["probabilities"][name] for name in
                                              interface.labels] for r in results])}
    if head == "predict":
        return {"score": interface.predict(examples)}
    tagged = interface.tag(examples)
    return {"words": [[w["word"] for w in t] for t in tagged],
            "label": [[w["label"] or "" for w in t] for t in tagged],
            "score": [[w["score"] or 0.0 for w in t] for t in tagged]}


def saved_model_outputs(loaded, head: str, examples: list) -> dict:
    """The loaded SavedModel's ``head`` signature on ``examples`` in ``compare``'s form."""
    if examples and isinstance(examples[0], tuple):
        inputs = {"text": tf.constant([a for a, _ in examples]),
                  "text_pair": tf.constant([b for _, b in examples])}
    else:
        inputs = {"text": tf.constant(examples)}
    out = {k: v.numpy() for k, v in loaded.signatures[head](**inputs).items()}
    if head == "classify":
        return {"label": [b.decode("utf-8") for b in out["label"]],
                "probabilities": out["probabilities"]}
    if head == "predict":
        return {"score": out["score"]}
    counts = out["word_count"]
    return {key: [[_plain(v) for v in out[key][row, :n]] for row, n in enumerate(counts)]
            for key in ("words", "label", "score")}


def _plain(value):
    """A served string (bytes) as str, a number as float."""
    return value.decode("utf-8") if isinstance(value, bytes) else float(value)


def tflite_outputs(interface, head: str, examples: list, outputs: np.ndarray,
                   first: np.ndarray | None) -> dict:
    """``run_head``'s ``outputs`` on ``example_windows(interface, examples)`` in
    ``compare``'s form (``first``: each word's first piece, for ``tag``)."""
    labels = interface.labels
    if head == "classify":
        return {"label": [labels[i] for i in outputs.argmax(-1)], "probabilities": outputs}
    if head == "predict":
        return {"score": outputs}
    result = {"words": [], "label": [], "score": []}
    for row, text in enumerate(examples):
        words = text.split()
        at = [outputs[row, p] if p >= 0 else None for p in first[row, :len(words)]]
        result["words"].append(words)
        result["label"].append([labels[int(p.argmax())] if p is not None else "" for p in at])
        result["score"].append([float(p.max()) if p is not None else 0.0 for p in at])
    return result


def compare(head: str, got: dict, want: dict) -> dict:
    """Checks of an export's answers ``got`` against the Python interface's ``want``:
    ``labels_identical``, ``label_agreement`` (the fraction of equal labels: texts or
    words), ``probabilities_max_abs_diff`` (``classify``), ``words_identical`` /
    ``score_max_abs_diff`` (``tag``), ``score_max_abs_diff`` / ``score_correlation``
    (``predict``: Pearson's r, None for constant scores)."""
    if head == "predict":
        got_score, want_score = np.asarray(got["score"]), np.asarray(want["score"])
        constant = np.std(got_score) == 0 or np.std(want_score) == 0
        return {"score_max_abs_diff": float(np.max(np.abs(got_score - want_score))),
                "score_correlation": None if constant else float(
                    np.corrcoef(got_score, want_score)[0, 1])}
    if head == "classify":
        same = np.asarray(got["label"]) == np.asarray(want["label"])
        return {"labels_identical": bool(same.all()), "label_agreement": float(same.mean()),
                "probabilities_max_abs_diff": float(np.max(np.abs(
                    got["probabilities"] - want["probabilities"])))}
    flat = [(g, w) for gs, ws in zip(got["label"], want["label"]) for g, w in zip(gs, ws)]
    scores = [abs(g - w) for gs, ws in zip(got["score"], want["score"])
              for g, w in zip(gs, ws)]
    return {"words_identical": got["words"] == want["words"],
            "labels_identical": got["label"] == want["label"],
            "label_agreement": float(np.mean([g == w for g, w in flat])) if flat else 1.0,
            "score_max_abs_diff": float(max(scores, default=0.0)),
            "words_compared": len(flat)}


def _export_tflite(interface, head: str, out: str, quantize: str, train: list,
                   examples: list, expected: dict) -> dict:
    """Writes and verifies the TFLite variants (``float32`` + ``quantize``; int8
    calibrated on ``config.export.representative_samples`` of ``train``); returns the
    report."""
    variants = check_variants((quantize,))
    calibration = None
    if "int8" in variants:
        samples = int(interface.config.export.representative_samples)
        calibration = example_windows(interface, train[:samples])[0]
    files, ops, tokenizer_dir = write_classifier_tflite(
        interface.model, interface.tokenizer, interface.config, out, variants, calibration)
    windows, first = example_windows(interface, examples)
    checks = {}
    for q, path in files.items():
        outputs, ms = run_head(path, head, windows)
        check = compare(head, tflite_outputs(interface, head, examples, outputs, first),
                        expected)
        diffs = [v for k, v in check.items() if k.endswith("max_abs_diff")]
        checks[q] = {**variant_files(files, ops, q), **check,
                     "within_1e-4": max(diffs) <= TOLERANCE, f"{head}_ms": ms}
    return write_report(out, {
        "format": "tflite", "head": head, "inputs": sorted(windows), "signatures": [head],
        **_facts(interface), "supported_ops": SUPPORTED_OPS, "tokenizer_dir": tokenizer_dir,
        "examples": len(examples), "variants": checks,
    }, what=f"{head} model", required=_required(checks["none"]))


def _required(check: dict) -> tuple[str, ...]:
    """The checks a float32 export must pass: every difference within 1e-4, labels (and
    words) identical."""
    return tuple(k for k in ("within_1e-4", "labels_identical", "words_identical")
                 if k in check)
