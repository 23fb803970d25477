"""Run configuration: defaults of every section, validation, file loading, JSON round trip.

A run is described by one ``ml_collections.ConfigDict`` with four sections:

- ``model``: exactly the constructor arguments of the model class (``GPT(**config.model)``).
- ``data``: corpus, tokenizer and input pipeline.
- ``train``: objective, strategy, optimizer, schedule, checkpoints, monitoring.
- ``export``: SavedModel / TFLite export options.

``configs/*.py`` files start from :func:`base_config` and override what differs. The
result is locked: reading or writing a misspelled key fails, naming the valid keys.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from typing import Any

import ml_collections

from tflm.errors import ConfigError

SECTIONS = ("model", "data", "train", "export")

# Keys whose value must be one of a fixed set.
CHOICES = {
    "model.activation": ("gelu_approximate", "gelu"),
    "model.position_embedding": ("learned", "sinusoidal", "rotary"),
    "data.tokenizer": ("bpe", "wordpiece", "sentencepiece"),
    "data.corpus_format": ("auto", "text", "jsonl", "wikitext"),
    "data.document_split": ("blank_line", "file"),
    "data.invalid_utf8": ("replace", "strict"),
    "data.remainder": ("drop", "pad"),
    "train.objective": ("causal_lm",),
    "train.strategy": ("auto", "default", "mirrored", "multi_worker", "tpu"),
    "train.lr_decay": ("cosine", "linear", "constant"),
    "train.precision": ("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    "train.jit_compile": ("auto", "on", "off"),
    "export.quantize": ("none", "float16", "dynamic_int8", "int8"),
}


def model_section() -> ml_collections.ConfigDict:
    """The GPT model defaults: the ``gpt_mini`` shape."""
    return ml_collections.ConfigDict(
        {
            "vocabulary_size": 8192,
            "num_layers": 4,
            "hidden_dim": 256,
            "num_heads": 4,
            "intermediate_dim": 1024,
            "max_sequence_length": 128,
            "dropout": 0.0,
            "causal": True,
            "norm_first": True,
            "activation": "gelu_approximate",
            "position_embedding": "learned",
            "layer_norm_epsilon": 1e-5,
            "use_bias": True,
            "tie_embeddings": True,
        }
    )


def data_section() -> ml_collections.ConfigDict:
    """Corpus, tokenizer and pipeline defaults."""
    return ml_collections.ConfigDict(
        {
            # "builtin", a WikiText name ("wikitext-2", "wikitext-103", "-raw" variants),
            # or a path / directory / glob of .txt, .txt.gz or .jsonl files.
            "corpus": "builtin",
            "corpus_format": "auto",
            "text_field": "text",
            "document_split": "blank_line",
            "invalid_utf8": "replace",
            # Download a named corpus (WikiText) if it is not in cache_dir.
            "download": False,
            "download_url": "",
            # Where corpora, trained tokenizers and token caches are kept.
            "cache_dir": os.path.join("~", ".cache", "tflm"),
            "tokenizer": "bpe",
            # A saved tokenizer directory to use instead of training one.
            "tokenizer_dir": "",
            "lowercase": False,
            "seq_len": 128,
            "remainder": "drop",
            "seed": 0,
            "mask_rate": 0.15,
            "max_predictions": 20,
            "whole_word_masking": False,
        }
    )


def train_section() -> ml_collections.ConfigDict:
    """Trainer defaults: AdamW with warm-up then cosine decay, like the usual GPT recipes."""
    return ml_collections.ConfigDict(
        {
            "objective": "causal_lm",
            "strategy": "auto",
            "tpu_address": "",
            # Global batch size, split across replicas.
            "batch_size": 16,
            "steps": 1000,
            "grad_accum_steps": 1,
            "learning_rate": 1e-3,
            "warmup_steps": 500,
            "lr_decay": "cosine",
            "min_lr_ratio": 0.1,
            "weight_decay": 0.1,
            # Variables whose path contains one of these get no weight decay.
            "no_decay": ("bias", "norm", "embedding"),
            "beta_1": 0.9,
            "beta_2": 0.95,
            "epsilon": 1e-8,
            "clip_norm": 1.0,
            "precision": "auto",
            "jit_compile": "auto",
            "seed": 0,
            "eval_every": 200,
            "eval_steps": 20,
            "log_every": 20,
            "checkpoint_every": 100,
            "keep_checkpoints": 3,
            "sample_every": 500,
            "sample_prompts": ("The", "A function"),
            "sample_tokens": 32,
        }
    )


def export_section() -> ml_collections.ConfigDict:
    """Export defaults."""
    return ml_collections.ConfigDict(
        {
            "name": "tflm",
            "version": 1,
            "quantize": "none",
            "max_new_tokens": 64,
            "representative_samples": 64,
        }
    )


def base_config() -> ml_collections.ConfigDict:
    """All four sections with their defaults, unlocked, for a ``configs/*.py`` to edit."""
    return ml_collections.ConfigDict(
        {
            "model": model_section(),
            "data": data_section(),
            "train": train_section(),
            "export": export_section(),
        }
    )


def suggest_keys(key: str, valid) -> str:
    """' Did you mean X? Valid keys: ...' for an error message about ``key``."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid keys: {', '.join(sorted(valid))}."


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks sections, keys and values against the defaults; returns the config locked.

    Raises:
        ConfigError: naming the key and the valid keys or values.
    """
    reference = base_config()
    for section in config.keys():
        if section not in SECTIONS:
            raise ConfigError(
                f"Unknown config section '{section}'.{suggest_keys(section, SECTIONS)}"
            )
    for section in SECTIONS:
        if section not in config:
            raise ConfigError(f"The config has no '{section}' section; start from "
                              "tflm.config.base_config().")
        valid = reference[section].keys()
        for key in config[section].keys():
            if key not in valid:
                raise ConfigError(
                    f"Unknown config key '{section}.{key}'.{suggest_keys(key, valid)}"
                )
    for path, options in CHOICES.items():
        section, key = path.split(".")
        value = config[section].get(key)
        if value not in options:
            raise ConfigError(
                f"config.{path} = {value!r} is not one of {', '.join(map(repr, options))}."
            )
    m, d, t = config.model, config.data, config.train
    if m.hidden_dim % m.num_heads:
        raise ConfigError(
            f"config.model.hidden_dim ({m.hidden_dim}) must be divisible by "
            f"config.model.num_heads ({m.num_heads})."
        )
    if d.seq_len > m.max_sequence_length:
        raise ConfigError(
            f"config.data.seq_len ({d.seq_len}) exceeds config.model.max_sequence_length "
            f"({m.max_sequence_length}); lower seq_len or raise max_sequence_length."
        )
    for key in ("batch_size", "steps", "grad_accum_steps", "eval_every", "log_every",
                "checkpoint_every"):
        if t[key] < 1:
            raise ConfigError(f"config.train.{key} must be >= 1, got {t[key]}.")
    if not 0.0 < d.mask_rate < 1.0:
        raise ConfigError(f"config.data.mask_rate must be in (0, 1), got {d.mask_rate}.")
    config.lock()
    return config


def load_config(path: str) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of a ``configs/*.py`` file and validates the result.

    Raises:
        ConfigError: the file is missing, has no ``get_config`` or an invalid config.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"Config file '{path}' does not exist; pass e.g. "
                          "--config=configs/gpt_mini.py.")
    spec = importlib.util.spec_from_file_location("tflm_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file '{path}' defines no get_config() function.")
    return validate(module.get_config())


def _plain(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """The config as plain Python containers (tuples become lists)."""
    return _plain(config)


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """JSON text that :func:`config_from_json` turns back into an equal config."""
    return json.dumps(config_to_dict(config), indent=2, sort_keys=True)


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
    """Rebuilds a validated config from :func:`config_to_dict` output.

    Lists are turned back into tuples where the default is a tuple, so the result
    equals the original config.
    """
    config = base_config()
    for section, entries in values.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"Unknown config section '{section}'.{suggest_keys(section, SECTIONS)}"
            )
        for key, value in entries.items():
            if key not in config[section]:
                raise ConfigError(
                    f"Unknown config key '{section}.{key}'."
                    f"{suggest_keys(key, config[section].keys())}"
                )
            if isinstance(config[section][key], tuple) and isinstance(value, list):
                value = tuple(value)
            config[section][key] = value
    return validate(config)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_json`."""
    return config_from_dict(json.loads(text))


def save_config(config: ml_collections.ConfigDict, path: str) -> None:
    """Writes ``config`` as JSON to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(config_to_json(config) + "\n")


def read_config(path: str) -> ml_collections.ConfigDict:
    """Reads a ``config.json`` written by :func:`save_config`.

    Raises:
        ConfigError: the file is missing or not valid JSON.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"'{path}' does not exist: it is not a tflm run or model "
                          "directory.")
    try:
        with open(path, encoding="utf-8") as f:
            return config_from_json(f.read())
    except json.JSONDecodeError as e:
        raise ConfigError(f"'{path}' is not valid JSON ({e}); it may have been cut "
                          "off: restore it or rerun.") from e
