"""LiteRT (TFLite) export: convert with built-in ops only, quantize, verify, report.

The ``.tflite`` file has three signatures with fixed shapes (batch 1, window S =
``max_sequence_length``; see ``tflm/export/signatures.py``):

- ``logits`` {token_ids, padding_mask (1, S)} -> {logits (1, S, V)}
- ``prefill`` {token_ids (1, S), length ()} -> {logits (1, V), cache_0 ... cache_{L-1}}
- ``decode`` {token_id (1, 1), index (), cache_i} -> {logits (1, V), cache_i}

with one KV-cache tensor (1, 2, S, H, D) per layer as explicit inputs and outputs, so a
device generates token by token. Only
``TFLITE_BUILTINS`` (+ ``TFLITE_BUILTINS_INT8`` for full int8) are allowed: no Flex ops,
so the file runs on the plain LiteRT runtime. Keras' ``slice_update`` (XLA
``DynamicUpdateSlice``) converts to the builtin ``DYNAMIC_UPDATE_SLICE``, and the GPT
default activation (tanh GELU) to the builtin ``GELU``; the model's 6-D cache is split
per layer (a list of caches given to ``call_with_cache``) because TFLite kernels stop
at 5-D.

Output directory::

    OUT/model.tflite              float32
    OUT/model_<quantize>.tflite   float16 | dynamic_int8 | int8
    OUT/tokenizer/                the tokenizer assets (for export/run_tflite.py)
    OUT/report.json               ops, sizes, latency, agreement with Keras
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from tflm.errors import ExportError
from tflm.export import reference, signatures
from tflm.export.saved_model import ModelModule
from tflm.export.tflite_verify import verify_variants

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
SIGNATURE_KEYS = ("logits", "prefill", "decode")


def file_name(quantize: str) -> str:
    """``model.tflite`` for float32, ``model_<quantize>.tflite`` otherwise."""
    return "model.tflite" if quantize == "none" else f"model_{quantize}.tflite"


def save_tflite_signatures(model, path: str) -> str:
    """Writes a SavedModel holding only the fixed-shape TFLite signatures; returns path."""
    module = ModelModule(model)
    functions = {
        "logits": signatures.logits_signature(module, batch=1, length=module.window),
        "prefill": signatures.prefill_signature(module),
        "decode": signatures.decode_signature(module),
    }
    return save_frozen(functions, path)


def save_frozen(functions: dict, path: str) -> str:
    """Writes a SavedModel whose signatures are ``functions`` (name -> ``tf.function``
    with an ``input_signature``, returning a dict) with their variables frozen; returns
    ``path``."""
    # Weights as constants: the TFLite converter otherwise keeps Keras' variables as
    # resource variables (VAR_HANDLE / READ_VARIABLE ops) that int8 calibration rejects.
    frozen = {key: _frozen(fn) for key, fn in functions.items()}
    tf.saved_model.save(tf.Module(), path, signatures=frozen)
    return path


def _frozen(fn):
    """``fn`` (a ``tf.function`` returning a dict) with its variables as constants."""
    concrete = fn.get_concrete_function()
    names = sorted(concrete.structured_outputs)  # the flat output order of a dict
    constant = convert_variables_to_constants_v2(concrete)

    @tf.function(input_signature=fn.input_signature)
    def named(*args):
        return dict(zip(names, tf.nest.flatten(constant(*args))))

    return named


def representative_dataset(model, tokenizer, texts: list[str], num_samples: int):
    """A calibration generator for full int8: ``(signature_key, inputs)`` for each signature.

    Inputs are token windows of ``texts`` (the training corpus), and the caches the Keras
    model computes for them, so every activation range is seen on real data.
    """
    window = int(model.max_sequence_length)
    ids, mask = reference.token_windows(tokenizer, texts, window, num_windows=num_samples)

    def generate():
        for row, row_mask in zip(ids, mask):
            length = int(row_mask.sum())
            x = row[None]
            yield "logits", {"token_ids": x, "padding_mask": row_mask[None]}
            yield "prefill", {"token_ids": x, "length": np.int32(length)}
            index = max(length // 2, 1)
            _, cache = model.call_with_cache(x[:, :index], model.init_cache(1, window), 0)
            cache = np.asarray(cache, np.float32)  # (1, L, 2, S, H, D)
            yield "decode", {"token_id": x[:, index:index + 1], "index": np.int32(index),
                             **{f"cache_{i}": cache[:, i] for i in range(cache.shape[1])}}

    return generate


def convert(saved_model_dir: str, quantize: str = "none", representative=None,
            signature_keys: tuple[str, ...] = SIGNATURE_KEYS) -> bytes:
    """Converts the ``signature_keys`` of ``saved_model_dir`` with built-in ops only.

    Raises:
        ExportError: an unknown ``quantize``, int8 without a representative dataset, or a
            model op that has no TFLite builtin (the message names it).
    """
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=list(signature_keys)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if representative is None:
            raise ExportError("quantize='int8' needs a representative dataset of token "
                              "windows from the training corpus (config.data)")
        converter.representative_dataset = representative
        # int8 kernels where they exist; float builtins for the rest (e.g. the cache I/O).
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    try:
        content = converter.convert()
    except Exception as e:  # the converter raises ConverterError / RuntimeError variants
        raise ExportError(
            f"TFLite conversion ({quantize}) with built-in ops only failed: {e}. A model op "
            "has no TFLite builtin; use activation='gelu_approximate' and keras.ops only"
        ) from e
    return share_tied_embedding(content) if quantize == "dynamic_int8" else content


def _builtin_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}


def _op_name(model, op, builtin: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode("utf-8")
    # builtin codes >= 127 live in builtinCode, older ones in the deprecated field
    return builtin[max(code.builtinCode, code.deprecatedBuiltinCode)]


def share_tied_embedding(content: bytes) -> bytes:
    """Makes the LM head reuse the token table's int8 copy (dynamic-range int8 only).

    With tied embeddings the converter quantizes the (V, hidden) table twice: per-tensor
    for the embedding ``GATHER``, per-channel for the LM-head ``FULLY_CONNECTED``. Pointing
    the head at the gather's buffer (per-tensor scale, which the hybrid kernel supports)
    drops one copy: about 1/3 of the file for a GPT-2 style vocabulary. Only weights whose
    dequantized values match the gathered table (to int8 rounding) are shared.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    builtin = _builtin_names()

    def dequantized(tensor):
        data = model.buffers[tensor.buffer].data
        if data is None or tensor.quantization is None or tensor.type != 9:  # 9: INT8
            return None
        values = np.frombuffer(bytes(data), np.int8).astype(np.float32).reshape(tensor.shape)
        scale = np.asarray(tensor.quantization.scale, np.float32)
        return values * (scale[:, None] if scale.size > 1 else scale)

    for graph in model.subgraphs:
        ops = [(_op_name(model, op, builtin), op) for op in graph.operators]
        tables = [graph.tensors[op.inputs[0]] for name, op in ops if name == "GATHER"]
        for name, op in ops:
            if name != "FULLY_CONNECTED":
                continue
            weights = graph.tensors[op.inputs[1]]
            for table in tables:
                a, b = dequantized(table), dequantized(weights)
                if a is None or b is None or a.shape != b.shape or a.ndim != 2:
                    continue
                step = float(np.max(table.quantization.scale))
                if np.max(np.abs(a - b)) <= step:
                    weights.buffer, weights.quantization = table.buffer, table.quantization
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    for i, buffer in enumerate(model.buffers):
        if i not in used:
            buffer.data = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_names(content: bytes) -> list[str]:
    """Sorted distinct op names used by any signature (subgraph) of a ``.tflite`` model;
    builtin ops by their ``BuiltinOperator`` name, custom / Flex ops by their code."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    builtin = _builtin_names()
    names = {_op_name(model, op, builtin) for g in model.subgraphs for op in g.operators}
    return sorted(names)


def flex_ops(names: list[str]) -> list[str]:
    """The ops that need the Flex (TF Select) delegate or a custom op resolver."""
    # Builtin ops are named like FULLY_CONNECTED; custom ops by their custom code.
    return [n for n in names if n.startswith("Flex") or not re.fullmatch(r"[A-Z0-9_]+", n)]


def check_variants(variants) -> list[str]:
    """``["none"]`` + the other distinct ``variants`` (float32 is always written).

    Raises:
        ExportError: a variant not in ``QUANTIZATIONS``.
    """
    variants = ["none"] + [q for q in dict.fromkeys(variants) if q != "none"]
    for q in variants:
        if q not in QUANTIZATIONS:
            raise ExportError(f"quantize={q!r} is not one of {QUANTIZATIONS}")
    return variants


def save_tokenizer_copy(tokenizer, out: str) -> str:
    """Writes the tokenizer's assets to ``out/tokenizer`` (for on-device runners)."""
    os.makedirs(out, exist_ok=True)
    return type(tokenizer)(tokenizer.assets, tokenizer.options).save(
        os.path.join(out, "tokenizer"))


