"""Run configuration: defaults of every section, validation, file loading, JSON round trip.

A run is described by one ``ml_collections.ConfigDict`` with four sections:

- ``model``: the task's constructor arguments. ``model.backbone`` holds exactly
  ``TransformerBackbone``'s arguments; the task's head arguments sit beside it, so the
  task is ``Task(backbone=TransformerBackbone(**model.backbone), **head)``
  (``tflm.model_dir.build_model``).
- ``data``: corpus, tokenizer and input pipeline.
- ``train``: objective, strategy, optimizer, schedule, checkpoints, monitoring.
- ``export``: SavedModel / TFLite export options.

``configs/*.py`` files start from :func:`base_config` (``base_config("causal_lm")``: the
objective fixes the model section's head keys) and override what differs. The result is
locked: reading or writing a misspelled key fails, naming the valid keys. Config files
written before ``model.backbone`` existed (all model keys flat) are converted on read.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import os
from typing import Any

import ml_collections

from tflm.errors import ConfigError

SECTIONS = ("model", "data", "train", "export")
# Top-level keys beside the sections: ``init_from`` = a model directory to start from.
TOP_LEVEL = {"init_from": ""}
DEFAULT_OBJECTIVE = "causal_lm"

# Keys whose value must be one of a fixed set (train.objective: the registry's names).
CHOICES = {
    "model.backbone.activation": ("gelu_approximate", "gelu"),
    "model.backbone.position_embedding": ("learned", "sinusoidal", "rotary"),
    "model.backbone.pooling": ("auto", "first", "mean", "max", "last"),
    "data.tokenizer": ("bpe", "wordpiece", "sentencepiece"),
    "data.corpus_format": ("auto", "text", "jsonl", "wikitext"),
    "data.document_split": ("blank_line", "file"),
    "data.invalid_utf8": ("replace", "strict"),
    "data.remainder": ("drop", "pad"),
    "train.strategy": ("auto", "default", "mirrored", "multi_worker", "tpu"),
    "train.lr_decay": ("cosine", "linear", "constant"),
    "train.precision": ("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    "train.jit_compile": ("auto", "on", "off"),
    "export.quantize": ("none", "float16", "dynamic_int8", "int8"),
    # Keys only some objectives have (Objective.data) are checked where they exist.
    "data.too_long": ("truncate", "error"),
}

# The backbone's shape arguments (no defaults in its constructor): gpt_mini's.
BACKBONE_SHAPE = {
    "vocabulary_size": 8192,
    "num_layers": 4,
    "hidden_dim": 256,
    "num_heads": 4,
    "intermediate_dim": 1024,
    "max_sequence_length": 128,
}


def backbone_section() -> ml_collections.ConfigDict:
    """Every ``TransformerBackbone`` argument: gpt_mini's shape, the constructor's defaults."""
    from tflm.models.backbone import TransformerBackbone

    values = dict(BACKBONE_SHAPE)
    for name, parameter in inspect.signature(TransformerBackbone.__init__).parameters.items():
        if name not in ("self", "dtype") and parameter.default is not parameter.empty:
            values[name] = parameter.default
    return ml_collections.ConfigDict(values)


def model_section(objective: str = DEFAULT_OBJECTIVE) -> ml_collections.ConfigDict:
    """``{"backbone": backbone_section(), **the task's head arguments}`` of ``objective``.

    Raises:
        ConfigError: ``objective`` is not registered.
    """
    from tflm.models.tasks import get_objective

    section = ml_collections.ConfigDict({"backbone": backbone_section()})
    section.update(get_objective(objective).head_arguments())
    return section


def data_section(objective: str | None = None) -> ml_collections.ConfigDict:
    """Corpus, tokenizer and pipeline defaults, plus ``objective``'s own data keys."""
    section = _common_data_section()
    if objective is not None:
        from tflm.models.tasks import get_objective

        section.update(get_objective(objective).data)
    return section


def _common_data_section() -> ml_collections.ConfigDict:
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
            # Most token ids per file of a token cache (2**26: 256 MB shards); the ids,
            # and so the batches, do not depend on it.
            "cache_shard_tokens": 2**26,
            "tokenizer": "bpe",
            # Most UTF-8 bytes of train documents a tokenizer is trained on: a larger
            # corpus gives a deterministic sample (smallest SHA-1 of each text) of this size.
            "tokenizer_sample_bytes": 2**30,
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
            # Tokens per chunk of a causal LM's fused LM head + cross-entropy (no full
            # logits in the training step: tflm.models.lm_head_loss); 0 = unfused.
            "fused_head_chunk": 256,
            "seed": 0,
            "eval_every": 200,
            # Validation batches per evaluation; 0 = the whole validation split.
            "eval_steps": 20,
            "log_every": 20,
            "checkpoint_every": 100,
            "keep_checkpoints": 3,
            "sample_every": 500,
            "sample_prompts": ("The", "A function"),
            "sample_tokens": 32,
            # Keep the weights of the best validation value of this metric as the model
            # (e.g. "accuracy", "loss"; "" = the last step's). Lower is better for
            # metrics named "loss" or "perplexity", higher for the others.
            "keep_best": "",
            # Layer-wise learning-rate decay: block i of L gets layer_decay**(L - i),
            # the embeddings layer_decay**(L + 1), the head 1 (1.0 = off).
            "layer_decay": 1.0,
            # Train only the head for this many steps first (the backbone is frozen).
            "freeze_backbone_steps": 0,
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


def base_config(objective: str = DEFAULT_OBJECTIVE) -> ml_collections.ConfigDict:
    """All four sections with their defaults for ``objective``, unlocked, to edit.

    Raises:
        ConfigError: ``objective`` is not registered.
    """
    config = ml_collections.ConfigDict(
        {
            "model": model_section(objective),
            "data": data_section(objective),
            "train": train_section(),
            "export": export_section(),
            **TOP_LEVEL,
        }
    )
    config.train.objective = objective
    return config


def suggest_keys(key: str, valid) -> str:
    """' Did you mean X? Valid keys: ...' for an error message about ``key``."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid keys: {', '.join(sorted(valid))}."


def _leaf_paths(node, prefix: str = ""):
    """Dotted paths of every leaf key below ``node`` (a ConfigDict)."""
    for key in node.keys():
        path = f"{prefix}{key}"
        if isinstance(node[key], ml_collections.ConfigDict):
            yield from _leaf_paths(node[key], f"{path}.")
        else:
            yield path


def unknown_key_error(path: list[str], depth: int, reference) -> ConfigError:
    """The ConfigError for ``path[depth]``, unknown below ``path[:depth]`` of ``reference``.

    Names the valid keys there, a close spelling, and the full path when the key exists
    elsewhere (``model.num_layers`` -> ``model.backbone.num_layers``).
    """
    node = reference
    for key in path[:depth]:
        node = node[key]
    valid = node.keys() if isinstance(node, ml_collections.ConfigDict) else []
    key = path[depth]
    elsewhere = [p for p in _leaf_paths(reference) if p.split(".")[-1] == key]
    hint = f" It is '{elsewhere[0]}' now." if elsewhere else ""
    where = ".".join(path[:depth])
    return ConfigError(
        f"Unknown config key '{'.'.join(path)}': config.{where} has no '{key}'.{hint}"
        f"{suggest_keys(key, valid)}"
    )


def _get(config, path: str):
    node = config
    for key in path.split("."):
        node = node[key]
    return node


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks sections, keys and values against the objective's defaults; returns the
    config locked.

    Besides keys and value ranges it checks that the objective can train this model and
    tokenizer: the backbone's ``causal`` (``causal_lm`` needs a causal backbone) and the
    special tokens of ``config.data.tokenizer`` (a ``tokenizer_dir`` is checked when it
    is loaded, before any training).

    Raises:
        ConfigError: naming the key and the valid keys or values.
    """
    from tflm.models.tasks import check_special_tokens, get_objective

    for section in config.keys():
        if section not in SECTIONS and section not in TOP_LEVEL:
            raise ConfigError(f"Unknown config section '{section}'."
                              f"{suggest_keys(section, SECTIONS + tuple(TOP_LEVEL))}")
    for key, default in TOP_LEVEL.items():
        if key not in config:
            with config.unlocked():
                config[key] = default
        if not isinstance(config[key], str):
            raise ConfigError(f"config.{key} must be a string (a model directory or ''), "
                              f"got {config[key]!r}.")
    for section in SECTIONS:
        if section not in config:
            raise ConfigError(f"The config has no '{section}' section; start from "
                              "tflm.config.base_config().")
    objective = get_objective(config.train.get("objective"))
    reference = base_config(objective.name)
    for section in SECTIONS:
        _check_section(config[section], reference, section)
    missing = [k for k in reference.model.backbone.keys() if k not in config.model.backbone]
    if missing:
        raise ConfigError(f"config.model.backbone has no {', '.join(missing)}; start from "
                          "tflm.config.base_config().")
    for path, options in CHOICES.items():
        section, _, key = path.rpartition(".")
        if key not in _get(config, section):
            continue
        value = _get(config, path)
        if value not in options:
            raise ConfigError(
                f"config.{path} = {value!r} is not one of {', '.join(map(repr, options))}."
            )
    b, d, t = config.model.backbone, config.data, config.train
    if b.hidden_dim % b.num_heads:
        raise ConfigError(
            f"config.model.backbone.hidden_dim ({b.hidden_dim}) must be divisible by "
            f"config.model.backbone.num_heads ({b.num_heads})."
        )
    if d.seq_len > b.max_sequence_length:
        raise ConfigError(
            f"config.data.seq_len ({d.seq_len}) exceeds config.model.backbone."
            f"max_sequence_length ({b.max_sequence_length}); lower seq_len or raise "
            "max_sequence_length."
        )
    for key in ("batch_size", "steps", "grad_accum_steps", "eval_every", "log_every",
                "checkpoint_every"):
        if t[key] < 1:
            raise ConfigError(f"config.train.{key} must be >= 1, got {t[key]}.")
    if not 0.0 < d.mask_rate < 1.0:
        raise ConfigError(f"config.data.mask_rate must be in (0, 1), got {d.mask_rate}.")
    if t.eval_steps < 0:
        raise ConfigError(f"config.train.eval_steps must be >= 0 (0 = all), got {t.eval_steps}.")
    if not 0.0 < t.layer_decay <= 1.0:
        raise ConfigError(f"config.train.layer_decay must be in (0, 1], got {t.layer_decay}.")
    if t.fused_head_chunk < 0:
        raise ConfigError("config.train.fused_head_chunk must be >= 0 (0 = off), got "
                          f"{t.fused_head_chunk}.")
    if t.freeze_backbone_steps < 0:
        raise ConfigError("config.train.freeze_backbone_steps must be >= 0, got "
                          f"{t.freeze_backbone_steps}.")
    if objective.causal is not None and bool(b.causal) != objective.causal:
        raise ConfigError(
            f"objective {objective.name!r} ({objective.description}) needs "
            f"config.model.backbone.causal={objective.causal}, but the config sets "
            f"{b.causal}"
            + (": every next-token label would be visible to a bidirectional model. "
               "Set causal=True, or choose a masked-LM objective for a bidirectional "
               "model." if objective.causal else ". Set causal=False.")
        )
    if not d.tokenizer_dir:
        from tflm.text.base import tokenizer_class

        check_special_tokens(objective, tokenizer_class(d.tokenizer).special_tokens,
                             f"config.data.tokenizer={d.tokenizer!r}")
    config.lock()
    return config


def _check_section(section, reference, name: str) -> None:
    """Unknown keys of ``config.<name>`` (and its sub-sections) against ``reference``."""
    valid = reference[name]
    for key in section.keys():
        if key not in valid:
            raise unknown_key_error([name, key], 1, reference)
        if isinstance(valid[key], ml_collections.ConfigDict):
            if not isinstance(section[key], ml_collections.ConfigDict):
                raise ConfigError(f"config.{name}.{key} must be a section with the keys "
                                  f"{', '.join(sorted(valid[key].keys()))}.")
            for sub in section[key].keys():
                if sub not in valid[key]:
                    raise unknown_key_error([name, key, sub], 2, reference)


def run_config_file(path: str) -> ml_collections.ConfigDict:
    """The ``get_config()`` of a ``configs/*.py`` file, not yet validated.

    Raises:
        ConfigError: the file is missing or has no ``get_config``.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"Config file '{path}' does not exist; pass e.g. "
                          "--config=configs/gpt_mini.py.")
    spec = importlib.util.spec_from_file_location("tflm_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file '{path}' defines no get_config() function.")
    return module.get_config()


def load_config(path: str) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of a ``configs/*.py`` file and validates the result.

    Raises:
        ConfigError: the file is missing, has no ``get_config`` or an invalid config.
    """
    return validate(run_config_file(path))


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


def nest_flat_model(model: dict) -> dict:
    """A model section written before ``model.backbone`` existed (the backbone's
    arguments flat beside the head's) in the nested layout; others are returned as is."""
    if "backbone" in model:
        return model
    backbone_keys = set(backbone_section().keys())
    nested = {k: v for k, v in model.items() if k not in backbone_keys}
    nested["backbone"] = {k: v for k, v in model.items() if k in backbone_keys}
    return nested


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
    """Rebuilds a validated config from :func:`config_to_dict` output.

    Lists are turned back into tuples where the default is a tuple, so the result
    equals the original config. A flat model section (written before
    ``model.backbone`` existed) is nested first; keys missing from ``values`` keep their
    defaults.
    """
    values = dict(values)
    if isinstance(values.get("model"), dict):
        values["model"] = nest_flat_model(values["model"])
    config = base_config(values.get("train", {}).get("objective", DEFAULT_OBJECTIVE))
    for section, entries in values.items():
        if section in TOP_LEVEL:
            config[section] = entries
            continue
        if section not in SECTIONS:
            raise ConfigError(f"Unknown config section '{section}'."
                              f"{suggest_keys(section, SECTIONS + tuple(TOP_LEVEL))}")
        _set_values(config, [section], entries)
    return validate(config)


def _set_values(config, path: list[str], entries: dict) -> None:
    """Writes ``entries`` into the section of ``config`` at ``path`` (recursively)."""
    node = _get(config, ".".join(path))
    for key, value in entries.items():
        if key not in node:
            raise unknown_key_error(path + [key], len(path), config)
        if isinstance(node[key], ml_collections.ConfigDict):
            _set_values(config, path + [key], value)
            continue
        if isinstance(node[key], tuple) and isinstance(value, list):
            value = tuple(value)
        node[key] = value


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
