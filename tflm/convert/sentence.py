"""sentence-transformers directories: which pooling and normalisation a model embeds with.

A sentence-transformers directory has ``modules.json``: a ``Transformer`` (the Hugging
Face model, at the directory's root or in a sub-folder), a ``Pooling`` module with
``1_Pooling/config.json`` (``pooling_mode_cls_token`` / ``_mean_tokens`` /
``_max_tokens`` / ``_lasttoken``) and optionally ``Normalize``;
``sentence_bert_config.json`` holds ``max_seq_length`` and ``do_lower_case``. Other
modules (``Dense``, ``LayerNorm``, ...) change the embedding in ways tflm's encoders do
not, so they are refused.
"""

from __future__ import annotations

import json
import os

from tflm.convert.checkpoint import CheckpointError

MODULES_FILE = "modules.json"
SETTINGS_FILE = "sentence_bert_config.json"
# Pooling config key -> tflm backbone pooling.
POOLING_MODES = {"pooling_mode_cls_token": "first", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last"}
UNSUPPORTED_MODES = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read as JSON ({e}).") from e


def sentence_settings(directory: str) -> tuple[str, dict | None]:
    """``(model directory, settings)``: the Hugging Face model's directory and, for a
    sentence-transformers directory, ``{"pooling", "normalize", "max_seq_length",
    "do_lower_case", "modules"}`` (else None).

    Raises:
        CheckpointError: a module or pooling mode tflm cannot reproduce (named).
    """
    path = os.path.join(directory, MODULES_FILE)
    if not os.path.isfile(path):
        return directory, None
    modules = _read(path)
    model_dir, pooling, normalize = directory, None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = os.path.join(directory, module.get("path", ""))
        if kind == "Transformer":
            model_dir = where
        elif kind == "Pooling":
            pooling = _pooling(os.path.join(where, "config.json"))
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(f"{path} lists a {module.get('type')} module; tflm "
                                  "imports Transformer + Pooling (+ Normalize) "
                                  "sentence-transformers models only.")
    settings = {"pooling": pooling or "mean", "normalize": normalize,
                "modules": [m.get("type") for m in modules]}
    for folder in dict.fromkeys((model_dir, directory)):
        config = os.path.join(folder, SETTINGS_FILE)
        if os.path.isfile(config):
            values = _read(config)
            settings["max_seq_length"] = values.get("max_seq_length")
            settings["do_lower_case"] = bool(values.get("do_lower_case", False))
            break
    return model_dir, settings


def _pooling(path: str) -> str:
    config = _read(path)
    modes = [key for key, on in config.items() if key.startswith("pooling_mode") and on]
    unsupported = [m for m in modes if m in UNSUPPORTED_MODES or m not in POOLING_MODES]
    if unsupported or len(modes) != 1:
        raise CheckpointError(f"{path}: pooling modes {modes} are not supported; tflm pools "
                              "with exactly one of "
                              f"{', '.join(POOLING_MODES)}.")
    if config.get("include_prompt") is False:
        raise CheckpointError(f"{path}: include_prompt=false is not supported.")
    return POOLING_MODES[modes[0]]
