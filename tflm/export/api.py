"""``export_model``: a model directory -> SavedModel (TF Serving) or TFLite, plus a report."""

from __future__ import annotations

import json
import os

from absl import logging

from tflm.errors import DataError, ExportError
from tflm.export.saved_model import export_saved_model, verify_saved_model
from tflm.export.tflite import QUANTIZATIONS, export_tflite

FORMATS = ("saved_model", "tflite")
# Probe texts when the training corpus cannot be read (verification only).
_PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Return the number of items in a container.",
    "A function is defined with the def statement.",
]


def corpus_texts(config, max_documents: int = 200) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` documents of ``config.data``'s corpus (held-out: validation,
    else test). Raises DataError when the corpus cannot be read."""
    from tflm.data.corpus import load_corpus

    corpus = load_corpus(config.data)
    train = corpus.documents("train")[:max_documents]
    held_out = corpus.documents("validation") or corpus.documents("test")
    return train, held_out[:max_documents] or train


def verification_texts(config, quantize: str = "none") -> tuple[list[str], list[str]]:
    """``corpus_texts(config)``, or built-in probe texts (warned) when the corpus cannot
    be read.

    Raises:
        ExportError: ``quantize="int8"`` (calibration needs the corpus) and an unreadable
            corpus.
    """
    try:
        return corpus_texts(config)
    except DataError as e:
        if quantize == "int8":
            raise ExportError(f"int8 calibration needs the training corpus: {e}") from e
        logging.warning("corpus unreadable (%s); verifying on built-in probe texts", e)
        return _PROBE_TEXTS, _PROBE_TEXTS


def export_model(model_dir: str, out: str, format: str = "saved_model",
                 quantize: str = "none") -> dict:
    """Exports the model directory ``model_dir`` to ``out``; returns the report.

    The directory's objective exports it (its ``export`` hook in ``tflm.models.tasks``;
    :func:`export_causal_lm` for ``causal_lm``). Every export writes ``out/report.json``:
    equality with the Keras model and, for TFLite, ops, sizes, latency, top-1 agreement
    and perplexity change of each variant.

    Args:
        model_dir: a directory written by ``tflm.model_dir.save_model_dir``.
        out: output directory.
        format: ``"saved_model"`` or ``"tflite"``.
        quantize: ``"none" | "float16" | "dynamic_int8" | "int8"`` (TFLite only).

    Raises:
        ExportError: bad format / quantize, an objective that cannot be exported, or an
            export that does not match the Keras model.
        ModelDirError, TokenizerError: ``model_dir`` cannot be loaded.
    """
    from tflm.model_dir import load_model_dir
    from tflm.models.tasks import get_objective

    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not one of {FORMATS}")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not one of {QUANTIZATIONS}")
    if format == "saved_model" and quantize != "none":
        raise ExportError("quantization applies to TFLite only; use --format=tflite "
                          f"--quantize={quantize}")
    model, tokenizer, config = load_model_dir(model_dir)
    objective = get_objective(config.train.objective)
    exporter = objective.resolve("export")
    if exporter is None:
        raise ExportError(f"models of objective {objective.name!r} cannot be exported yet "
                          "(its registry entry has no export); nothing was written.")
    return exporter(model, tokenizer, config, out, format=format, quantize=quantize)


def export_causal_lm(model, tokenizer, config, out: str, format: str = "saved_model",
                     quantize: str = "none") -> dict:
    """The ``causal_lm`` objective's export hook (see :func:`export_model`).

    ``format="saved_model"`` writes ``out/<config.export.name>/<config.export.version>/``
    (TF Serving layout, tokenizer in the graph; ``generate``, ``score``, ``logits``
    signatures); ``format="tflite"`` writes ``out/model.tflite`` (+
    ``out/model_<quantize>.tflite``) and ``out/tokenizer/``.

    Raises:
        ExportError: int8 without a readable training corpus, or a SavedModel that does
            not match the Keras model.
    """
    train_texts, held_out = verification_texts(config, quantize)
    os.makedirs(out, exist_ok=True)
    if format == "tflite":
        return export_tflite(
            model, tokenizer, out, quantize=(quantize,), calibration_texts=train_texts,
            eval_texts=held_out,
            representative_samples=int(config.export.representative_samples),
        )
    defaults = {"max_new_tokens": int(config.export.max_new_tokens)}
    path = export_saved_model(model, tokenizer, out, name=config.export.name,
                              version=config.export.version, generate_defaults=defaults)
    report = {"format": "saved_model", "path": path,
              "verification": verify_saved_model(path, model, tokenizer, held_out)}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    check = report["verification"]
    if not (check["logits_within_1e-4"] and check["greedy_token_identical"]):
        raise ExportError(f"the SavedModel at {path} does not match the Keras model: {check}")
    return report