def write_variants(saved_model_dir: str, out: str, variants: list[str],
                   signature_keys: tuple[str, ...], representative=None):
    """Converts ``signature_keys`` of ``saved_model_dir`` once per variant and writes
    ``out/<file_name(variant)>``; returns ``(files, ops)``, both keyed by variant.

    Raises:
        ExportError: a conversion fails or a variant has a Flex / custom op.
    """
    files, ops = {}, {}
    for q in variants:
        content = convert(saved_model_dir, q, representative if q == "int8" else None,
                          signature_keys)
        ops[q] = op_names(content)
        bad = flex_ops(ops[q])
        if bad:
            raise ExportError(f"the {q} TFLite model uses non-builtin ops {bad}")
        files[q] = os.path.join(out, file_name(q))
        with open(files[q], "wb") as f:
            f.write(content)
    return files, ops


def export_tflite(
    model,
    tokenizer,
    out: str,
    quantize: tuple[str, ...] | list[str] = ("none",),
    calibration_texts: list[str] | None = None,
    eval_texts: list[str] | None = None,
    representative_samples: int = 64,
) -> dict:
    """Writes the float32 model plus each ``quantize`` variant, verifies them, writes
    ``out/report.json`` and returns the report.

    Args:
        model, tokenizer: the Keras GPT and its ``tflm.text.Tokenizer``.
        out: output directory.
        quantize: variants among ``QUANTIZATIONS``; float32 is always written (the
            reference the others are compared with and what ``decode`` latency is
            measured against).
        calibration_texts: training-corpus texts for the int8 representative dataset.
        eval_texts: held-out texts for agreement / perplexity.
        representative_samples: calibration windows for int8.

    Raises:
        ExportError: conversion fails, a Flex op appears, or float32 does not match Keras.
    """
    variants = check_variants(quantize)
    eval_texts = eval_texts or calibration_texts
    if not eval_texts:
        raise ExportError("TFLite verification needs held-out texts (eval_texts)")
    tokenizer_dir = save_tokenizer_copy(tokenizer, out)
    with tempfile.TemporaryDirectory(prefix="tflm_tflite_") as tmp:
        saved = save_tflite_signatures(model, os.path.join(tmp, "saved_model"))
        representative = None
        if "int8" in variants:
            representative = representative_dataset(
                model, tokenizer, calibration_texts or eval_texts, representative_samples
            )
        files, ops = write_variants(saved, out, variants, SIGNATURE_KEYS, representative)
    report = {
        "format": "tflite",
        "window": int(model.max_sequence_length),
        "signatures": list(SIGNATURE_KEYS),
        "supported_ops": "TFLITE_BUILTINS (+ TFLITE_BUILTINS_INT8 for int8); no Flex",
        "tokenizer_dir": tokenizer_dir,
        "variants": verify_variants(files, ops, model, tokenizer, eval_texts),
    }
    fp32 = report["variants"]["none"]
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    if not (fp32["logits_within_1e-4"] and fp32["greedy_token_identical"]):
        raise ExportError(
            f"the float32 TFLite model does not match Keras (max |logit diff| "
            f"{fp32['logits_max_abs_diff']:.2e}, greedy identical "
            f"{fp32['greedy_token_identical']}); see {out}/report.json"
        )
    return report
